"""Minute figures (minute.py): DESIGN §4 "Minute", worked examples, and the kernel against reference.py."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cems.compute.channels import CO2, FLOW, H2O, N_CHANNELS, O2, PRESS, TEMP, VELOCITY
from cems.compute.minute import group_offsets, minute_figures
from cems.compute.params import StackSpec
from cems.compute.validity import INVALID, STOPPED, VALID
from tests.compute.conftest import (
    RTOL,
    assert_close,
    assert_matches_printed,
    assert_same,
    build_params,
    channel_values_from_example,
    draw_readings,
    flag_codes,
    group_plans,
    load_examples,
    one_minute,
    reference_minute,
    row,
    rows,
    run_minutes,
    spec_from_example,
    stack_specs,
)

CN_IDS = ["cn-hour-velocity", "cn-hour-wet-co2", "cn-hour-density-1977"]
GOOD = dict(flow_m3h=1.2e6, co2_pct=12.0, o2_pct=6.0, temp_c=50.0, press_kpa=101.0, h2o_pct=10.0)
FIELDS = ("qs_m3_h", "qsn_m3_h", "co2_dry_pct", "co2_mg_m3", "rate_kg_h", "mass_kg")
REF_FIELDS = {"qs_m3_h": "qs", "qsn_m3_h": "qsn", "co2_dry_pct": "co2_dry", "co2_mg_m3": "cq", "rate_kg_h": "rate",
              "mass_kg": "mass"}


def scalar(figs, name: str) -> float:
    return float(getattr(figs, name)[0])


# ---- worked examples ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [12, 13, 60])
@pytest.mark.parametrize("eid", CN_IDS)
def test_china_worked_example_minute(eid, n):
    ex = load_examples()[eid]
    spec = spec_from_example(ex["inputs"])
    _, figs = one_minute(spec, rows(n, **channel_values_from_example(ex["inputs"])), "N" * n)
    assert figs.status[0] == VALID
    assert (figs.n[0], figs.n_valid[0], figs.n_stopped[0]) == (n, n, 0)
    got = {"qs_m3_h": scalar(figs, "qs_m3_h"), "qsn_m3_h": scalar(figs, "qsn_m3_h"),
           "co2_mg_m3": scalar(figs, "co2_mg_m3"), "rate_kg_h": scalar(figs, "rate_kg_h")}
    checked = 0
    for key, expected in ex["outputs"].items():
        if key in got:
            assert_matches_printed(got[key], expected, f"{eid}.{key}")
            checked += 1
    assert checked >= 1
    # Minute mass [kg] = rate [kg/h] / 60.
    assert math.isclose(scalar(figs, "mass_kg"), scalar(figs, "rate_kg_h") / 60.0, rel_tol=1e-15)
    assert math.isclose(scalar(figs, "co2_dry_pct"), 12.0, rel_tol=1e-12)


def test_worked_example_velocity_ignores_flow_channel():
    ex = load_examples()["cn-hour-velocity"]
    spec = spec_from_example(ex["inputs"])
    vals = rows(12, **channel_values_from_example(ex["inputs"]), flow_m3h=1.0)  # a nonsense flow, not used
    _, figs = one_minute(spec, vals, "N" * 12)
    assert_matches_printed(scalar(figs, "qs_m3_h"), ex["outputs"]["qs_m3_h"], "qs")


# ---- status ------------------------------------------------------------------------------------------

def test_stopped_when_more_than_half_the_readings_are_f():
    _, figs = one_minute(StackSpec(), rows(24, **GOOD), "F" * 13 + "N" * 11)
    assert figs.status[0] == STOPPED
    assert (figs.n[0], figs.n_valid[0], figs.n_stopped[0]) == (24, 11, 13)
    assert figs.mass_kg[0] == 0.0
    for name in FIELDS[:-1]:
        assert math.isnan(scalar(figs, name)), name


def test_exactly_half_f_is_not_stopped():
    _, figs = one_minute(StackSpec(), rows(24, **GOOD), "F" * 12 + "N" * 12)
    assert figs.status[0] == VALID  # 12 valid readings >= 12
    _, figs = one_minute(StackSpec(), rows(24, **GOOD), "N" * 12 + "F" * 12)
    assert figs.status[0] == VALID
    _, figs = one_minute(StackSpec(), rows(22, **GOOD), "F" * 11 + "N" * 11)
    assert figs.status[0] == INVALID  # not stopped, and 11 valid < 12
    assert math.isnan(figs.mass_kg[0])


def test_stopped_is_checked_before_valid():
    # 40 valid readings would be plenty, but 41 of 81 carry F.
    _, figs = one_minute(StackSpec(), rows(81, **GOOD), "N" * 40 + "F" * 41)
    assert figs.status[0] == STOPPED


def test_stopped_counts_only_f_not_other_invalid_flags():
    _, figs = one_minute(StackSpec(), rows(24, **GOOD), "M" * 13 + "N" * 11)
    assert figs.status[0] == INVALID
    assert figs.n_stopped[0] == 0


@pytest.mark.parametrize(("n_valid", "status"), [(12, VALID), (11, INVALID), (13, VALID), (0, INVALID)])
def test_minute_min_samples_default_12_of_60(n_valid, status):
    flags = "N" * n_valid + "M" * (60 - n_valid)
    _, figs = one_minute(StackSpec(), rows(60, **GOOD), flags)
    assert figs.status[0] == status
    assert figs.n_valid[0] == n_valid
    if status == VALID:
        assert figs.mass_kg[0] > 0
    else:
        assert math.isnan(figs.mass_kg[0])
        assert math.isnan(figs.rate_kg_h[0])


def test_minute_min_samples_counts_channel_defects_too():
    vals = rows(60, **GOOD)
    vals[11:, CO2] = np.nan  # only the first 11 readings carry CO2
    _, figs = one_minute(StackSpec(), vals, "N" * 60)
    assert (figs.status[0], figs.n_valid[0]) == (INVALID, 11)
    vals[11, CO2] = 12.0
    _, figs = one_minute(StackSpec(), vals, "N" * 60)
    assert (figs.status[0], figs.n_valid[0]) == (VALID, 12)


@pytest.mark.parametrize(("min_samples", "n_valid", "status"), [(5, 5, VALID), (5, 4, INVALID), (1, 1, VALID)])
def test_minute_min_samples_per_stack(min_samples, n_valid, status):
    _, figs = one_minute(StackSpec(minute_min_samples=min_samples), rows(n_valid, **GOOD), "N" * n_valid)
    assert figs.status[0] == status


def test_t_flag_counts_as_valid_in_the_minute():
    _, figs = one_minute(StackSpec(), rows(12, **GOOD), "T" * 12)
    assert figs.status[0] == VALID and figs.n_valid[0] == 12


def test_unknown_flag_readings_do_not_count():
    _, figs = one_minute(StackSpec(), rows(12, **GOOD), "N" * 11 + "X")
    assert figs.status[0] == INVALID and figs.n_valid[0] == 11


def test_empty_group_is_invalid_not_stopped():
    p = build_params(StackSpec())
    figs = minute_figures(np.array([0, 0]), np.array([0]), np.zeros(0, np.int8), np.zeros((0, N_CHANNELS)), p)
    assert (figs.n[0], figs.n_valid[0], figs.n_stopped[0], figs.status[0]) == (0, 0, 0, INVALID)
    assert np.all(np.isnan(figs.means[0]))
    assert math.isnan(figs.mass_kg[0])


def test_no_groups():
    p = build_params(StackSpec())
    figs = minute_figures(np.array([0]), np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros((0, N_CHANNELS)), p)
    assert figs.status.shape == (0,) and figs.means.shape == (0, N_CHANNELS)


# ---- means and the physics chain ---------------------------------------------------------------------

def test_means_are_over_valid_readings_only():
    vals = np.vstack([rows(12, **GOOD), rows(3, **{**GOOD, "co2_pct": 24.0, "flow_m3h": 9.0e6})])
    _, figs = one_minute(StackSpec(), vals, "N" * 12 + "MDX")
    assert figs.means[0, CO2] == 12.0
    assert figs.means[0, FLOW] == 1.2e6
    # F readings are not averaged either.
    _, figs = one_minute(StackSpec(), vals, "N" * 12 + "FFF")
    assert figs.means[0, CO2] == 12.0


def test_means_per_channel_skip_gaps_of_non_required_channels():
    vals = rows(12, **GOOD)
    vals[:, O2] = np.nan
    vals[0, O2], vals[1, O2] = 4.0, 8.0
    _, figs = one_minute(StackSpec(), vals, "N" * 12)
    assert figs.status[0] == VALID
    assert figs.means[0, O2] == 6.0
    assert np.isnan(figs.means[0, VELOCITY])


def test_means_of_varying_readings():
    co2 = np.linspace(11.0, 13.0, 12)
    temp = np.linspace(40.0, 60.0, 12)
    vals = rows(12, **GOOD)
    vals[:, CO2], vals[:, TEMP] = co2, temp
    _, figs = one_minute(StackSpec(), vals, "N" * 12)
    assert math.isclose(figs.means[0, CO2], 12.0, rel_tol=1e-14)
    assert math.isclose(figs.means[0, TEMP], 50.0, rel_tol=1e-14)
    # Qsn from the means (not the mean of per-reading Qsn).
    expected_qsn = 1.2e6 * 273.0 / (273.0 + 50.0) * 101.0 / 101.325 * 0.9
    assert math.isclose(figs.qsn_m3_h[0], expected_qsn, rel_tol=1e-12)


def test_flow_without_area_actual_wet():
    _, figs = one_minute(StackSpec(), rows(12, **GOOD), "N" * 12)
    qsn = 1.2e6 * 273.0 / 323.0 * 101.0 / 101.325 * 0.9
    cq = 12.0 * 1e4 * 44.01 / 22.4
    assert figs.qs_m3_h[0] == 1.2e6
    assert math.isclose(figs.qsn_m3_h[0], qsn, rel_tol=1e-12)
    assert math.isclose(figs.co2_mg_m3[0], cq, rel_tol=1e-12)
    assert math.isclose(figs.rate_kg_h[0], cq * qsn * 1e-6, rel_tol=1e-12)
    assert math.isclose(figs.mass_kg[0], cq * qsn * 1e-6 / 60.0, rel_tol=1e-12)


def test_velocity_with_area_and_kv():
    spec = StackSpec(area_m2=12.5, kv=0.9)
    vals = rows(12, **{**GOOD, "velocity_ms": 18.0, "flow_m3h": np.nan})
    _, figs = one_minute(spec, vals, "N" * 12)
    qs = 3600.0 * 12.5 * 0.9 * 18.0
    assert figs.status[0] == VALID
    assert math.isclose(figs.qs_m3_h[0], qs, rel_tol=1e-14)
    assert math.isclose(figs.qsn_m3_h[0], qs * 273.0 / 323.0 * 101.0 / 101.325 * 0.9, rel_tol=1e-12)
    # A different kv scales the flow and the mass.
    _, figs2 = one_minute(StackSpec(area_m2=12.5, kv=1.0), vals, "N" * 12)
    assert math.isclose(figs2.mass_kg[0] * 0.9, figs.mass_kg[0], rel_tol=1e-12)


def test_flow_basis_std_dry_qsn_equals_qs():
    spec = StackSpec(flow_basis="std_dry")
    vals = rows(12, flow_m3h=1.0e6, co2_pct=12.0)  # no temperature, pressure or moisture needed
    _, figs = one_minute(spec, vals, "N" * 12)
    assert figs.status[0] == VALID
    assert figs.qs_m3_h[0] == figs.qsn_m3_h[0] == 1.0e6
    assert math.isclose(figs.rate_kg_h[0], 12.0 * 1e4 * 44.01 / 22.4 * 1.0e6 * 1e-6, rel_tol=1e-12)
    # Temperature and pressure, if sent, change nothing.
    _, figs2 = one_minute(spec, rows(12, flow_m3h=1.0e6, co2_pct=12.0, temp_c=150.0, press_kpa=90.0, h2o_pct=20.0),
                          "N" * 12)
    assert figs2.qsn_m3_h[0] == 1.0e6


def test_flow_basis_std_wet_removes_moisture_only():
    spec = StackSpec(flow_basis="std_wet")
    _, figs = one_minute(spec, rows(12, flow_m3h=1.0e6, co2_pct=12.0, h2o_pct=10.0, temp_c=150.0), "N" * 12)
    assert figs.status[0] == VALID
    assert figs.qs_m3_h[0] == 1.0e6
    assert math.isclose(figs.qsn_m3_h[0], 1.0e6 * (1 - 10.0 / 100), rel_tol=1e-15)
    # Moisture is required on this basis.
    _, figs = one_minute(spec, rows(12, flow_m3h=1.0e6, co2_pct=12.0), "N" * 12)
    assert figs.status[0] == INVALID


@pytest.mark.parametrize("h2o", [0.0, 8.0, 10.0, 25.0])
def test_wet_and_dry_co2_give_the_same_mass(h2o):
    dry = dict(GOOD, co2_pct=12.0, h2o_pct=h2o)
    wet = dict(GOOD, co2_pct=12.0 * (1 - h2o / 100), h2o_pct=h2o)
    _, fd = one_minute(StackSpec(co2_basis="dry"), rows(12, **dry), "N" * 12)
    _, fw = one_minute(StackSpec(co2_basis="wet"), rows(12, **wet), "N" * 12)
    for name in ("co2_dry_pct", "co2_mg_m3", "rate_kg_h", "mass_kg", "qsn_m3_h"):
        assert math.isclose(scalar(fd, name), scalar(fw, name), rel_tol=1e-12), name
    assert math.isclose(fw.means[0, CO2], wet["co2_pct"], rel_tol=1e-14)


def test_density_is_per_stack():
    vals = rows(12, **GOOD)
    _, f1 = one_minute(StackSpec(), vals, "N" * 12)
    _, f2 = one_minute(StackSpec(co2_density_kg_m3=1.977), vals, "N" * 12)
    assert math.isclose(f2.mass_kg[0] / f1.mass_kg[0], 1.977 / (44.01 / 22.4), rel_tol=1e-12)


def test_calibrated_values_feed_the_means():
    spec = StackSpec(calibration=(("co2_pct", -10.0, 1.0),))
    vals = rows(12, **{**GOOD, "co2_pct": 30.0})  # raw out of range, calibrated 20 %
    _, figs = one_minute(spec, vals, "N" * 12)
    assert figs.status[0] == VALID
    assert figs.means[0, CO2] == 20.0


def test_several_stacks_in_one_call():
    specs = [StackSpec(), StackSpec(area_m2=30.0), StackSpec(flow_basis="std_dry", minute_min_samples=3)]
    p = build_params(*specs)
    g0 = (0, rows(12, **GOOD), flag_codes("N" * 12))
    g1 = (1, rows(12, **GOOD, velocity_ms=15.0), flag_codes("N" * 12))
    g2 = (2, rows(3, flow_m3h=1.0e6, co2_pct=12.0), flag_codes("NNN"))
    g3 = (0, rows(3, **GOOD), flag_codes("NNN"))  # too few for stack 0
    _, figs, _, _ = run_minutes(p, [g0, g1, g2, g3])
    assert_same(figs.status, np.array([VALID, VALID, VALID, INVALID], np.int8))
    assert figs.qs_m3_h[0] == 1.2e6
    assert figs.qs_m3_h[1] == 3600.0 * 30.0 * 15.0
    assert figs.qsn_m3_h[2] == 1.0e6
    # Each group equals the same group computed alone.
    for g, (spec, grp) in enumerate(zip(specs + [specs[0]], [g0, g1, g2, g3], strict=True)):
        _, alone = one_minute(spec, grp[1], grp[2])
        for name in FIELDS:
            assert_same(getattr(figs, name)[g], getattr(alone, name)[0], name)


# ---- group_offsets -----------------------------------------------------------------------------------

def test_group_offsets():
    starts, offsets = group_offsets(np.array([3, 3, 5, 7, 7, 7]))
    assert_same(starts, np.array([0, 2, 3]))
    assert_same(offsets, np.array([0, 2, 3, 6], np.int64))
    starts, offsets = group_offsets(np.array([], np.int64))
    assert starts.size == 0
    assert_same(offsets, np.zeros(1, np.int64))
    starts, offsets = group_offsets(np.array([9]))
    assert_same(offsets, np.array([0, 1], np.int64))


# ---- kernel == reference (hypothesis) ----------------------------------------------------------------

def random_stream(specs, plans, seed):
    rng = np.random.default_rng(seed)
    return [(plan["stack"], *draw_readings(rng, plan)) for plan in plans]


def check_against_reference(p, cls, figs, offsets, group_stack):
    for g in range(len(group_stack)):
        lo, hi = offsets[g], offsets[g + 1]
        r = reference_minute(p, int(group_stack[g]), cls.validity[lo:hi], cls.values[lo:hi])
        assert (figs.n[g], figs.n_valid[g], figs.n_stopped[g], figs.status[g]) == \
            (r["n"], r["n_valid"], r["n_stopped"], r["status"]), f"group {g}"
        # Means: relative 1e-12, with an absolute floor scaled to the channel's magnitude so that a mean
        # near zero of mixed-sign values does not turn summation-order rounding into a failure.
        valid = cls.values[lo:hi][cls.validity[lo:hi] == VALID]
        with np.errstate(all="ignore"):
            scale = np.nanmax(np.abs(valid), axis=0, initial=0.0) if len(valid) else np.zeros(N_CHANNELS)
        for j in range(N_CHANNELS):
            assert_close(figs.means[g, j], r["means"][j], rtol=RTOL, atol=RTOL * scale[j], what=f"g{g} mean[{j}]")
        for name, key in REF_FIELDS.items():
            assert_close(getattr(figs, name)[g], r[key], what=f"g{g} {name}")


@settings(max_examples=200, deadline=None)
@given(specs=st.lists(stack_specs(), min_size=1, max_size=4), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_minute_kernel_equals_reference(specs, data, seed):
    p = build_params(*specs)
    plans = data.draw(st.lists(group_plans(len(specs)), min_size=0, max_size=8))
    cls, figs, offsets, group_stack = run_minutes(p, random_stream(specs, plans, seed))
    check_against_reference(p, cls, figs, offsets, group_stack)
    # The figures are consistent with the rules, independently of the reference.
    valid = figs.status == VALID
    assert np.all(np.isfinite(figs.mass_kg[valid]))
    assert np.all(figs.mass_kg[figs.status == STOPPED] == 0.0)
    assert np.all(np.isnan(figs.mass_kg[figs.status == INVALID]))
    assert np.all((figs.status == STOPPED) == (2 * figs.n_stopped > figs.n))
    assert np.all(figs.n_valid[valid] >= p.min_samples[group_stack[valid]])
    np.testing.assert_allclose(figs.mass_kg[valid], figs.co2_mg_m3[valid] * figs.qsn_m3_h[valid] * 1e-6 / 60,
                               rtol=1e-14)


@settings(max_examples=100, deadline=None)
@given(specs=st.lists(stack_specs(), min_size=1, max_size=3), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_shuffling_readings_within_a_minute_changes_nothing(specs, data, seed):
    p = build_params(*specs)
    plans = data.draw(st.lists(group_plans(len(specs)), min_size=1, max_size=6))
    groups = random_stream(specs, plans, seed)
    rng = np.random.default_rng(seed ^ 0x5EED)
    shuffled = []
    for s, v, f in groups:
        perm = rng.permutation(len(f))
        shuffled.append((s, v[perm], f[perm]))
    cls, a, _, _ = run_minutes(p, groups)
    _, b, _, _ = run_minutes(p, shuffled)
    for name in ("n", "n_valid", "n_stopped", "status"):
        assert_same(getattr(b, name), getattr(a, name), name)
    offsets = np.r_[0, np.cumsum([len(f) for _, _, f in groups])]
    for g in range(len(groups)):
        valid = cls.values[offsets[g]:offsets[g + 1]][cls.validity[offsets[g]:offsets[g + 1]] == VALID]
        with np.errstate(all="ignore"):
            scale = np.nanmax(np.abs(valid), axis=0, initial=0.0) if len(valid) else np.zeros(N_CHANNELS)
        for j in range(N_CHANNELS):
            assert_close(b.means[g, j], a.means[g, j], atol=RTOL * scale[j], what=f"g{g} mean[{j}]")
    for name in FIELDS:
        assert_close(getattr(b, name), getattr(a, name), what=name)


@settings(max_examples=100, deadline=None)
@given(specs=st.lists(stack_specs(), min_size=1, max_size=3), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_duplicated_groups_give_identical_figures(specs, data, seed):
    p = build_params(*specs)
    plans = data.draw(st.lists(group_plans(len(specs)), min_size=1, max_size=6))
    groups = random_stream(specs, plans, seed)
    k = len(groups)
    _, once, _, _ = run_minutes(p, groups)
    _, twice, _, _ = run_minutes(p, groups + groups)
    _, interleaved, _, _ = run_minutes(p, [g for pair in zip(groups, groups, strict=True) for g in pair])
    for name in ("n", "n_valid", "n_stopped", "status", "means") + FIELDS:
        a = getattr(once, name)
        assert_same(getattr(twice, name)[:k], a, name)
        assert_same(getattr(twice, name)[k:], a, name)
        assert_same(getattr(interleaved, name)[0::2], a, name)
        assert_same(getattr(interleaved, name)[1::2], a, name)


# ---- known divergence between kernel and reference ---------------------------------------------------

@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_reference_means_skip_infinite_values_like_the_kernel(bad):
    # SOURCE BUG (compute/reference.py, minute_figure, line 45): the reference averages a channel with
    # np.nanmean, which drops NaN but keeps +/-inf, so a valid reading whose non-required channel (here
    # o2_pct) is infinite makes the reference mean inf while the numba kernel (minute.py line 62) skips every
    # non-finite value. Validity treats inf exactly like a missing value ("missing or not finite", DESIGN §4),
    # so the kernel is right and the reference should average finite values only.
    p = build_params(StackSpec())
    vals = rows(12, **GOOD)
    vals[0, O2] = bad
    cls, figs, _, _ = run_minutes(p, [(0, vals, flag_codes("N" * 12))])
    assert figs.status[0] == VALID
    assert figs.means[0, O2] == 6.0  # the kernel: mean of the 11 finite values
    r = reference_minute(p, 0, cls.validity, cls.values)
    assert r["means"][O2] == figs.means[0, O2]


def test_unused_channels_do_not_leak_into_figures():
    # Anything in the channels that the stack's basis does not use leaves Qs/Qsn/CQ untouched.
    base = rows(12, flow_m3h=1.0e6, co2_pct=12.0)
    noisy = base.copy()
    noisy[:, TEMP], noisy[:, PRESS], noisy[:, H2O], noisy[:, O2] = 400.0, 60.0, 55.0, 1.0
    spec = StackSpec(flow_basis="std_dry")
    _, a = one_minute(spec, base, "N" * 12)
    _, b = one_minute(spec, noisy, "N" * 12)
    for name in FIELDS:
        assert_same(getattr(b, name), getattr(a, name), name)


def test_row_helper_places_channels():
    r = row(co2_pct=1.0, h2o_pct=2.0)
    assert r[CO2] == 1.0 and r[H2O] == 2.0 and np.isnan(r[FLOW])
