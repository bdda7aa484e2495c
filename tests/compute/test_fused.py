"""The fused minute path equals the two-pass kernels (and so the reference) on random streams."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cems.compute.channels import CHANNELS, FLAGS, N_CHANNELS
from cems.compute.fused import minute_figures_columns
from cems.compute.minute import minute_figures
from cems.compute.params import StackParams, StackSpec, regime_constants
from cems.compute.validity import classify_readings

RANGES = {c.name: c.default_range for c in CHANNELS}
SPECS = [
    StackSpec(),
    StackSpec(area_m2=25.0, kv=0.95, calibration=(("velocity_ms", 0.1, 1.02),)),
    StackSpec(co2_basis="wet", flow_basis="std_wet", minute_min_samples=5, ranges=(("o2_pct", 2.0, 9.0),)),
    StackSpec(flow_basis="std_dry", regime="us_part75", **regime_constants("us_part75")),
    StackSpec(regime="eu", calibration=(("co2_pct", -0.5, 1.1), ("temp_c", 1.0, 1.0)), **regime_constants("eu")),
]
PARAMS = StackParams.build(SPECS, RANGES)
BASE = np.array([1.3e6, 15.0, 12.5, 6.0, 50.0, 101.0, 10.0])


def same(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert np.array_equal(np.isnan(a), np.isnan(b))
    m = ~np.isnan(a)
    np.testing.assert_allclose(a[m], b[m], rtol=1e-12, atol=0)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), groups=st.integers(0, 40), bad=st.floats(0, 0.6))
def test_fused_equals_two_pass(seed, groups, bad):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 70, groups)
    n = int(sizes.sum())
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    group_stack = rng.integers(0, len(SPECS), groups)
    stack_idx = np.repeat(group_stack, sizes)
    values = BASE * (1 + rng.normal(0, 0.05, (n, N_CHANNELS)))
    hole = rng.random((n, N_CHANNELS)) < bad / 3
    values[hole] = np.nan
    values[rng.random((n, N_CHANNELS)) < bad / 10] = np.inf
    values[rng.random((n, N_CHANNELS)) < bad / 10] = -1.0  # below every range
    flags = rng.choice(np.arange(len(FLAGS) + 1), n, p=None if bad > 0.3 else
                       [0.86, 0.03, 0.01, 0.01, 0.03, 0.02, 0.02, 0.01, 0.01]).astype(np.int8)
    c = classify_readings(values, flags, stack_idx, PARAMS.cal_a, PARAMS.cal_b, PARAMS.lo, PARAMS.hi, PARAMS.required)
    want = minute_figures(offsets, group_stack, c.validity, c.values, PARAMS)
    got = minute_figures_columns(values.T, flags, offsets, group_stack, PARAMS)
    for name in ("n", "n_valid", "n_stopped", "status"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    for name in ("qs_m3_h", "qsn_m3_h", "co2_dry_pct", "co2_mg_m3", "rate_kg_h", "mass_kg", "conc", "flow"):
        same(getattr(got, name), getattr(want, name))
    same(got.means, want.means)
