"""Day figures (day.py): DESIGN §4 "Day", the worked example's 24 hours, kernel against reference.py."""

import datetime as dt
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cems.compute import constants as K
from cems.compute import reference as ref
from cems.compute.day import day_figures, local_dates
from cems.compute.hour import H_STOPPED, MEASURED, MISSING, SUBSTITUTED, hour_figures
from cems.compute.validity import VALID
from tests.compute.conftest import (
    assert_close,
    assert_matches_printed,
    assert_same,
    build_params,
    channel_values_from_example,
    flag_codes,
    load_examples,
    rows,
    run_minutes,
    spec_from_example,
)

M, S, X, Q = MEASURED, SUBSTITUTED, H_STOPPED, MISSING
FIELDS = ("mass_t", "measured_hours", "substituted_hours", "stopped_hours", "missing_hours", "valid", "final")


def days(groups, valid_measured_hours=None):
    """Day figures for groups given as lists of (status, mass_t[, final]) hours."""
    status, mass, final, sizes = [], [], [], []
    for hours in groups:
        for h in hours:
            status.append(h[0])
            mass.append(h[1])
            final.append(h[2] if len(h) > 2 else True)
        sizes.append(len(hours))
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    args = (offsets, np.array(status, np.int8), np.array(mass, float), np.array(final, bool))
    return day_figures(*args) if valid_measured_hours is None else day_figures(*args, valid_measured_hours)


def one_day(hours, **kw):
    d = days([hours], **kw)
    return {name: getattr(d, name)[0].item() for name in FIELDS}


# ---- worked example ----------------------------------------------------------------------------------

def test_china_worked_example_day_of_24_valid_hours():
    ex = load_examples()["cn-hour-velocity"]
    params = build_params(spec_from_example(ex["inputs"]))
    vals = rows(12, **channel_values_from_example(ex["inputs"]))
    # 24 hours x 60 minutes x 12 identical valid readings, all the way through the kernels.
    _, m, _, _ = run_minutes(params, [(0, vals, flag_codes("N" * 12))] * (24 * 60))
    assert np.all(m.status == VALID)
    h = hour_figures(np.arange(0, 24 * 60 + 1, 60), np.zeros(24, np.int64), m.status, m.co2_mg_m3, m.qsn_m3_h,
                     np.array([75]))
    assert np.all(h.status == MEASURED)
    for mass in h.mass_t:
        assert_matches_printed(float(mass), ex["outputs"]["hour_mass_t"], "hour_mass_t")
    d = day_figures(np.array([0, 24]), h.status, h.mass_t, np.ones(24, bool))
    assert_matches_printed(float(d.mass_t[0]), ex["outputs"]["day_mass_t_24_valid_hours"], "day_mass_t_24_valid_hours")
    assert (d.measured_hours[0], d.substituted_hours[0], d.stopped_hours[0], d.missing_hours[0]) == (24, 0, 0, 0)
    assert d.valid[0] and d.final[0]


def test_no_stray_1e6_factor_of_hj_eq34():
    d = one_day([(M, 289.677319)] * 24)
    assert math.isclose(d["mass_t"], 24 * 289.677319, rel_tol=1e-12)
    assert d["mass_t"] > 6000.0


# ---- validity ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("measured", "substituted", "stopped", "valid"), [
    (20, 4, 0, True), (19, 5, 0, False), (24, 0, 0, True), (0, 24, 0, False),
    (10, 2, 12, True), (9, 3, 12, False),  # pro rata: 10 of 12 operating hours
    (5, 1, 18, True), (4, 2, 18, False),  # 5 of 6
    (1, 0, 23, True),
])
def test_day_valid_with_20_of_24_measured_pro_rata(measured, substituted, stopped, valid):
    hours = [(M, 10.0)] * measured + [(S, 9.0)] * substituted + [(X, 0.0)] * stopped
    d = one_day(hours)
    assert (d["measured_hours"], d["substituted_hours"], d["stopped_hours"]) == (measured, substituted, stopped)
    assert d["valid"] is valid
    assert K.DAY_VALID_MEASURED_HOURS == 20


def test_order_of_hours_does_not_matter_for_validity():
    hours = [(S, 1.0)] * 4 + [(M, 1.0)] * 20
    assert one_day(hours)["valid"] is True
    assert one_day(hours[::-1])["valid"] is True


def test_valid_measured_hours_parameter():
    hours = [(M, 1.0)] * 18 + [(S, 1.0)] * 6
    assert one_day(hours)["valid"] is False
    assert one_day(hours, valid_measured_hours=18)["valid"] is True
    assert one_day(hours, valid_measured_hours=19)["valid"] is False


# ---- mass --------------------------------------------------------------------------------------------

def test_day_mass_sums_measured_and_substituted_hours():
    d = one_day([(M, 100.0), (M, 150.5), (S, 120.25), (X, 0.0)])
    assert d["mass_t"] == 370.75
    assert (d["measured_hours"], d["substituted_hours"], d["stopped_hours"], d["missing_hours"]) == (2, 1, 1, 0)


def test_day_mass_excludes_nan_masses():
    # A substituted hour whose substitute is not known yet carries NaN: it adds nothing (not NaN).
    d = one_day([(M, 100.0), (S, math.nan), (M, 50.0)])
    assert d["mass_t"] == 150.0
    assert d["substituted_hours"] == 1
    d = one_day([(S, math.nan)] * 3)
    assert d["mass_t"] == 0.0


def test_day_mass_ignores_stopped_and_missing_hours_masses():
    d = one_day([(M, 100.0), (X, 7.0), (Q, 9.0), (Q, math.nan)])
    assert d["mass_t"] == 100.0
    assert (d["stopped_hours"], d["missing_hours"]) == (1, 2)


def test_final_only_when_every_hour_is_final():
    assert one_day([(M, 1.0, True), (M, 1.0, True)])["final"] is True
    assert one_day([(M, 1.0, True), (M, 1.0, False)])["final"] is False


def test_empty_day_and_no_days():
    d = one_day([])
    assert d["mass_t"] == 0.0 and d["measured_hours"] == 0 and d["final"] is True
    none = days([])
    assert none.mass_t.shape == (0,)


def test_several_days_in_one_call():
    d = days([[(M, 1.0)] * 24, [(M, 2.0)] * 19 + [(S, 2.0)] * 5, [(X, 0.0)] * 24])
    assert_same(d.mass_t, np.array([24.0, 48.0, 0.0]))
    assert_same(d.valid[:2], np.array([True, False]))
    assert_same(d.stopped_hours, np.array([0, 0, 24], np.int64))


# ---- local calendar day ------------------------------------------------------------------------------

def test_local_dates_in_the_plant_timezone():
    utc = dt.UTC
    t = [dt.datetime(2024, 1, 1, 15, 59, 59, tzinfo=utc).timestamp(),
         dt.datetime(2024, 1, 1, 16, 0, 0, tzinfo=utc).timestamp(),
         dt.datetime(2024, 12, 31, 16, 0, 0, tzinfo=utc).timestamp()]
    assert local_dates(np.array(t), "Asia/Shanghai") == [dt.date(2024, 1, 1), dt.date(2024, 1, 2),
                                                          dt.date(2025, 1, 1)]
    assert local_dates(np.array(t), "UTC") == [dt.date(2024, 1, 1), dt.date(2024, 1, 1), dt.date(2024, 12, 31)]


# ---- kernel == reference (hypothesis) ----------------------------------------------------------------

hour_st = st.tuples(
    st.sampled_from([M, M, M, S, X, Q]),
    st.one_of(st.floats(0.0, 400.0), st.just(math.nan)),
    st.booleans(),
)
day_st = st.one_of(st.lists(hour_st, min_size=0, max_size=25), st.lists(hour_st, min_size=24, max_size=24))


@settings(max_examples=200, deadline=None)
@given(groups=st.lists(day_st, min_size=0, max_size=6), vmh=st.one_of(st.just(20), st.integers(0, 24)))
def test_day_kernel_equals_reference(groups, vmh):
    d = days(groups, vmh)
    for g, hours in enumerate(groups):
        status = np.array([h[0] for h in hours], np.int8)
        mass = np.array([h[1] for h in hours], float)
        final = np.array([h[2] for h in hours], bool)
        r = ref.day_figure(status, mass, final, vmh)
        assert (d.measured_hours[g], d.substituted_hours[g], d.stopped_hours[g], d.missing_hours[g]) == \
            (r["measured"], r["substituted"], r["stopped"], r["missing"]), f"group {g}"
        assert bool(d.valid[g]) == bool(r["valid"]), f"group {g} valid"
        assert bool(d.final[g]) == r["final"], f"group {g} final"
        assert_close(d.mass_t[g], r["mass"], what=f"group {g} mass")
        assert np.isfinite(d.mass_t[g])
        # The rule in integers: 24 * measured >= vmh * (measured + substituted).
        a, b = int((status == M).sum()), int((status == S).sum())
        assert bool(d.valid[g]) == (24 * a >= vmh * (a + b))


@settings(max_examples=100, deadline=None)
@given(groups=st.lists(day_st, min_size=1, max_size=4), seed=st.integers(0, 2**32 - 1))
def test_day_is_independent_of_hour_order_and_duplication(groups, seed):
    rng = np.random.default_rng(seed)
    shuffled = [[hours[i] for i in rng.permutation(len(hours))] for hours in groups]
    a, b = days(groups), days(shuffled)
    for name in FIELDS[1:]:
        assert_same(getattr(b, name), getattr(a, name), name)
    assert_close(b.mass_t, a.mass_t, what="mass_t")
    c = days(groups + groups)
    k = len(groups)
    for name in FIELDS:
        assert_same(getattr(c, name)[:k], getattr(a, name), name)
        assert_same(getattr(c, name)[k:], getattr(a, name), name)
