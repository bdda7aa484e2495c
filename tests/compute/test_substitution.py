"""Hour status resolution and substitution (substitution.py): DESIGN §4, worked example, kernel against reference.py.

Hand-computed cases run on the kernel and on the reference (the `impl` fixture). Measured histories for the Part 75
tiers use `ramp`: the k-th measured hour from the end has concentration k and flow 10 k + 10, so the last 720
measured hours hold the concentrations 0..719 (flows 10..7,200; with exactly 720 measured hours the flow lookback
holds the same hours) and the hour before a gap has (0, 10).
Percentiles of 0..719 with linear interpolation: P90 at rank 0.90 x 719 = 647.1, P95 at 0.95 x 719 = 683.05.
Tests commented KERNEL DEFECT state what the kernel gets wrong against DESIGN §4 / its own docstring.
"""

import math
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cems.compute import reference as ref
from cems.compute.hour import H_STOPPED, MEASURED, MISSING, SUBSTITUTED
from cems.compute.substitution import (
    EMPTY,
    M_HBHA,
    M_MAX,
    M_MPV,
    M_MRR,
    M_NONE,
    M_P90,
    M_P95,
    POLICY_EU_MRR,
    POLICY_PART75,
    substitute,
)
from tests.compute.conftest import RTOL, assert_close, assert_matches_printed, assert_same, load_examples

NAN = math.nan
P90_RAMP, P95_RAMP = 647.1, 683.05  # of the concentrations 0..719 (see the module docstring)


def ramp_values(n):
    """Values of `Hours.ramp(n)`: concentrations n-1 .. 0, flows 10 x that + 10."""
    k = np.arange(n - 1, -1, -1, dtype=float)
    return k, 10.0 * k + 10.0


class Out(NamedTuple):
    status: np.ndarray
    op: np.ndarray
    conc: np.ndarray
    flow: np.ndarray
    method: np.ndarray
    provisional: np.ndarray


class Hours:
    """Builder of one stack's hourly input, oldest first."""

    def __init__(self):
        self.base, self.conc, self.flow, self.op, self.period = [], [], [], [], []

    def _add(self, kind, conc, flow, op, period):
        self.base += [kind] * len(conc)
        self.conc += list(conc)
        self.flow += list(flow)
        self.op += [op] * len(conc)
        self.period += [period] * len(conc)
        return self

    def m(self, conc, flow, op=60, period=0):
        """Measured hours with the given values (scalars or sequences of equal length)."""
        conc, flow = np.atleast_1d(np.asarray(conc, float)), np.atleast_1d(np.asarray(flow, float))
        assert len(conc) == len(flow)
        return self._add(MEASURED, conc, flow, op, period)

    def ramp(self, n, period=0):
        """n measured hours; the k-th from the end has concentration k and flow 10 k + 10 (k = 0 .. n-1)."""
        return self.m(*ramp_values(n), period=period)

    def s(self, n=1, op=60, period=0, conc=NAN, flow=NAN):
        """Operating hours with too few valid minutes (base `SUBSTITUTED`), carrying their own valid means."""
        return self._add(SUBSTITUTED, [conc] * n, [flow] * n, op, period)

    def x(self, n=1, period=0):
        return self._add(H_STOPPED, [NAN] * n, [NAN] * n, 0, period)

    def e(self, n=1, period=0):
        return self._add(EMPTY, [NAN] * n, [NAN] * n, 0, period)

    def __len__(self):
        return len(self.base)

    def arrays(self):
        return (np.array(self.base, np.int8), np.array(self.conc, float), np.array(self.flow, float),
                np.array(self.op, np.int64), np.array(self.period, np.int64))


@pytest.fixture(params=["kernel", "reference"])
def impl(request):
    fn = substitute if request.param == "kernel" else ref.substitute

    def run(hours: Hours, policy=POLICY_PART75, mpv_conc=NAN, mpv_flow=NAN) -> Out:
        out = Out(*fn(*hours.arrays(), policy, mpv_conc, mpv_flow))
        n = len(hours)
        assert [len(a) for a in out] == [n] * 6
        return out

    return run


def assert_hours(out: Out, sl, status, op, conc, flow, method, provisional):
    """Every hour in out[sl] has these values (conc/flow to RTOL; NaN must be NaN)."""
    idx = np.arange(len(out.status))[sl]
    assert len(idx) > 0
    assert np.all(out.status[idx] == status), out.status[idx]
    assert np.all(out.op[idx] == op), out.op[idx]
    for name, want in (("conc", conc), ("flow", flow)):
        got = getattr(out, name)[idx]
        if math.isnan(want):
            assert np.all(np.isnan(got)), (name, got)
        else:
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=0, err_msg=name)
    assert np.all(out.method[idx] == method), out.method[idx]
    assert np.all(out.provisional[idx] == provisional), out.provisional[idx]


# ---- status resolution of empty hours ----------------------------------------------------------------

def test_measured_and_stopped_hours_pass_through(impl):
    h = Hours().m([10.0, 12.0], [100.0, 120.0]).m(13.0, 130.0, op=30).x(2).m(11.0, 110.0, op=45)
    out = impl(h)
    assert_same(out.status, np.array([MEASURED, MEASURED, MEASURED, H_STOPPED, H_STOPPED, MEASURED], np.int8))
    assert_same(out.op, np.array([60, 60, 30, 0, 0, 45], np.int64))
    assert_close(out.conc, [10.0, 12.0, 13.0, NAN, NAN, 11.0])
    assert_close(out.flow, [100.0, 120.0, 130.0, NAN, NAN, 110.0])
    assert_same(out.method, np.zeros(6, np.int8))
    assert_same(out.provisional, np.zeros(6, bool))


def test_empty_hours_inside_operation_are_substituted_with_60_operating_minutes(impl):
    out = impl(Hours().m(10.0, 100.0, op=40).e(3).m(20.0, 300.0, op=50))
    assert_hours(out, slice(1, 4), SUBSTITUTED, 60, 15.0, 200.0, M_HBHA, False)
    assert_same(out.op, np.array([40, 60, 60, 60, 50], np.int64))
    # Next to an operating hour that is itself substituted, with its own operating minutes kept.
    out = impl(Hours().m(10.0, 100.0).s(op=35).e(2).m(20.0, 300.0))
    assert_same(out.op, np.array([60, 35, 60, 60, 60], np.int64))
    assert_hours(out, slice(1, 4), SUBSTITUTED, [35, 60, 60], 15.0, 200.0, M_HBHA, False)


def test_empty_hours_between_stopped_hours_are_stopped(impl):
    out = impl(Hours().m(10.0, 100.0).x().e(4).x().m(20.0, 300.0))
    assert_hours(out, slice(1, 7), H_STOPPED, 0, NAN, NAN, M_NONE, False)
    # No hour before: the empty hours take the side of the hour after (the kernel's choice).
    out = impl(Hours().e(2).x().m(20.0, 300.0))
    assert_hours(out, slice(0, 3), H_STOPPED, 0, NAN, NAN, M_NONE, False)
    out = impl(Hours().e(2).m(20.0, 300.0))
    assert_hours(out, slice(0, 2), SUBSTITUTED, 60, 20.0, 300.0, M_HBHA, False)


@pytest.mark.parametrize("order", ["stopped-operating", "operating-stopped"])
def test_empty_hour_between_a_stopped_and_an_operating_hour_is_substituted(impl, order):
    # DESIGN §4 is silent; the kernel takes the conservative side.
    if order == "stopped-operating":
        out = impl(Hours().m(10.0, 100.0).x().e(2).m(20.0, 300.0))
        assert_hours(out, slice(2, 4), SUBSTITUTED, 60, 15.0, 200.0, M_HBHA, False)
    else:
        out = impl(Hours().m(10.0, 100.0).e(2).x().m(20.0, 300.0))
        assert_hours(out, slice(1, 3), SUBSTITUTED, 60, 15.0, 200.0, M_HBHA, False)
        assert_hours(out, slice(3, 4), H_STOPPED, 0, NAN, NAN, M_NONE, False)


@pytest.mark.parametrize("before", ["measured", "stopped", "substituted", "nothing"])
def test_empty_hours_after_the_last_data_are_missing_and_provisional(impl, before):
    h = {"measured": Hours().m(10.0, 100.0), "stopped": Hours().x(), "substituted": Hours().m(10.0, 100.0).s(),
         "nothing": Hours()}[before]
    first = len(h)
    out = impl(h.e(3))
    assert_hours(out, slice(first, first + 3), MISSING, 0, NAN, NAN, M_NONE, True)


def test_empty_series(impl):
    out = impl(Hours())
    assert all(len(a) == 0 for a in out)


def test_missing_hours_turn_into_substituted_or_stopped_once_data_arrives(impl):
    h = Hours().m(10.0, 100.0).e(2)
    assert_hours(impl(h), slice(1, 3), MISSING, 0, NAN, NAN, M_NONE, True)
    assert_hours(impl(h.m(30.0, 500.0)), slice(1, 3), SUBSTITUTED, 60, 20.0, 300.0, M_HBHA, False)
    h = Hours().x().e(2)
    assert_hours(impl(h), slice(1, 3), MISSING, 0, NAN, NAN, M_NONE, True)
    assert_hours(impl(h.x()), slice(1, 3), H_STOPPED, 0, NAN, NAN, M_NONE, False)


# ---- the initial procedure and the hour before / hour after --------------------------------------------

@pytest.mark.parametrize("measured_before", [10, 719])
def test_initial_procedure_hbha_for_conc_and_flow_separately(impl, measured_before):
    # Fewer than 720 measured hours: (HB + HA) / 2 for any gap length, concentration and flow each on its own.
    h = Hours().ramp(measured_before - 1).m(40.0, 1000.0).s(30, op=50, conc=999.0, flow=9999.0).e(70)
    out = impl(h.m(20.0, 3000.0))
    gap = slice(measured_before, measured_before + 100)
    assert_hours(out, gap, SUBSTITUTED, [50] * 30 + [60] * 70, 30.0, 2000.0, M_HBHA, False)


def test_open_gap_uses_the_hour_before_until_the_hour_after_arrives(impl):
    h = Hours().m([7.0, 10.0], [70.0, 100.0]).s(3)
    out = impl(h)
    assert_hours(out, slice(2, 5), SUBSTITUTED, 60, 10.0, 100.0, M_HBHA, True)
    out = impl(h.m(20.0, 300.0))
    assert_hours(out, slice(2, 5), SUBSTITUTED, 60, 15.0, 200.0, M_HBHA, False)
    assert_hours(out, slice(5, 6), MEASURED, 60, 20.0, 300.0, M_NONE, False)


def test_gap_without_an_hour_before(impl):
    # The hour after alone (the kernel's choice); nothing at all while the gap is open.
    h = Hours().s(2)
    assert_hours(impl(h), slice(0, 2), SUBSTITUTED, 60, NAN, NAN, M_HBHA, True)
    assert_hours(impl(h.m(20.0, 300.0)), slice(0, 2), SUBSTITUTED, 60, 20.0, 300.0, M_HBHA, False)


def test_stopped_hours_are_skipped_to_find_the_hour_after(impl):
    h = Hours().m(10.0, 100.0).s(2).x(3)
    assert_hours(impl(h), slice(1, 3), SUBSTITUTED, 60, 10.0, 100.0, M_HBHA, True)
    assert_hours(impl(Hours().m(10.0, 100.0).s(2).x(3).e(2)), slice(1, 3), SUBSTITUTED, 60, 10.0, 100.0, M_HBHA,
                 True)
    out = impl(h.m(30.0, 500.0))
    assert_hours(out, slice(1, 3), SUBSTITUTED, 60, 20.0, 300.0, M_HBHA, False)
    assert_hours(out, slice(3, 6), H_STOPPED, 0, NAN, NAN, M_NONE, False)


def test_gap_stop_gap_measured_the_first_gap_ends_when_the_stack_measures_again(impl):
    # KERNEL DEFECT (substitution.py lines 155-158): after the first gap the kernel skips stopped hours only, meets
    # the second gap, sets ended = False and leaves the first gap on the hour before and provisional for good,
    # although its hour after (hour 4) is there and the second gap already uses it. DESIGN §4/§5: the hour before
    # stands in only until the gap has ended; provisional only while a substitution waits for its hour-after.
    out = impl(Hours().m(10.0, 100.0).s().x().s().m(20.0, 300.0))
    assert_hours(out, slice(3, 4), SUBSTITUTED, 60, 15.0, 200.0, M_HBHA, False)
    assert_hours(out, slice(1, 2), SUBSTITUTED, 60, 15.0, 200.0, M_HBHA, False)


def test_own_valid_means_of_a_substituted_hour_are_not_used(impl):
    out = impl(Hours().m(10.0, 100.0).s(conc=1e9, flow=1e9).m(20.0, 300.0))
    assert_hours(out, slice(1, 2), SUBSTITUTED, 60, 15.0, 200.0, M_HBHA, False)


# ---- Part 75 tiers -----------------------------------------------------------------------------------

def pma_history(substituted: int, extra_stopped: int = 0, measured: int = 720, split: int = 360) -> Hours:
    """`measured` hours of ramp with an earlier gap of `substituted` hours (and stopped hours) after the first
    `split`: PMA = measured / (measured + substituted)."""
    c, f = ramp_values(measured)
    return Hours().m(c[:split], f[:split]).s(substituted).x(extra_stopped).m(c[split:], f[split:])


def gap_after(h: Hours, length: int, ha=(2.0, 30.0), closed=True):
    """Append a gap of `length` hours (and its hour after); return (hours, slice of the gap)."""
    start = len(h)
    h.s(length)
    if closed:
        h.m(*ha)
    return h, slice(start, start + length)


def test_ramp_percentiles_are_as_stated():
    c = np.arange(720.0)
    assert math.isclose(np.percentile(c, 90), P90_RAMP, rel_tol=1e-12)
    assert math.isclose(np.percentile(c, 95), P95_RAMP, rel_tol=1e-12)


@pytest.mark.parametrize(("length", "method", "conc", "flow"), [
    (1, M_HBHA, 1.0, 20.0),
    (24, M_HBHA, 1.0, 20.0),
    (25, M_P90, P90_RAMP, 10 * P90_RAMP + 10),
    (200, M_P90, P90_RAMP, 10 * P90_RAMP + 10),
])
def test_pma_at_least_95_pct_hbha_up_to_24_hours_then_p90(impl, length, method, conc, flow):
    h, gap = gap_after(Hours().ramp(720), length)  # PMA 100 %
    assert_hours(impl(h), gap, SUBSTITUTED, 60, conc, flow, method, False)


def test_p90_tier_takes_the_greater_of_hbha_and_the_percentile_per_channel(impl):
    # Concentration: HB 0, HA 2,000 -> HBHA 1,000 > P90 647.1. Flow: HB 10, HA 30 -> 20 < P90 6,481.
    h, gap = gap_after(Hours().ramp(720), 25, ha=(2000.0, 30.0))
    assert_hours(impl(h), gap, SUBSTITUTED, 60, 1000.0, 10 * P90_RAMP + 10, M_P90, False)
    # Flow: HA 20,000 -> HBHA 10,005 > 6,481; concentration: HA 2 -> 1 < 647.1.
    h, gap = gap_after(Hours().ramp(720), 25, ha=(2.0, 20000.0))
    assert_hours(impl(h), gap, SUBSTITUTED, 60, P90_RAMP, 10005.0, M_P90, False)


def test_open_gap_tier_follows_the_length_so_far(impl):
    # Open: the hour before (0, 10) stands in for HBHA and the value is provisional.
    h, gap = gap_after(Hours().ramp(720), 24, closed=False)
    assert_hours(impl(h), gap, SUBSTITUTED, 60, 0.0, 10.0, M_HBHA, True)
    h, gap = gap_after(Hours().ramp(720), 25, closed=False)
    assert_hours(impl(h), gap, SUBSTITUTED, 60, P90_RAMP, 10 * P90_RAMP + 10, M_P90, True)
    h = Hours().ramp(720)
    h.conc[-1] = 5000.0  # HB above the percentile: concentrations 1..719, 5,000 with P90 648.1
    h, gap = gap_after(h, 25, closed=False)
    assert_hours(impl(h), gap, SUBSTITUTED, 60, 5000.0, 10 * P90_RAMP + 10, M_P90, True)


@pytest.mark.parametrize(("length", "method", "conc", "flow"), [
    (8, M_HBHA, 1.0, 20.0),
    (9, M_P95, P95_RAMP, 10 * P95_RAMP + 10),
    (24, M_P95, P95_RAMP, 10 * P95_RAMP + 10),
    (25, M_P95, P95_RAMP, 10 * P95_RAMP + 10),
])
def test_pma_90_to_95_pct_hbha_up_to_8_hours_then_p95(impl, length, method, conc, flow):
    h, gap = gap_after(pma_history(60), length)  # PMA 720 / 780 = 92.3 %
    assert_hours(impl(h), gap, SUBSTITUTED, 60, conc, flow, method, False)


def test_p95_tier_takes_the_greater_of_hbha_and_the_percentile(impl):
    h, gap = gap_after(pma_history(60), 9, ha=(3000.0, 30.0))  # conc HBHA 1,500 > 683.05; flow 20 < 6,840.5
    assert_hours(impl(h), gap, SUBSTITUTED, 60, 1500.0, 10 * P95_RAMP + 10, M_P95, False)


@pytest.mark.parametrize(("substituted", "method_9h"), [
    (37, M_HBHA),  # 720 / 757 = 95.1 %
    (38, M_P95),  # 720 / 758 = 94.99 %
    (80, M_P95),  # 720 / 800 = 90 % exactly
    (81, M_MAX),  # 720 / 801 = 89.9 %
])
def test_pma_boundaries_95_and_90(impl, substituted, method_9h):
    h, gap = gap_after(pma_history(substituted), 9)
    assert impl(h).method[gap].tolist() == [method_9h] * 9


def test_pma_exactly_95_pct_is_the_upper_tier(impl):
    h, gap = gap_after(pma_history(40, measured=760, split=380), 9)  # 760 of 800 operating hours: 95 % exactly
    assert_hours(impl(h), gap, SUBSTITUTED, 60, 1.0, 20.0, M_HBHA, False)


@pytest.mark.parametrize("length", [1, 8, 30])
def test_pma_80_to_90_pct_lookback_maximum(impl, length):
    h, gap = gap_after(pma_history(120), length)  # 720 / 840 = 85.7 %
    assert_hours(impl(h), gap, SUBSTITUTED, 60, 719.0, 7200.0, M_MAX, False)
    h, gap = gap_after(pma_history(180), length)  # 80 % exactly: still the maximum, even with an MPV configured
    assert_hours(impl(h, mpv_conc=9000.0, mpv_flow=90000.0), gap, SUBSTITUTED, 60, 719.0, 7200.0, M_MAX, False)


@pytest.mark.parametrize(("mpv", "method", "conc", "flow"), [
    ((9000.0, 90000.0), M_MPV, 9000.0, 90000.0),
    ((NAN, NAN), M_MAX, 719.0, 7200.0),
    # One value only: the lookback maximum for both (the kernel's choice).
    ((9000.0, NAN), M_MAX, 719.0, 7200.0),
    ((NAN, 90000.0), M_MAX, 719.0, 7200.0),
])
def test_pma_below_80_pct_maximum_potential_value(impl, mpv, method, conc, flow):
    h, gap = gap_after(pma_history(181), 3)  # 720 / 901 = 79.9 %
    assert_hours(impl(h, mpv_conc=mpv[0], mpv_flow=mpv[1]), gap, SUBSTITUTED, 60, conc, flow, method, False)
    h, gap = gap_after(pma_history(181), 3, closed=False)
    assert_hours(impl(h, mpv_conc=mpv[0], mpv_flow=mpv[1]), gap, SUBSTITUTED, 60, conc, flow, method, True)


def test_stopped_hours_do_not_count_in_pma(impl):
    h, gap = gap_after(pma_history(60, extra_stopped=1000), 9)  # still 720 / 780
    assert_hours(impl(h), gap, SUBSTITUTED, 60, P95_RAMP, 10 * P95_RAMP + 10, M_P95, False)


@pytest.mark.parametrize(("measured_after", "method"), [
    (8322, M_HBHA),  # the last 8,760 operating hours: 438 substituted, 8,322 measured = 95 % exactly
    (8321, M_P95),  # 439 substituted: 94.99 %
    (8760, M_HBHA),  # the old gap has left the window
])
def test_pma_over_the_last_8760_operating_hours(impl, measured_after, method):
    # Over the whole history the PMA would be below 95 % in every case (e.g. 9,480 / 10,080 = 94.05 %).
    # KERNEL DEFECT under NUMBA_DISABLE_JIT=1 only (substitution.py lines 133 and 193): once the 8,760-hour window is
    # full, `pma_sum -= pma_ring[pma_pos]` mixes the Python int with an int8 element; NumPy 2 casts the int to int8
    # and raises OverflowError (8,160 out of bounds). Jitted, numba types pma_sum as int64 and the result is right.
    h, gap = gap_after(pma_history(600, measured=720 + measured_after, split=720), 9)
    # Flow lookback: the last 2,160 measured hours, flows 10 x (0..2,159) + 10: P95 = 10 x 0.95 x 2,159 + 10.
    conc, flow = (1.0, 20.0) if method == M_HBHA else (P95_RAMP, 20520.5)
    assert_hours(impl(h), gap, SUBSTITUTED, 60, conc, flow, method, False)


def test_lookbacks_720_hours_for_concentration_2160_for_flow(impl):
    # 2,160 measured hours: the older 1,440 with concentration 500 and flows 10,000 .. 11,439, the newest 720 with
    # concentrations 719 .. 0 and flow 1,000. HB (0, 1,000), HA (2, 1,000): HBHA (1, 1,000).
    # Concentration P90 over the last 720: 647.1 (over 2,160 it would be 503.1: rank 1,943.1 of 0..499, 500 x 1,441,
    # 501..719). Flow P90 over the last 2,160: rank 1,943.1 of 1,000 x 720, 10,000..11,439 -> 11,223.1 (over 720
    # it would be 1,000).
    h = Hours().m(np.full(1440, 500.0), 10000.0 + np.arange(1440.0))
    h.m(np.arange(719.0, -1.0, -1.0), np.full(720, 1000.0))
    h, gap = gap_after(h, 25, ha=(2.0, 1000.0))
    assert_hours(impl(h), gap, SUBSTITUTED, 60, 647.1, 11223.1, M_P90, False)


def test_substituted_hours_lower_the_pma_of_later_gaps(impl):
    # 720 measured, then a 100-hour gap (PMA 100 %: P90), 10 measured, then a 9-hour gap: PMA 730 / 830 = 88 %.
    h, first = gap_after(Hours().ramp(720), 100, ha=(2.0, 30.0))
    h.m(np.full(9, 1.0), np.full(9, 20.0))
    h, second = gap_after(h, 9)
    out = impl(h)
    assert out.method[first].tolist() == [M_P90] * 100
    assert out.method[second].tolist() == [M_MAX] * 9


# ---- eu_mrr ------------------------------------------------------------------------------------------

# Exact mean 12 and sample standard deviation 0.5: squared deviations 4 x 0.25 = 1 over n - 1 = 4.
EQ4_CONC = [11.5, 12.5, 12.0, 11.5, 12.5]
EQ4_FLOW = [100.0, 200.0, 300.0, 400.0, 500.0]


def test_eu_mrr_worked_example_eq4(impl):
    ex = load_examples()["eu-eq4-substitute"]
    assert math.isclose(np.mean(EQ4_CONC), ex["inputs"]["mean_co2_pct"], rel_tol=1e-15)
    assert math.isclose(np.std(EQ4_CONC, ddof=1), ex["inputs"]["sd_co2_pct"], rel_tol=1e-15)
    h = Hours().m(EQ4_CONC, EQ4_FLOW).s(3).m(20.0, 50.0)
    out = impl(h, POLICY_EU_MRR)
    assert_matches_printed(out.conc[5], ex["outputs"]["substitute_co2_pct"], "eu-eq4-substitute")
    assert_hours(out, slice(5, 8), SUBSTITUTED, 60, 13.0, 300.0, M_MRR, False)
    # Open gap: same value, provisional while it lasts.
    assert_hours(impl(Hours().m(EQ4_CONC, EQ4_FLOW).s(3), POLICY_EU_MRR), slice(5, 8), SUBSTITUTED, 60, 13.0,
                 300.0, M_MRR, True)


def test_eu_mrr_single_measured_hour_has_zero_sigma(impl):
    out = impl(Hours().m(12.0, 100.0).s(2).m(20.0, 50.0), POLICY_EU_MRR)
    assert_hours(out, slice(1, 3), SUBSTITUTED, 60, 12.0, 100.0, M_MRR, False)


def test_eu_mrr_constant_history_has_zero_sigma(impl):
    # KERNEL DEFECT (substitution.py line 166): the one-pass variance (sum x^2 - n mean^2) / (n - 1) cancels
    # catastrophically; for 48 hours of exactly 235,009.1 mg/m3 it leaves a spurious sigma of 0.0125 and the kernel
    # substitutes 235,009.125 (relative error 1e-7, against principle 5 and the reference's np.std(ddof=1) = 0).
    out = impl(Hours().m(np.full(48, 235009.1), np.full(48, 1.2e6)).s(2).m(1.0, 1.0), POLICY_EU_MRR)
    assert_hours(out, slice(48, 50), SUBSTITUTED, 60, 235009.1, 1.2e6, M_MRR, False)


def test_eu_mrr_new_period_resets_the_statistics(impl):
    h = Hours().m([10.0, 14.0], [1.0, 3.0], period=2024)
    h.s(2, period=2025).m(20.0, 7.0, period=2025)  # nothing measured in 2025 before: HBHA (14 + 20) / 2
    h.m(22.0, 9.0, period=2025).s(1, period=2025).m(1.0, 1.0, period=2025)
    out = impl(h, POLICY_EU_MRR)
    assert_hours(out, slice(2, 4), SUBSTITUTED, 60, 17.0, 5.0, M_HBHA, False)
    # 2025 only: mean 21, sample sd of (20, 22) = sqrt(2); flow mean 8. With 2024 it would be 16.5 + 2 x 5.26.
    assert_hours(out, slice(6, 7), SUBSTITUTED, 60, 21.0 + 2.0 * math.sqrt(2.0), 8.0, M_MRR, False)


def test_eu_mrr_gap_into_the_next_period_keeps_the_value_of_its_first_hour(impl):
    # DESIGN §4 does not say; the kernel substitutes the whole gap from the period of its first hour.
    h = Hours().m([10.0, 14.0], [1.0, 3.0], period=2024).s(2, period=2024).s(2, period=2025).m(20.0, 7.0, period=2025)
    out = impl(h, POLICY_EU_MRR)
    assert_hours(out, slice(2, 6), SUBSTITUTED, 60, 12.0 + 2.0 * math.sqrt(8.0), 2.0, M_MRR, False)


def test_eu_mrr_ignores_the_part75_tiers(impl):
    h, gap = gap_after(pma_history(181), 30)  # Part 75 would give MPV / MAX here
    out = impl(h, POLICY_EU_MRR, 9000.0, 90000.0)
    c = np.arange(720.0)
    assert_hours(out, gap, SUBSTITUTED, 60, float(np.mean(c) + 2 * np.std(c, ddof=1)), float(np.mean(10 * c + 10)),
                 M_MRR, False)


# ---- kernel against reference on random series -------------------------------------------------------

RUN_LENGTHS = {
    MEASURED: st.one_of(st.integers(1, 6), st.integers(20, 300), st.integers(700, 2400)),
    SUBSTITUTED: st.one_of(st.integers(1, 10), st.integers(7, 30), st.integers(30, 120), st.integers(100, 400)),
    H_STOPPED: st.one_of(st.integers(1, 5), st.integers(5, 200)),
    EMPTY: st.one_of(st.integers(1, 5), st.integers(5, 40)),
}


@st.composite
def series(draw):
    """One stack's hours as runs of (base status, length), values from a seeded generator."""
    kinds = st.sampled_from([MEASURED, SUBSTITUTED, SUBSTITUTED, H_STOPPED, EMPTY])
    runs = draw(st.lists(kinds.flatmap(lambda k: st.tuples(st.just(k), RUN_LENGTHS[k])), max_size=25))
    # Often past the initial procedure from the start, then a gap that puts the PMA in one of the tiers.
    lead = draw(st.sampled_from([0, 0, 720, 1000, 2200]))
    spoil = draw(st.sampled_from([0.0, 0.03, 0.08, 0.15, 0.3]))
    runs = [(MEASURED, lead), (SUBSTITUTED, round(lead * spoil))] + runs
    base = np.array([k for k, n in runs for _ in range(n)][:3000], np.int8)
    n = len(base)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = draw(st.sampled_from(["continuous", "levels", "constant"]))
    if values == "continuous":  # CQ mg/m3, Qsn m3/h
        conc, flow = rng.uniform(1.5e5, 3.0e5, n), rng.uniform(5e5, 2e6, n)
    elif values == "levels":  # ties in the percentiles
        conc, flow = rng.choice([9.5, 12.0, 12.25, 14.0], n), rng.choice([8e5, 1.1e6, 1.25e6], n)
    else:  # a stack reading a steady value: zero spread
        conc, flow = np.full(n, rng.choice([12.03, 235009.1])), np.full(n, 1.2e6)
    measured = base == MEASURED
    garbage = draw(st.booleans())  # non-measured hours carry values that must be ignored, or NaN
    conc = np.where(measured, conc, 7e9 if garbage else np.nan)
    flow = np.where(measured, flow, 7e9 if garbage else np.nan)
    op = np.where(base == SUBSTITUTED, rng.integers(1, 61, n), 60)
    op = np.where(measured & (rng.random(n) < 0.1), rng.integers(1, 61, n), op)
    op = np.where((base == H_STOPPED) | (base == EMPTY), 0, op).astype(np.int64)
    cuts = np.sort(np.array(draw(st.lists(st.integers(0, max(n, 1)), max_size=3)), np.int64))
    period = (2024 + np.searchsorted(cuts, np.arange(n), side="right")).astype(np.int64)
    policy = draw(st.sampled_from([POLICY_PART75, POLICY_EU_MRR]))
    mpv = draw(st.sampled_from([(NAN, NAN), (4e5, 3e6), (4e5, NAN), (20.0, 2.5e6)]))
    return base, conc, flow, op, period, policy, mpv[0], mpv[1]


@settings(deadline=None, max_examples=150)
@given(series())
def test_kernel_equals_reference(args):
    got = Out(*substitute(*args))
    want = Out(*ref.substitute(*args))
    assert_same(got.status, want.status, "status")
    assert_same(got.op, want.op, "op_min")
    assert_same(got.method, want.method, "method")
    assert_same(got.provisional, want.provisional, "provisional")
    assert_close(got.conc, want.conc, what="conc")
    assert_close(got.flow, want.flow, what="flow")
    assert got.status.dtype == np.int8 and got.op.dtype == np.int64 and got.method.dtype == np.int8
    assert got.provisional.dtype == np.bool_


@settings(deadline=None, max_examples=100)
@given(series())
def test_hours_before_the_first_non_measured_hour_pass_through(args):
    base, conc, flow, op = args[:4]
    out = Out(*substitute(*args))
    non_measured = np.flatnonzero(base != MEASURED)
    head = slice(0, non_measured[0] if len(non_measured) else len(base))
    assert np.all(out.status[head] == MEASURED)
    assert_same(out.op[head], op[head])
    assert_same(out.conc[head], conc[head])
    assert_same(out.flow[head], flow[head])
    assert not out.method[head].any() and not out.provisional[head].any()
    # And every measured hour anywhere passes through; nothing is left EMPTY.
    measured = base == MEASURED
    assert_same(out.conc[measured], conc[measured])
    assert_same(out.flow[measured], flow[measured])
    assert set(out.status.tolist()) <= {MEASURED, H_STOPPED, SUBSTITUTED, MISSING}
