"""Hour figures (hour.py): DESIGN §4 "Hour", the 75 % rule, worked examples, kernel against reference.py."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cems.compute import constants as K
from cems.compute import reference as ref
from cems.compute.hour import H_STOPPED, MEASURED, SUBSTITUTED, hour_figures
from cems.compute.validity import INVALID, STOPPED, VALID
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

CN_IDS = ["cn-hour-velocity", "cn-hour-wet-co2", "cn-hour-density-1977"]
CQ, QSN = 235_000.0, 1.2e6


def hours(groups, pct=(75,)):
    """Hour figures for groups given as (stack, statuses, cq, qsn); cq/qsn default to constants."""
    statuses, cqs, qsns, stacks, sizes = [], [], [], [], []
    for g in groups:
        s, status = g[0], list(g[1])
        cq = list(g[2]) if len(g) > 2 else [CQ if x == VALID else math.nan for x in status]
        qsn = list(g[3]) if len(g) > 3 else [QSN if x == VALID else math.nan for x in status]
        statuses += status
        cqs += cq
        qsns += qsn
        stacks.append(s)
        sizes.append(len(status))
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    return hour_figures(offsets, np.array(stacks, np.int64), np.array(statuses, np.int8), np.array(cqs, float),
                        np.array(qsns, float), np.array(pct, np.int64))


def one_hour(statuses, pct=75, cq=None, qsn=None):
    g = (0, statuses) if cq is None else (0, statuses, cq, qsn)
    return hours([g], (pct,))


def get(figs, name):
    return getattr(figs, name)[0].item()


# ---- worked examples ---------------------------------------------------------------------------------

def example_minutes(eid: str, n_minutes: int = 60, readings: int = 12):
    ex = load_examples()[eid]
    params = build_params(spec_from_example(ex["inputs"]))
    vals = rows(readings, **channel_values_from_example(ex["inputs"]))
    groups = [(0, vals, flag_codes("N" * readings))] * n_minutes
    _, figs, _, _ = run_minutes(params, groups)
    return ex, figs


@pytest.mark.parametrize("eid", CN_IDS)
def test_china_worked_example_hour_of_60_valid_minutes(eid):
    ex, m = example_minutes(eid)
    assert np.all(m.status == VALID)
    h = hour_figures(np.array([0, 60]), np.array([0]), m.status, m.co2_mg_m3, m.qsn_m3_h, np.array([75]))
    assert (get(h, "valid_min"), get(h, "stopped_min"), get(h, "op_min"), get(h, "status")) == (60, 0, 60, MEASURED)
    got = {"qsn_m3_h": get(h, "qsn_m3_h"), "co2_mg_m3": get(h, "co2_mg_m3"), "rate_kg_h": get(h, "rate_kg_h"),
           "hour_mass_t": get(h, "mass_t")}
    checked = 0
    for key, expected in ex["outputs"].items():
        if key in got:
            assert_matches_printed(got[key], expected, f"{eid}.{key}")
            checked += 1
    assert checked >= 1
    # The hour mass equals the rate over one operating hour, and the sum of the 60 minute masses.
    assert math.isclose(get(h, "mass_t"), get(h, "rate_kg_h") / 1000.0, rel_tol=1e-12)
    assert math.isclose(get(h, "mass_t"), m.mass_kg.sum() / 1000.0, rel_tol=1e-12)


def test_velocity_example_hour_mass_value():
    ex, m = example_minutes("cn-hour-velocity")
    h = hour_figures(np.array([0, 60]), np.array([0]), m.status, m.co2_mg_m3, m.qsn_m3_h, np.array([75]))
    assert ex["outputs"]["hour_mass_t"] == 289.677319
    assert abs(get(h, "mass_t") - 289.677319) <= 1e-6


def test_eu_art44_min_values_48_of_60_at_80_pct():
    ex = load_examples()["eu-art44-min-values"]
    possible = ex["inputs"]["possible_minute_values"]
    need = ex["outputs"]["min_valid_values"]
    assert (possible, need) == (60, 48)
    assert K.HOUR_MIN_VALID_PCT_EU == 80
    h = one_hour([VALID] * need + [INVALID] * (possible - need), pct=80)
    assert get(h, "status") == MEASURED
    h = one_hour([VALID] * (need - 1) + [INVALID] * (possible - need + 1), pct=80)
    assert get(h, "status") == SUBSTITUTED
    assert math.isnan(get(h, "mass_t"))


# ---- the valid-minute rule ---------------------------------------------------------------------------

@pytest.mark.parametrize(("valid", "status"), [(45, MEASURED), (44, SUBSTITUTED), (60, MEASURED), (0, SUBSTITUTED)])
def test_45_of_60_valid_minutes_is_measured(valid, status):
    h = one_hour([VALID] * valid + [INVALID] * (60 - valid))
    assert (get(h, "valid_min"), get(h, "stopped_min"), get(h, "op_min")) == (valid, 0, 60)
    assert get(h, "status") == status
    if status == MEASURED:
        assert math.isclose(get(h, "rate_kg_h"), CQ * QSN * 1e-6, rel_tol=1e-12)
        assert math.isclose(get(h, "mass_t"), CQ * QSN * 1e-6 / 1000.0, rel_tol=1e-12)
    else:
        assert math.isnan(get(h, "mass_t")) and math.isnan(get(h, "rate_kg_h"))


def test_45_and_44_valid_with_the_rest_missing():
    # Minutes missing entirely count as operating and not valid.
    h = one_hour([VALID] * 45)
    assert (get(h, "op_min"), get(h, "status")) == (60, MEASURED)
    assert math.isclose(get(h, "mass_t"), CQ * QSN * 1e-6 * 60 / 60 / 1000, rel_tol=1e-12)
    h = one_hour([VALID] * 44)
    assert (get(h, "op_min"), get(h, "status")) == (60, SUBSTITUTED)


def test_empty_hour_is_operating_and_substituted_not_stopped():
    h = one_hour([])
    assert (get(h, "valid_min"), get(h, "stopped_min"), get(h, "op_min"), get(h, "status")) == (0, 0, 60, SUBSTITUTED)
    assert math.isnan(get(h, "co2_mg_m3")) and math.isnan(get(h, "mass_t"))


@pytest.mark.parametrize(("valid", "status"), [(23, MEASURED), (22, SUBSTITUTED), (30, MEASURED)])
def test_half_stopped_hour_needs_23_of_30(valid, status):
    h = one_hour([STOPPED] * 30 + [VALID] * valid + [INVALID] * (30 - valid))
    assert (get(h, "stopped_min"), get(h, "op_min"), get(h, "valid_min")) == (30, 30, valid)
    assert get(h, "status") == status
    if status == MEASURED:
        # Mass over the 30 operating minutes only.
        assert math.isclose(get(h, "mass_t"), CQ * QSN * 1e-6 * 30 / 60 / 1000, rel_tol=1e-12)


def test_half_stopped_hour_with_missing_minutes():
    h = one_hour([STOPPED] * 30 + [VALID] * 23)  # 7 minutes missing: operating, not valid
    assert (get(h, "op_min"), get(h, "status")) == (30, MEASURED)
    h = one_hour([STOPPED] * 30 + [VALID] * 22)
    assert (get(h, "op_min"), get(h, "status")) == (30, SUBSTITUTED)


@pytest.mark.parametrize(("stopped", "valid", "status"), [
    (10, 38, MEASURED), (10, 37, SUBSTITUTED),  # op 50: ceil(37.5) = 38
    (59, 1, MEASURED), (59, 0, SUBSTITUTED),  # op 1: ceil(0.75) = 1
    (20, 30, MEASURED), (20, 29, SUBSTITUTED),  # op 40: exactly 30
    (1, 45, MEASURED), (1, 44, SUBSTITUTED),  # op 59: ceil(44.25) = 45
    (4, 42, MEASURED), (4, 41, SUBSTITUTED),  # op 56: exactly 42
])
def test_ceil_of_75_pct_of_operating_minutes(stopped, valid, status):
    op = 60 - stopped
    assert (MEASURED if valid >= math.ceil(0.75 * op) else SUBSTITUTED) == status  # the table itself
    h = one_hour([STOPPED] * stopped + [VALID] * valid + [INVALID] * (op - valid))
    assert (get(h, "op_min"), get(h, "valid_min"), get(h, "status")) == (op, valid, status)


def test_all_60_stopped_is_stopped_with_zero_mass():
    h = one_hour([STOPPED] * 60)
    assert (get(h, "valid_min"), get(h, "stopped_min"), get(h, "op_min"), get(h, "status")) == (0, 60, 0, H_STOPPED)
    assert get(h, "mass_t") == 0.0
    assert get(h, "rate_kg_h") == 0.0


def test_per_stack_min_valid_pct():
    statuses = [VALID] * 47 + [INVALID] * 13
    h = hours([(0, statuses), (1, statuses), (0, statuses)], pct=(75, 80))
    assert_same(h.status, np.array([MEASURED, SUBSTITUTED, MEASURED], np.int8))


# ---- hourly means ------------------------------------------------------------------------------------

def test_hour_means_over_valid_minutes_only():
    status = [VALID] * 45 + [INVALID] * 5 + [STOPPED] * 10
    cq = [200_000.0] * 20 + [250_000.0] * 25 + [999_999.0] * 5 + [5.0] * 10  # the last 15 must be ignored
    qsn = [1.0e6] * 30 + [1.3e6] * 15 + [9.0e9] * 15
    h = one_hour(status, cq=cq, qsn=qsn)
    cqh = (20 * 200_000.0 + 25 * 250_000.0) / 45
    qsnh = (30 * 1.0e6 + 15 * 1.3e6) / 45
    assert get(h, "status") == MEASURED and get(h, "op_min") == 50
    assert math.isclose(get(h, "co2_mg_m3"), cqh, rel_tol=1e-12)
    assert math.isclose(get(h, "qsn_m3_h"), qsnh, rel_tol=1e-12)
    # Gh = CQh * Qsnh * 1e-6 (the product of the means, not the mean of minute rates).
    assert math.isclose(get(h, "rate_kg_h"), cqh * qsnh * 1e-6, rel_tol=1e-12)
    mean_of_products = sum(c * q for c, q in zip(cq[:45], qsn[:45], strict=True)) / 45 * 1e-6
    assert not math.isclose(get(h, "rate_kg_h"), mean_of_products, rel_tol=1e-6)
    assert math.isclose(get(h, "mass_t"), cqh * qsnh * 1e-6 * 50 / 60 / 1000, rel_tol=1e-12)


def test_substituted_hour_still_reports_its_valid_means():
    h = one_hour([VALID] * 10 + [INVALID] * 50)
    assert get(h, "status") == SUBSTITUTED
    assert get(h, "co2_mg_m3") == CQ and get(h, "qsn_m3_h") == QSN


# ---- kernel == reference (hypothesis) ----------------------------------------------------------------

@st.composite
def hour_groups(draw, n_stacks: int):
    n = draw(st.one_of(st.integers(0, 60), st.integers(40, 60), st.just(60), st.just(0)))
    weights = draw(st.sampled_from([(1, 0, 0), (3, 1, 0), (1, 1, 1), (0, 0, 1), (1, 0, 1), (5, 0, 1), (0, 1, 1)]))
    status = draw(st.lists(st.sampled_from([VALID] * weights[0] + [INVALID] * weights[1] + [STOPPED] * weights[2]),
                           min_size=n, max_size=n))
    cq = draw(st.lists(st.floats(1.0e5, 3.0e5), min_size=n, max_size=n))
    qsn = draw(st.lists(st.floats(1.0e5, 3.0e6), min_size=n, max_size=n))
    # Non-valid minutes carry NaN figures (as minute_figures gives them) or stray numbers.
    stray = draw(st.booleans())
    cq = [c if s == VALID else (c if stray else math.nan) for c, s in zip(cq, status, strict=True)]
    qsn = [q if s == VALID else (q if stray else math.nan) for q, s in zip(qsn, status, strict=True)]
    return (draw(st.integers(0, n_stacks - 1)), status, cq, qsn)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), pct=st.lists(st.sampled_from([75, 80]), min_size=1, max_size=3))
def test_hour_kernel_equals_reference(data, pct):
    groups = data.draw(st.lists(hour_groups(len(pct)), min_size=0, max_size=6))
    h = hours(groups, tuple(pct))
    for g, (s, status, cq, qsn) in enumerate(groups):
        r = ref.hour_figure(np.array(status, np.int8), np.array(cq), np.array(qsn), pct[s])
        assert (h.valid_min[g], h.stopped_min[g], h.op_min[g], h.status[g]) == \
            (r["valid"], r["stopped"], r["op"], r["status"]), f"group {g}"
        for name, key in (("co2_mg_m3", "cq"), ("qsn_m3_h", "qsn"), ("rate_kg_h", "rate"), ("mass_t", "mass")):
            assert_close(getattr(h, name)[g], r[key], what=f"g{g} {name}")
        # The rule itself, in integers: valid * 100 >= pct * op.
        op = 60 - status.count(STOPPED)
        nv = status.count(VALID)
        expected = H_STOPPED if op == 0 else (MEASURED if nv * 100 >= pct[s] * op else SUBSTITUTED)
        assert h.status[g] == expected


@settings(max_examples=100, deadline=None)
@given(data=st.data(), pct=st.sampled_from([75, 80]), seed=st.integers(0, 2**32 - 1))
def test_hour_is_independent_of_minute_order(data, pct, seed):
    groups = data.draw(st.lists(hour_groups(1), min_size=1, max_size=4))
    rng = np.random.default_rng(seed)
    shuffled = []
    for s, status, cq, qsn in groups:
        perm = rng.permutation(len(status))
        shuffled.append((s, [status[i] for i in perm], [cq[i] for i in perm], [qsn[i] for i in perm]))
    a, b = hours(groups, (pct,)), hours(shuffled, (pct,))
    for name in ("valid_min", "stopped_min", "op_min", "status"):
        assert_same(getattr(b, name), getattr(a, name), name)
    for name in ("co2_mg_m3", "qsn_m3_h", "rate_kg_h", "mass_t"):
        assert_close(getattr(b, name), getattr(a, name), what=name)
    # Duplicating every group into its own group gives identical figures.
    c = hours(groups + groups, (pct,))
    k = len(groups)
    for name in ("valid_min", "stopped_min", "op_min", "status", "co2_mg_m3", "qsn_m3_h", "rate_kg_h", "mass_t"):
        assert_same(getattr(c, name)[:k], getattr(a, name), name)
        assert_same(getattr(c, name)[k:], getattr(a, name), name)
