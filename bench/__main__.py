"""Benchmarks: `make bench` (or `python -m bench`). Prints readings/s and ratios; asserts nothing.

kernels: the minute path (calibration + validity + minute figures) for many stacks at once, numba vs a
vectorised plain-NumPy implementation (np.add.reduceat) vs pandas groupby. The end-to-end benchmark
through mosquitto and InfluxDB is issue 10.
"""

import argparse
import os
import platform
import time

import numpy as np

from cems.compute.channels import CHANNELS, FLAG_CODE, N_CHANNELS
from cems.compute.minute import minute_figures
from cems.compute.params import StackParams, StackSpec
from cems.compute.validity import classify_readings

DEFAULT_RANGES = {c.name: c.default_range for c in CHANNELS}


def make_stream(stacks: int, minutes: int, per_minute: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    n = stacks * minutes * per_minute
    values = np.empty((n, N_CHANNELS))
    values[:, 0] = rng.normal(1.4e6, 2e4, n)
    values[:, 1] = np.nan
    values[:, 2] = rng.normal(13.0, 0.1, n)
    values[:, 3] = rng.normal(6.0, 0.1, n)
    values[:, 4] = rng.normal(50.0, 0.5, n)
    values[:, 5] = rng.normal(101.0, 0.05, n)
    values[:, 6] = rng.normal(10.0, 0.1, n)
    flags = np.where(rng.random(n) < 0.02, FLAG_CODE["D"], FLAG_CODE["N"]).astype(np.int8)
    stack_idx = np.repeat(np.arange(stacks), minutes * per_minute)
    offsets = np.arange(0, n + 1, per_minute, dtype=np.int64)
    group_stack = np.repeat(np.arange(stacks), minutes)
    params = StackParams.build([StackSpec() for _ in range(stacks)], DEFAULT_RANGES)
    return values, flags, stack_idx, offsets, group_stack, params


def run_numba(values, flags, stack_idx, offsets, group_stack, p):
    c = classify_readings(values, flags, stack_idx, p.cal_a, p.cal_b, p.lo, p.hi, p.required)
    return minute_figures(offsets, group_stack, c.validity, c.values, p).mass_kg


def run_numpy(values, flags, stack_idx, offsets, group_stack, p):
    y = p.cal_a[stack_idx] + p.cal_b[stack_idx] * values
    with np.errstate(invalid="ignore"):
        bad = (~np.isfinite(y) | (y < p.lo[stack_idx]) | (y > p.hi[stack_idx])) & p.required[stack_idx]
    valid = ~bad.any(axis=1) & ((flags == FLAG_CODE["N"]) | (flags == FLAG_CODE["T"]))
    starts = offsets[:-1]
    nv = np.add.reduceat(valid.astype(np.int64), starts)
    yv = np.where(valid[:, None], np.nan_to_num(y), 0.0)
    means = np.add.reduceat(yv, starts, axis=0) / np.maximum(nv, 1)[:, None]
    t0 = p.t0_k[group_stack]
    qsn = means[:, 0] * t0 / (t0 + means[:, 4]) * means[:, 5] / 101.325 * (1 - means[:, 6] / 100)
    cq = means[:, 2] * 1e4 * p.density_kg_m3[group_stack]
    mass = cq * qsn * 1e-6 / 60
    return np.where(nv >= p.min_samples[group_stack], mass, np.nan)


def run_pandas(values, flags, stack_idx, offsets, group_stack, p):
    import pandas as pd

    y = p.cal_a[stack_idx] + p.cal_b[stack_idx] * values
    with np.errstate(invalid="ignore"):
        bad = (~np.isfinite(y) | (y < p.lo[stack_idx]) | (y > p.hi[stack_idx])) & p.required[stack_idx]
    valid = ~bad.any(axis=1) & ((flags == FLAG_CODE["N"]) | (flags == FLAG_CODE["T"]))
    group = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    df = pd.DataFrame(y, columns=[c.name for c in CHANNELS])
    df["g"] = group
    g = df[valid].groupby("g")
    m = g.mean()
    nv = g.size()
    qsn = m.flow_m3h * 273.0 / (273.0 + m.temp_c) * m.press_kpa / 101.325 * (1 - m.h2o_pct / 100)
    mass = m.co2_pct * 1e4 * (44.01 / 22.4) * qsn * 1e-6 / 60
    return mass.where(nv >= 12).reindex(range(len(offsets) - 1)).to_numpy()


def timeit(fn, args, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stacks", type=int, default=1000)
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--per-minute", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    args = make_stream(a.stacks, a.minutes, a.per_minute)
    n = len(args[0])
    ref = run_numba(*args)  # also compiles
    np.testing.assert_allclose(run_numpy(*args), ref, rtol=1e-9)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, NumPy {np.__version__}")
    print(f"minute path: {a.stacks} stacks x {a.minutes} minutes x {a.per_minute} readings = {n:,} readings, "
          f"{int(np.sum(args[1] != 0))} flagged D")
    rows = [("numba", run_numba), ("numpy", run_numpy)]
    try:
        np.testing.assert_allclose(run_pandas(*args), ref, rtol=1e-9)
        rows.append(("pandas", run_pandas))
    except ImportError:
        print("pandas not installed: pip install pandas for its row")
    times = {name: timeit(fn, args, a.repeat) for name, fn in rows}
    print(f"{'way':8} {'seconds':>9} {'readings/s':>14} {'numba is x faster':>18}")
    for name, t in times.items():
        print(f"{name:8} {t:9.4f} {n / t:14,.0f} {t / times['numba']:18.2f}")


if __name__ == "__main__":
    main()
