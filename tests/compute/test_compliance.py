"""compute/compliance.py: period totals, projections, surplus and runs, against hand-computed values and the day
kernel."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from cems.compute import compliance as cc
from cems.compute.day import day_figures
from cems.compute.hour import H_STOPPED, MEASURED, MISSING, SUBSTITUTED
from cems.compute.substitution import M_HBHA, M_NONE, M_P90, METHOD_NAMES

M, S, X, Q = MEASURED, SUBSTITUTED, H_STOPPED, MISSING


def test_period_totals_by_hand():
    group = [0, 0, 0, 0, 1, 1, 1, 2]
    status = [M, S, X, S, M, Q, S, M]
    mass = [10.0, 4.0, 0.0, math.nan, 2.5, math.nan, 1.5, 7.0]  # hour 3: a substitute still pending
    method = [M_NONE, M_HBHA, M_NONE, M_HBHA, M_NONE, M_NONE, M_P90, M_NONE]
    final = [True, True, True, False, True, False, True, True]
    t = cc.period_totals(group, 4, status, mass, method, final)
    assert t.mass_t.tolist() == [14.0, 4.0, 7.0, 0.0]
    assert t.substituted_t.tolist() == [4.0, 1.5, 0.0, 0.0]
    assert t.measured_hours.tolist() == [1, 1, 1, 0]
    assert t.substituted_hours.tolist() == [2, 1, 0, 0]
    assert t.stopped_hours.tolist() == [1, 0, 0, 0]
    assert t.stored_missing_hours.tolist() == [0, 1, 0, 0]
    assert t.final_hours.tolist() == [3, 2, 1, 0]
    assert t.method_hours.shape == (4, len(METHOD_NAMES))
    assert t.method_hours[0, M_HBHA] == 2 and t.method_hours[1, M_P90] == 1 and t.method_hours.sum() == 3
    assert t.mass_t.dtype == np.float64 and t.measured_hours.dtype == np.int64


def test_period_totals_of_nothing_and_bad_groups():
    t = cc.period_totals([], 3, [], [], [], [])
    assert t.mass_t.tolist() == [0.0] * 3 and t.method_hours.shape == (3, len(METHOD_NAMES))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        cc.period_totals([0, 2], 2, [M, M], [1.0, 1.0], [0, 0], [True, True])


def test_a_mass_on_a_stopped_or_missing_hour_is_not_emissions():
    t = cc.period_totals([0, 0, 0], 1, [X, Q, M], [5.0, 6.0, 1.0], [0, 0, 0], [True] * 3)
    assert t.mass_t.tolist() == [1.0]


@settings(max_examples=60, deadline=None)
@given(hs.lists(hs.tuples(hs.integers(0, 3), hs.sampled_from([M, S, X, Q]),
                          hs.one_of(hs.just(math.nan), hs.floats(0, 500, allow_nan=False)), hs.booleans()),
                max_size=80))
def test_period_totals_agree_with_the_day_kernel(hours):
    """Groups as contiguous runs (as days are): the same sums and counts as `day_figures`, order of addition kept."""
    hours = sorted(hours, key=lambda h: h[0])
    group = np.array([h[0] for h in hours], np.int64)
    status = np.array([h[1] for h in hours], np.int8)
    mass = np.array([h[2] for h in hours])
    final = np.array([h[3] for h in hours])
    offsets = np.searchsorted(group, np.arange(5))
    days = day_figures(offsets, status, mass, final)
    t = cc.period_totals(group, 4, status, mass, np.where(status == S, M_HBHA, 0), final)
    assert t.mass_t.tolist() == days.mass_t.tolist()
    assert t.measured_hours.tolist() == days.measured_hours.tolist()
    assert t.substituted_hours.tolist() == days.substituted_hours.tolist()
    assert t.stopped_hours.tolist() == days.stopped_hours.tolist()
    assert t.stored_missing_hours.tolist() == days.missing_hours.tolist()
    assert t.method_hours[:, M_HBHA].tolist() == days.substituted_hours.tolist()


def test_missing_hours_count_what_has_no_figure_and_never_go_below_zero():
    assert cc.missing_hours(24, 20, 1, 2) == 1
    assert cc.missing_hours(np.array([744, 10]), np.array([700, 12]), np.array([4, 0]), np.array([30, 0])).tolist() \
        == [10, 0]


def test_run_rate_projection():
    assert cc.run_rate_projection_t(1000.0, 100, 8760) == 87600.0
    assert cc.run_rate_projection_t(0.0, 100, 8760) == 0.0
    assert cc.run_rate_projection_t(1234.5, 8784, 8784) == 1234.5  # the year is over: the projection is the total
    assert math.isnan(cc.run_rate_projection_t(0.0, 0, 8760))


def test_previous_year_projection():
    # 2,000 t so far; last year 9,000 t in all, 1,500 t by the same date: the rest of the year is 5x heavier.
    assert cc.previous_year_projection_t(2000.0, 9000.0, 1500.0) == pytest.approx(12000.0, rel=1e-15)
    assert cc.previous_year_projection_t(2000.0, 9000.0, 9000.0) == 2000.0
    assert math.isnan(cc.previous_year_projection_t(2000.0, 9000.0, 0.0))
    assert math.isnan(cc.previous_year_projection_t(2000.0, 0.0, 0.0))


def test_surplus_and_share():
    assert cc.surplus_t(1.2e6, 1.25e6) == pytest.approx(-5e4)
    assert math.isnan(cc.surplus_t(math.nan, 10.0))
    assert cc.share(25.0, 100.0) == 0.25
    assert math.isnan(cc.share(0.0, 0.0))


def test_runs_of_consecutive_minutes():
    first, last = cc.runs([0, 60, 120, 300, 360, 600], 60)
    assert first.tolist() == [0, 3, 5] and last.tolist() == [2, 4, 5]
    first, last = cc.runs([], 60)
    assert first.size == last.size == 0
    first, last = cc.runs([3600], 60)
    assert first.tolist() == [0] and last.tolist() == [0]
