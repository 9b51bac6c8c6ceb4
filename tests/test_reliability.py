"""Issue 12: injection through the file name, ownership, all-or-nothing atomic writes, file
modes, the environment (exit 2), Ctrl-C (exit 130, no child left), and -no-shell-escape."""
from __future__ import annotations

import errno
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from derive import build, files, latex, spec
from derive.cli import main

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "generated"
HAS_TEX = latex.available()
SMALL = """name = "x"
title = "A small spec"
[model]
input_size = 2
hidden_sizes = [2]
output_size = 2
output_activation = "softmax"
[loss]
kind = "cross_entropy"
[bptt]
steps = 2
"""
#: one file name that tries each language's way out of its header
HOSTILE = ('x"""if __import__("os").system("touch PWNED") else"""'
           '--><img src=y onerror=alert(1)>\n\\documentclass{article}\\write18{touch PWNED}')


def _one_error(err: str) -> str:
    assert err.startswith("derive: error: ") and err.count("\n") == 1, err
    return err


def _clean(folder: Path) -> list[str]:
    """Every file name below `folder` that looks like one of our temporary files."""
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- injection


@pytest.mark.parametrize("fmt", ["py", "md", "tex"] + (["pdf"] if HAS_TEX else []))
def test_a_hostile_file_name_reaches_no_output(fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / f"{HOSTILE}.toml"
    source.write_text(SMALL)
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    assert main(["build", str(source), "--out", str(out), "--format", fmt, "-q"]) == 0
    data = (out / f"x.{fmt}").read_bytes()
    for fragment in ("__import__", "PWNED", "onerror", "documentclass{article}", '"""if', "-->", "<img"):
        if fmt == "tex" and fragment == "documentclass{article}":
            assert data.count(b"\\documentclass") == 1
            continue
        if fmt == "md" and fragment == "-->":   # the header's own end: counted below
            continue
        assert fragment.encode() not in data, fragment
    if fmt != "pdf":   # the header names the spec by its validated name, readably
        line = {"py": "Regenerate with: {}", "md": "     Regenerate with: {} -->", "tex": "% Regenerate with: {}"}[fmt]
        assert line.format("derive build x.toml --out FOLDER-OF-THIS-FILE") in data.decode().splitlines()
    if fmt == "py":   # importing the module runs nothing
        module_spec = importlib.util.spec_from_file_location("_hostile_x", out / "x.py")
        module_spec.loader.exec_module(importlib.util.module_from_spec(module_spec))
    if fmt == "md":   # the header comment is the only comment, and it closes where it should
        text = data.decode()
        assert text.count("<!--") == 1 and text.count("-->") == 1 and text.index("-->") < text.index("\n# ")
    assert not (tmp_path / "PWNED").exists() and not (out / "PWNED").exists()


@pytest.mark.parametrize("command", ['x"""', "a\nb", "a\\b", "--><b>", "%", "x" * 201])
def test_the_api_refuses_a_command_that_could_leave_its_header(command: str, tmp_path: Path) -> None:
    with pytest.raises(spec.SpecError, match="command"):
        build.build(spec.preset("stacked_mse"), tmp_path, formats=["py"], command=command)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("char", list(spec.TITLE_FORBIDDEN) + ["\n", "\x7f", "é"])
def test_characters_refused_in_titles(char: str) -> None:
    base = spec.preset("stacked_mse")
    with pytest.raises(spec.SpecError, match="title"):
        spec.Spec(name="t", model=base.model, title=f"a {char} b")


def test_the_forbidden_title_characters_cover_every_language() -> None:
    # TeX, Markdown and a Python docstring each have a way out through one of these
    for char in "\\{}$%#&^_~\"'`<>|*[]":
        assert char in spec.TITLE_FORBIDDEN, char


# --------------------------------------------------------------------------- ownership


def _build_py_md(out: Path, *extra: str) -> int:
    return main(["build", "--preset", "stacked_mse", "--out", str(out), "--format", "py,md,tex", "-q", *extra])


@pytest.mark.parametrize("fmt", ["py", "md", "tex"])
def test_the_marker_text_elsewhere_does_not_make_a_file_ours(fmt: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / f"stacked_mse.{fmt}"
    foreign = f"my notes\nI keep the words {files.first_line(fmt)} here\n"
    target.write_text(foreign)
    assert _build_py_md(tmp_path) == 2
    assert "--force" in _one_error(capsys.readouterr().err)
    assert target.read_text() == foreign
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


@pytest.mark.parametrize("fmt", ["py", "md", "tex"])
def test_a_file_whose_first_line_is_our_marker_is_ours(fmt: str, tmp_path: Path) -> None:
    (tmp_path / f"stacked_mse.{fmt}").write_text(files.first_line(fmt) + "\nold\n")
    assert _build_py_md(tmp_path) == 0
    assert (tmp_path / f"stacked_mse.{fmt}").read_text().startswith(files.first_line(fmt) + "\n")
    # the marker in the wrong comment syntax is not ours
    other = {"py": "md", "md": "tex", "tex": "py"}[fmt]
    (tmp_path / f"stacked_mse.{fmt}").write_text(files.first_line(other) + "\n")
    assert _build_py_md(tmp_path) == 2


def test_generated_files_are_recognised_as_ours() -> None:
    for path in GENERATED.rglob("*.*"):
        assert files.ours(path), path


def test_a_pdf_is_ours_only_with_the_marker_in_its_info_dictionary(tmp_path: Path) -> None:
    golden = (GENERATED / "stacked_mse" / "stacked_mse.pdf").read_bytes()
    info = golden.index(b"/Creator (derive: generated file)")
    other = golden[:info] + b"/Creator (someone else's file!!!)" + golden[info + len(b"/Creator (derive: generated file)"):]
    assert len(other) == len(golden)
    target = tmp_path / "mine.pdf"
    target.write_bytes(other + b"\n% /Creator (derive: generated file)\n")   # the text, outside the info dict
    assert not files.ours(target)
    target.write_bytes(golden)
    assert files.ours(target)
    target.write_bytes(b"derive: generated file")
    assert not files.ours(target)


def test_a_symlink_or_folder_is_never_ours(tmp_path: Path) -> None:
    (tmp_path / "real.py").write_text(files.first_line("py") + "\n")
    (tmp_path / "link.py").symlink_to(tmp_path / "real.py")
    (tmp_path / "dir.py").mkdir()
    assert files.ours(tmp_path / "real.py")
    assert not files.ours(tmp_path / "link.py") and not files.ours(tmp_path / "dir.py")


def test_a_file_created_while_rendering_is_not_overwritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "stacked_mse.md"
    real = build.render

    def slow_render(*args, **kwargs):
        target.write_text("written by someone else during the build\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "render", slow_render)
    assert _build_py_md(tmp_path) == 2
    _one_error(capsys.readouterr().err)
    assert target.read_text() == "written by someone else during the build\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stacked_mse.md"]


def test_ownership_is_checked_again_right_before_each_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "stacked_mse.py"
    real_replace = os.replace

    def replace(src, dst):   # the file appears after staging, between two renames
        if Path(dst).name == "stacked_mse.tex":
            target.write_text("someone else's\n")
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    assert _build_py_md(tmp_path) == 2
    _one_error(capsys.readouterr().err)
    assert target.read_text() == "someone else's\n"
    assert _clean(tmp_path) == []


def test_ownership_is_checked_again_once_everything_is_staged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "stacked_mse.py"
    real = os.fsync

    def fsync(fd):   # the file appears while the outputs are being staged
        if not target.exists():
            target.write_text("someone else's\n")
        return real(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    assert _build_py_md(tmp_path) == 2
    _one_error(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stacked_mse.py"], "no other output was renamed"
    assert target.read_text() == "someone else's\n"


def test_build_all_is_all_or_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    foreign = tmp_path / "truncated_elman" / "truncated_elman.py"
    foreign.parent.mkdir()
    foreign.write_text("print('mine')\n")
    assert main(["build", "--all", "--out", str(tmp_path), "--format", "md,py"]) == 2
    assert str(foreign) in _one_error(capsys.readouterr().err)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == \
        ["truncated_elman", "truncated_elman/truncated_elman.py"]


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    calls = []
    real = os.fsync

    def fsync(fd):   # the disk fills up at the third file
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    out = tmp_path / "new" / "folder"
    assert main(["build", "--all", "--out", str(out), "--format", "md,py"]) == 2
    assert "no space left" in _one_error(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == [], "no file, no temporary file, no folder"


# --------------------------------------------------------------------------- atomic, modes


def test_writes_are_atomic_and_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _build_py_md(tmp_path) == 0
    before = {p.name: (p.read_bytes(), p.stat().st_ino) for p in tmp_path.iterdir()}
    seen = []
    real = os.fsync

    def fsync(fd):   # when a new file's bytes are made durable, every target still holds the old ones
        seen.append({p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name in before})
        return real(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    assert _build_py_md(tmp_path, "--steps", "4") == 0
    assert len(seen) >= 3 and all(s == {k: v for k, (v, _) in before.items()} for s in seen[:3])
    after = {p.name: (p.read_bytes(), p.stat().st_ino) for p in tmp_path.iterdir()}
    assert after.keys() == before.keys()
    for name in before:   # a new inode: the file was renamed into place, not rewritten
        assert after[name][1] != before[name][1] and after[name][0] != before[name][0]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002, 0o077])
def test_files_are_created_with_the_users_umask(umask: int, tmp_path: Path) -> None:
    old = os.umask(umask)
    try:
        assert _build_py_md(tmp_path) == 0
        assert main(["init", "fresh", "--out", str(tmp_path)]) == 0
    finally:
        os.umask(old)
    for path in tmp_path.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


# --------------------------------------------------------------------------- environment


def test_an_unwritable_out_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    for out in (str(blocker), str(blocker / "sub"), "/proc/derive-cannot-be-made"):
        assert _build_py_md(Path(out)) == 2
        _one_error(capsys.readouterr().err)


def test_a_refused_folder_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture) -> None:
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    assert _build_py_md(tmp_path / "out") == 2
    assert "Permission denied" in _one_error(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["presets"], ["show", "elman_softmax"],
                                  ["build", "--preset", "stacked_mse", "--format", "md", "--force"]])
def test_a_full_or_closed_stdout_is_exit_2(argv: list[str], tmp_path: Path) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "derive", *argv], stdout=full, stderr=subprocess.PIPE,
                                text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "standard output" in _one_error(result.stderr)
    proc = subprocess.Popen([sys.executable, "-m", "derive", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    proc.stdout.close()   # the reader went away
    err = proc.stderr.read()
    assert proc.wait() == 2
    assert "Broken pipe" in _one_error(err)


def test_a_stdout_closed_from_the_start_is_exit_2_before_anything_is_written(tmp_path: Path) -> None:
    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(f"{sys.executable} -m derive {' '.join(argv)} >&-", shell=True, cwd=tmp_path,
                              capture_output=False, stderr=subprocess.PIPE, text=True)

    for argv in (["presets"], ["show", "stacked_mse"], ["build", "--preset", "stacked_mse", "--format", "py"]):
        result = run(*argv)
        assert result.returncode == 2
        assert _one_error(result.stderr) == "derive: error: cannot write to standard output (it is closed)\n"
    assert list(tmp_path.iterdir()) == []
    result = run("build", "-q", "--preset", "stacked_mse", "--format", "py")   # -q needs no stdout
    assert result.returncode == 0 and result.stderr == ""
    assert [p.name for p in tmp_path.iterdir()] == ["stacked_mse.py"]


# --------------------------------------------------------------------------- Ctrl-C, TeX


def _our_processes(tmp: Path) -> list[str]:
    """Processes still working inside `tmp` (their folder or their command line)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(str(tmp)) and ("tex" in cmd or "derive" in cmd):
            found.append(f"{proc.name} {cmd}")
    return found


def _before_derive_ran(returncode: int, stderr: str) -> bool:
    """The interruption came before derive's first statement: Python had not yet installed
    its own SIGINT handler (killed by the signal, nothing printed), was running `site`, or
    was importing `derive/__main__.py` up to the line that installs derive's handler."""
    if returncode == -signal.SIGINT and stderr == "":
        return True
    if "<frozen site>" in stderr:
        return True
    main = Path(__file__).resolve().parents[1] / "derive" / "__main__.py"
    first = next(i for i, line in enumerate(main.read_text().splitlines(), 1) if line.startswith("signal.signal("))
    frames = re.findall(r'File "([^"]+)", line (\d+)', stderr)
    ours = [(f, int(n)) for f, n in frames if "/derive/" in f]
    return bool(frames) and all(f.endswith("__main__.py") and n <= first for f, n in ours)


@pytest.mark.parametrize("delay", [0.1, 0.2, 0.3, 0.6, 1.2, 2.5])
def test_ctrl_c_at_any_moment_is_one_line_and_130(delay: float, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    out = tmp_path / "out"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "derive", "build", "--preset", "stacked_mse", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    if _before_derive_ran(proc.returncode, stderr):   # so loaded a machine that Python was still starting
        return
    assert "Traceback" not in stderr
    if proc.returncode == 0:   # it finished first
        return
    assert proc.returncode == 130, stderr
    assert stderr == "derive: error: interrupted\n"
    time.sleep(0.3)
    assert _our_processes(tmp) == []
    assert list(tmp.iterdir()) == [], "no temporary folder is left"
    assert not out.exists() or _clean(out) == []


@pytest.mark.skipif(not HAS_TEX, reason="TeX Live is not installed")
def test_ctrl_c_during_latex_ends_latexmk_and_pdflatex(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "derive", "build", "--preset", "elman_softmax", "--out",
                             str(tmp_path / "out"), "--format", "pdf"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not any("tex" in p for p in _our_processes(tmp)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("tex" in p for p in _our_processes(tmp)), "TeX never started"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and stderr == "derive: error: interrupted\n"
    assert _our_processes(tmp) == []
    assert list(tmp.iterdir()) == []
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not HAS_TEX, reason="TeX Live is not installed")
def test_an_interruption_ends_every_tex_process_and_removes_the_folder(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    started = []

    class Interrupted(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

        def communicate(self, *args, **kwargs):   # Ctrl-C once pdflatex is running
            deadline = time.monotonic() + 60
            while not any("pdflatex" in p for p in _our_processes(tmp_path)) and time.monotonic() < deadline:
                time.sleep(0.02)
            raise KeyboardInterrupt

    monkeypatch.setattr(latex.subprocess, "Popen", Interrupted)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(latex.tempfile, "tempdir", None)
    forever = rb"\documentclass{article}\begin{document}x\loop\iftrue\repeat\end{document}"
    try:
        with pytest.raises(KeyboardInterrupt):
            latex.typeset(forever, "forever")
        (proc,) = started
        assert _our_processes(tmp_path) == [], "latexmk and pdflatex are ended before typeset returns"
        assert proc.returncode is not None
        assert list(tmp_path.iterdir()) == []
    finally:   # should a mutant leave them running, do not leave them to the machine
        for line in _our_processes(tmp_path):
            os.kill(int(line.split()[0]), signal.SIGKILL)


@pytest.mark.skipif(not HAS_TEX, reason="TeX Live is not installed")
def test_tex_runs_in_its_own_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    groups = []

    class Spy(subprocess.Popen):
        def communicate(self, *args, **kwargs):
            groups.append(os.getpgid(self.pid))
            return super().communicate(*args, **kwargs)

    monkeypatch.setattr(latex.subprocess, "Popen", Spy)
    latex.typeset(rb"\documentclass{article}\begin{document}x\end{document}", "group")
    assert len(groups) == 1 and groups[0] != os.getpgrp()


@pytest.mark.skipif(not HAS_TEX, reason="TeX Live is not installed")
def test_latex_runs_without_shell_escape(tmp_path: Path) -> None:
    flag = tmp_path / "PWNED"
    tex = (r"\documentclass{article}\begin{document}\immediate\write18{touch " + str(flag) + r"}"
           r"hello\end{document}").encode()
    pdf = latex.typeset(tex, "probe")
    assert pdf.startswith(b"%PDF")
    assert not flag.exists()


@pytest.mark.skipif(not HAS_TEX, reason="TeX Live is not installed")
def test_a_failing_latex_leaves_no_process_and_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(latex.tempfile, "tempdir", None)
    with pytest.raises(latex.LatexError):
        latex.typeset(rb"\documentclass{article}\begin{document}\undefinedcommand\end{document}", "bad")
    assert list(tmp_path.iterdir()) == []


def test_no_tex_engine_is_a_note_and_the_rest_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(latex.shutil, "which", lambda name: None)
    assert main(["build", "--all", "--out", str(tmp_path), "--format", "md,pdf"]) == 0
    err = capsys.readouterr().err
    assert err.count("derive: note: no TeX engine") == 1 and err.count("\n") == 1
    assert len(list(tmp_path.rglob("*.md"))) == len(spec.preset_names()) and not list(tmp_path.rglob("*.pdf"))



def test_ctrl_c_during_the_renames_waits_for_the_last_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    real = os.replace
    calls = []

    def replace(src, dst):   # Ctrl-C arrives while the first file is renamed
        calls.append(dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    assert _build_py_md(tmp_path) == 130
    assert capsys.readouterr().err == "derive: error: interrupted\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stacked_mse.md", "stacked_mse.py", "stacked_mse.tex"]
    assert all(files.ours(p) for p in tmp_path.iterdir())
