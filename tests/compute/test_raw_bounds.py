"""`params.raw_bounds`: testing the raw value against them is exactly the calibrated validity test."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cems.compute.channels import CHANNELS, FLAG_CODE, INDEX
from cems.compute.fused import minute_figures_columns
from cems.compute.minute import minute_figures
from cems.compute.params import StackParams, StackSpec, raw_bounds
from cems.compute.validity import classify_readings

BIG = np.finfo(np.float64).max
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def calibrated_ok(a, b, lo, hi, required, x):
    with np.errstate(all="ignore"):
        y = np.float64(a) + np.float64(b) * np.float64(x)
    lo, hi = (max(lo, -BIG), min(hi, BIG)) if required else (-BIG, BIG)
    return bool(lo <= y <= hi)


def around(x, k=3):
    out = [x]
    for d in (np.inf, -np.inf):
        y = x
        for _ in range(k):
            with np.errstate(over="ignore"):
                y = np.nextafter(y, d)
            out.append(y)
    return out


@settings(max_examples=400, deadline=None)
@given(a=finite, b=st.one_of(finite, st.sampled_from([0.0, 1.0, -1.0, 1e-12, 3.0])), lo=finite,
       width=st.floats(0, 1e6), required=st.booleans(), x=finite)
def test_raw_bounds_equal_the_calibrated_test(a, b, lo, width, required, x):
    hi = lo + width
    rl, rh = (v[0, 0] for v in raw_bounds(np.array([[a]]), np.array([[b]]), np.array([[lo]]), np.array([[hi]]),
                                             np.array([[required]])))
    edges = [x, 0.0, BIG, -BIG]
    if b != 0:
        edges += [(lo - a) / b, (hi - a) / b]
    edges += [v for v in (rl, rh) if np.isfinite(v)]
    for e in edges:
        for v in around(np.float64(e)) + [np.nan, np.inf, -np.inf]:
            with np.errstate(all="ignore"):
                got = bool((v >= rl) & (v <= rh))
            assert got == calibrated_ok(a, b, lo, hi, required, v), (v, rl, rh)


@pytest.mark.parametrize("a, b", [(0.0, 1.0), (0.1, 1.01), (-0.5, 1.1), (3.0, -0.7), (0.3, 1 / 3)])
def test_fused_counts_a_reading_exactly_on_the_calibrated_range_edge(a, b):
    """A raw value whose calibrated value lands on the range's edge (or one ulp past it) is judged as the
    two-pass path judges it, to the reading."""
    spec = StackSpec(calibration=(("co2_pct", a, b),))
    p = StackParams.build([spec], {c.name: c.default_range for c in CHANNELS})
    j = INDEX["co2_pct"]
    xs = []
    for edge in (p.lo[0, j], p.hi[0, j]):
        xs += around((edge - a) / b, 4)
    n = len(xs)
    cols = np.tile(np.array([1.3e6, np.nan, 12.5, 6.0, 50.0, 101.0, 10.0])[:, None], (1, n))
    cols[j] = xs
    flags = np.full(n, FLAG_CODE["N"], np.int8)
    offsets = np.arange(n + 1, dtype=np.int64)  # one reading per group: each judged alone
    gs = np.zeros(n, np.int64)
    c = classify_readings(cols.T, flags, gs, p.cal_a, p.cal_b, p.lo, p.hi, p.required)
    want = minute_figures(offsets, gs, c.validity, c.values, p)
    got = minute_figures_columns(cols, flags, offsets, gs, p)
    assert 0 < got.n_valid.sum() < n  # the edges were hit from both sides
    assert np.array_equal(got.n_valid, want.n_valid)
    assert np.array_equal(got.status, want.status)
