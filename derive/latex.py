"""Typesetting the handout: latexmk + pdflatex, with no shell escape, in a private folder.

The TeX processes run in their own process group (their own session), so a Ctrl-C at the
terminal reaches derive only; derive then ends the whole group before it exits, and the
private folder is removed whatever happens.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

TEX_HINT = ("no TeX engine found (latexmk + pdflatex); the .pdf was skipped. On Debian/Ubuntu: "
            "apt-get install --no-install-recommends texlive-latex-base texlive-latex-recommended "
            "texlive-pictures latexmk lmodern")
#: The command line; `-no-shell-escape` keeps \write18 from running anything.
LATEXMK = ["latexmk", "-pdf", "-no-shell-escape", "-interaction=nonstopmode", "-halt-on-error", "-quiet"]
TIMEOUT = 300


class LatexError(RuntimeError):
    """pdflatex failed on a handout we generated: a bug of ours (exit 3)."""


def available() -> bool:
    return bool(shutil.which("latexmk") and shutil.which("pdflatex"))


def _end_group(proc: subprocess.Popen) -> None:
    """End latexmk and every pdflatex it started (they share its process group), and wait
    until the whole group is gone: SIGTERM, then SIGKILL for what is left."""
    for sig, grace in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()   # reap the leader, or the group never looks empty
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                proc.wait()
                return
            time.sleep(0.01)
    proc.poll()


def typeset(tex: bytes, name: str) -> bytes | None:
    """The PDF of `tex`; None when no TeX engine is installed."""
    if not available():
        return None
    with tempfile.TemporaryDirectory(prefix="derive-tex-") as tmp:
        source = Path(tmp) / f"{name}.tex"
        source.write_bytes(tex)
        env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "FORCE_SOURCE_DATE": "1"}
        proc = subprocess.Popen([*LATEXMK, f"{name}.tex"], cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.communicate(timeout=TIMEOUT)
        except BaseException:   # Ctrl-C, timeout, anything: no TeX process outlives us
            _end_group(proc)
            raise
        if proc.poll() is None:
            _end_group(proc)
        pdf = source.with_suffix(".pdf")
        if proc.returncode != 0 or not pdf.exists():
            log = source.with_suffix(".log")
            tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
            raise LatexError("pdflatex failed: " + " | ".join(tail))
        return pdf.read_bytes()
