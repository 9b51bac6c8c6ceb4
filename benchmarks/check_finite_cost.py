"""The cost of the generated module's `check_finite=True` (the default), in one run.

Builds a loop-style module for (B, T, D, H) = (32, 50, 128, 128) (no output layer, MSE on
the hidden states: the least arithmetic per input value, so the largest relative cost),
then times `loss_and_grads` and `forward` + `backward` with check_finite=True and False,
interleaved round by round, and prints the median ratio, and the time of the scans alone
(fastest run) as a share of the call: that share is the cost, free of the machine's noise. Target (issue 12): under 2 % extra.

    python benchmarks/check_finite_cost.py [--repeat 40]
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from derive import build, spec

B, T, D, H = 32, 50, 128, 128


def module(folder: Path, output: int):
    s = spec.Spec(name="bench_finite", model=spec.Model(input_size=D, hidden_sizes=(H,), output_size=output,
                                                         output_activation="softmax" if output else "identity"),
                  loss=spec.Loss(kind="cross_entropy" if output else "mse"), bptt=spec.BPTT(steps=3))
    (path,) = build.build(s, folder, formats=["py"], command="benchmark")
    module_spec = importlib.util.spec_from_file_location(f"bench_finite_{output}", path)
    mod = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(mod)
    return mod


def best_of(fn, inner: int = 3) -> float:
    """The fastest of `inner` calls."""
    times = []
    for _ in range(inner):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(mod, output: int, repeat: int) -> list[tuple[str, float, float]]:
    rng = np.random.default_rng(0)
    params = mod.init_params(seed=0)
    xs = rng.standard_normal((T, B, D))
    targets = rng.integers(0, output, size=(T, B)) if output else rng.standard_normal((T, B, H))
    hs, cache = mod.forward(params, xs)
    dhs = rng.standard_normal(hs.shape)
    calls = {
        "loss_and_grads": lambda cf: mod.loss_and_grads(params, xs, targets, check_finite=cf),
        "forward + backward": lambda cf: mod.backward(dhs, mod.forward(params, xs, check_finite=cf)[1],
                                                      check_finite=cf),
    }
    def scans() -> None:   # exactly the scans check_finite=True adds to loss_and_grads
        for key, value in params.items():
            mod._check_finite(key, value)
        mod._check_finite("xs", xs)
        if not output:
            mod._check_finite("targets", targets)

    scan = min(best_of(scans) for _ in range(repeat))
    rows = []
    for name, call in calls.items():
        call(True), call(False)    # warm up
        on, off, ratios = [], [], []
        for _ in range(repeat):     # interleaved, so drifts of the shared machine hit both alike
            a, b = best_of(lambda: call(True)), best_of(lambda: call(False))
            on.append(a), off.append(b), ratios.append(a / b)
        rows.append((name, statistics.median(on), statistics.median(off), statistics.median(ratios), scan))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=40)
    args = parser.parse_args()
    print(f"check_finite cost at (B, T, D, H) = ({B}, {T}, {D}, {H}): medians over interleaved rounds "
          "of best-of-3 timings; extra = median of the per-round ratios\n")
    print("| model | call | check_finite=True | check_finite=False | extra | the scans alone |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for output, label in ((0, "MSE on h (no output layer)"), (H, f"softmax + CE, {H} classes")):
            mod = module(Path(tmp) / str(output), output)
            for name, on, off, ratio, scan in measure(mod, output, args.repeat):
                print(f"| {label} | {name} | {on * 1e3:.2f} ms | {off * 1e3:.2f} ms | {100 * (ratio - 1):+.2f} % "
                      f"| {scan * 1e3:.3f} ms = {100 * scan / off:.2f} % |")


if __name__ == "__main__":
    main()
