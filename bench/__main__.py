"""Kernel benchmark: `make bench` (or `python -m bench`). Prints readings/s and ratios; asserts nothing.

The minute path (calibration + flags + range checks + minute figures) on N readings across S stacks in
arrival order: one 60-reading batch (a minute at 1 Hz) per stack, stacks interleaved minute by minute.
Rows: the machine's memory-bandwidth ceiling (a numba loop that only sums the same eight input columns),
the fused numba kernel, the two-pass numba kernels, a vectorised plain-NumPy way, a pandas groupby way;
then the hour kernel on the resulting minutes. All run on one core. The end-to-end benchmark through
mosquitto and InfluxDB is issue 10.
"""

import argparse
import os
import platform
import time

import numba
import numpy as np

from cems.compute.channels import CHANNELS, FLAG_CODE, INDEX, N_CHANNELS
from cems.compute.fused import minute_figures_columns
from cems.compute.hour import hour_figures
from cems.compute.minute import minute_figures
from cems.compute.params import StackParams, StackSpec
from cems.compute.validity import classify_readings

DEFAULT_RANGES = {c.name: c.default_range for c in CHANNELS}


def make_stream(stacks: int, minutes: int, per_minute: int = 60, seed: int = 1):
    """Columnar readings in arrival order, with faults (D), calibration (C) and stops (F)."""
    rng = np.random.default_rng(seed)
    n = stacks * minutes * per_minute
    cols = np.empty((N_CHANNELS, n))
    cols[INDEX["flow_m3h"]] = rng.normal(1.4e6, 2e4, n)
    cols[INDEX["velocity_ms"]] = np.nan
    cols[INDEX["co2_pct"]] = rng.normal(13.0, 0.1, n)
    cols[INDEX["o2_pct"]] = rng.normal(6.0, 0.1, n)
    cols[INDEX["temp_c"]] = rng.normal(50.0, 0.5, n)
    cols[INDEX["press_kpa"]] = rng.normal(101.0, 0.05, n)
    cols[INDEX["h2o_pct"]] = rng.normal(10.0, 0.1, n)
    cols[INDEX["co2_pct"], rng.random(n) < 0.001] = 40.0  # out of range
    u = rng.random(n)
    flags = np.full(n, FLAG_CODE["N"], np.int8)
    flags[u < 0.03] = FLAG_CODE["D"]
    flags[(u >= 0.03) & (u < 0.04)] = FLAG_CODE["C"]
    flags[(u >= 0.04) & (u < 0.05)] = FLAG_CODE["F"]
    # group g = minute * stacks + stack: each stack's minute is one contiguous batch
    group_stack = np.tile(np.arange(stacks), minutes)
    offsets = np.arange(0, n + 1, per_minute, dtype=np.int64)
    stack_idx = np.repeat(group_stack, per_minute)
    specs = [StackSpec(calibration=(("co2_pct", 0.1, 1.01), ("flow_m3h", 0.0, 0.98))) for _ in range(stacks)]
    return cols, flags, stack_idx, offsets, group_stack, StackParams.build(specs, DEFAULT_RANGES)


@numba.njit(nogil=True)
def _sum_eight(cols, flags, out):
    s = 0.0
    for i in range(flags.shape[0]):
        s += cols[0, i] + cols[1, i] + cols[2, i] + cols[3, i] + cols[4, i] + cols[5, i] + cols[6, i] + flags[i]
    out[0] = s


def run_ceiling(cols, flags, stack_idx, offsets, group_stack, p):
    out = np.empty(1)
    _sum_eight(cols, flags, out)
    return out


def run_fused(cols, flags, stack_idx, offsets, group_stack, p):
    return minute_figures_columns(cols, flags, offsets, group_stack, p).mass_kg


def run_two_pass(cols, flags, stack_idx, offsets, group_stack, p):
    c = classify_readings(cols.T, flags, stack_idx, p.cal_a, p.cal_b, p.lo, p.hi, p.required)
    return minute_figures(offsets, group_stack, c.validity, c.values, p).mass_kg


def _valid_calibrated(cols, flags, stack_idx, p):
    y = p.cal_a[stack_idx] + p.cal_b[stack_idx] * cols.T
    with np.errstate(invalid="ignore"):
        bad = (~np.isfinite(y) | (y < p.lo[stack_idx]) | (y > p.hi[stack_idx])) & p.required[stack_idx]
    valid = ~bad.any(axis=1) & ((flags == FLAG_CODE["N"]) | (flags == FLAG_CODE["T"]))
    return y, valid


def _minute_mass(means, nv, ns, n, group_stack, p):
    t0 = p.t0_k[group_stack]
    f, c, t, pr, w = (means[:, INDEX[k]] for k in ("flow_m3h", "co2_pct", "temp_c", "press_kpa", "h2o_pct"))
    qsn = f * t0 / (t0 + t) * pr / 101.325 * (1 - w / 100)
    mass = c * 1e4 * p.density_kg_m3[group_stack] * qsn * 1e-6 / 60
    mass = np.where(nv >= p.min_samples[group_stack], mass, np.nan)
    return np.where(2 * ns > n, 0.0, mass)


def run_numpy(cols, flags, stack_idx, offsets, group_stack, p):
    y, valid = _valid_calibrated(cols, flags, stack_idx, p)
    starts = offsets[:-1]
    nv = np.add.reduceat(valid.astype(np.int64), starts)
    ns = np.add.reduceat((flags == FLAG_CODE["F"]).astype(np.int64), starts)
    yv = np.where(valid[:, None], np.nan_to_num(y), 0.0)
    means = np.add.reduceat(yv, starts, axis=0) / np.maximum(nv, 1)[:, None]
    return _minute_mass(means, nv, ns, np.diff(offsets), group_stack, p)


def run_pandas(cols, flags, stack_idx, offsets, group_stack, p):
    import pandas as pd

    y, valid = _valid_calibrated(cols, flags, stack_idx, p)
    groups = len(offsets) - 1
    df = pd.DataFrame(y, columns=[c.name for c in CHANNELS])
    df["g"] = np.repeat(np.arange(groups), np.diff(offsets))
    means = df[valid].groupby("g").mean().reindex(range(groups)).to_numpy()
    nv = pd.Series(valid).groupby(df["g"]).sum().to_numpy()
    ns = pd.Series(flags == FLAG_CODE["F"]).groupby(df["g"]).sum().to_numpy()
    return _minute_mass(means, nv, ns, np.diff(offsets), group_stack, p)


def timeit(fn, args, repeat: int) -> float:
    fn(*args)  # compile / warm up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stacks", type=int, default=1000)
    ap.add_argument("--readings", type=float, default=10e6, help="total readings (default 10 million)")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    minutes = max(1, round(a.readings / a.stacks / 60))
    args = make_stream(a.stacks, minutes)
    n = args[1].shape[0]
    ref = run_two_pass(*args)
    for fn in (run_fused, run_numpy):
        np.testing.assert_allclose(fn(*args), ref, rtol=1e-12)
    rows = [("ceiling: sum 8 columns", run_ceiling), ("numba fused", run_fused), ("numba two-pass", run_two_pass),
            ("numpy", run_numpy)]
    try:
        np.testing.assert_allclose(run_pandas(*args), ref, rtol=1e-12)
        rows.append(("pandas groupby", run_pandas))
    except ImportError:
        print("(pandas not installed: `pip install pandas` adds its row)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"NumPy {np.__version__}, numba {numba.__version__}; one core")
    print(f"minute path: {n:,} readings, {a.stacks} stacks x {minutes} minutes x 60, arrival order, "
          f"calibration, flags (3 % D, 1 % C, 1 % F) and range checks on")
    times = {name: timeit(fn, args, a.repeat) for name, fn in rows}
    fused = times["numba fused"]
    print(f"{'way':24} {'seconds':>8} {'readings/s':>15} {'fused is x faster':>18}")
    for name, t in times.items():
        print(f"{name:24} {t:8.4f} {n / t:15,.0f} {t / fused:18.2f}")
    mf = minute_figures_columns(*[args[i] for i in (0, 1, 3, 4)], args[5])
    groups = len(args[3]) - 1
    hours = max(1, minutes // 60)
    per_hour = min(60, minutes)
    # hour groups: each stack's minutes of one hour (arrival order interleaves stacks, so gather them)
    order = np.argsort(np.tile(np.arange(a.stacks), minutes), kind="stable")[: a.stacks * hours * per_hour]
    offs = np.arange(0, a.stacks * hours * per_hour + 1, per_hour, dtype=np.int64)
    gs = np.repeat(np.arange(a.stacks), hours)
    hargs = (offs, gs, mf.status[order], mf.conc[order], mf.flow[order], args[5].hour_min_valid_pct)
    th = timeit(lambda *x: hour_figures(*x), hargs, a.repeat)
    print(f"hour kernel: {groups:,} minutes -> {len(gs):,} hours in {th:.4f} s: {len(order) / th:,.0f} minutes/s "
          f"({len(order) * 60 / th:,.0f} readings/s equivalent)")


if __name__ == "__main__":
    main()
