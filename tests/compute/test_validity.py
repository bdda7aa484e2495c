"""Calibration and reading validity (validity.py, params.py, channels.py): DESIGN §4 "Per reading"."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cems.compute import reference as ref
from cems.compute.channels import (
    CHANNELS,
    CO2,
    FLAG_CODE,
    FLAG_UNKNOWN,
    FLAGS,
    FLOW,
    H2O,
    INDEX,
    N_CHANNELS,
    NAMES,
    O2,
    PRESS,
    TEMP,
    VELOCITY,
    required_channels,
)
from cems.compute.params import StackParams, StackSpec
from cems.compute.validity import (
    INVALID,
    REASON_FLAG,
    REASON_RANGE_SHIFT,
    REASON_UNKNOWN_FLAG,
    STOPPED,
    VALID,
    describe_reason,
)
from tests.compute.conftest import (
    DEFAULT_RANGES,
    assert_same,
    build_params,
    classify,
    draw_readings,
    flag_codes,
    group_plans,
    row,
    rows,
    stack_specs,
)

GOOD = dict(flow_m3h=1.2e6, velocity_ms=15.0, co2_pct=12.0, o2_pct=6.0, temp_c=50.0, press_kpa=101.0, h2o_pct=10.0)


def missing_bit(ch: int) -> int:
    return 1 << ch


def range_bit(ch: int) -> int:
    return 1 << (REASON_RANGE_SHIFT + ch)


# ---- registry ----------------------------------------------------------------------------------------

def test_channel_registry_order_and_flags():
    assert NAMES == ("flow_m3h", "velocity_ms", "co2_pct", "o2_pct", "temp_c", "press_kpa", "h2o_pct")
    assert (FLOW, VELOCITY, CO2, O2, TEMP, PRESS, H2O) == tuple(range(7))
    assert N_CHANNELS == len(CHANNELS) == 7
    assert FLAGS == "NFMSDCTB"
    assert FLAG_UNKNOWN == len(FLAGS)
    assert all(INDEX[c.name] == i for i, c in enumerate(CHANNELS))


@pytest.mark.parametrize(("flow_basis", "co2_basis", "has_area", "expected"), [
    ("actual_wet", "dry", False, {"flow_m3h", "co2_pct", "temp_c", "press_kpa", "h2o_pct"}),
    ("actual_wet", "dry", True, {"velocity_ms", "co2_pct", "temp_c", "press_kpa", "h2o_pct"}),
    ("actual_wet", "wet", True, {"velocity_ms", "co2_pct", "temp_c", "press_kpa", "h2o_pct"}),
    ("std_wet", "dry", False, {"flow_m3h", "co2_pct", "h2o_pct"}),
    ("std_wet", "wet", False, {"flow_m3h", "co2_pct", "h2o_pct"}),
    ("std_dry", "dry", False, {"flow_m3h", "co2_pct"}),
    ("std_dry", "wet", False, {"flow_m3h", "co2_pct", "h2o_pct"}),
    ("std_dry", "dry", True, {"velocity_ms", "co2_pct"}),
])
def test_required_channels(flow_basis, co2_basis, has_area, expected):
    got = required_channels(flow_basis, co2_basis, has_area)
    assert set(got) == expected
    assert len(got) == len(set(got))
    assert "o2_pct" not in got


def test_stack_params_build():
    specs = [
        StackSpec(area_m2=30.0, kv=0.95, co2_basis="wet", ranges=(("co2_pct", 0.0, 20.0),),
                  calibration=(("co2_pct", 0.1, 1.02),)),
        StackSpec(flow_basis="std_dry", minute_min_samples=6, hour_min_valid_pct=80, t0_k=273.15,
                  co2_density_kg_m3=1.977),
    ]
    p = StackParams.build(specs, DEFAULT_RANGES)
    assert np.isclose(p.area_m2[0], 30.0) and np.isnan(p.area_m2[1])
    assert_same(p.kv, np.array([0.95, 1.0]))
    assert_same(p.flow_basis, np.array([0, 2], np.int8))
    assert_same(p.co2_wet, np.array([True, False]))
    assert_same(p.min_samples, np.array([12, 6], np.int64))
    assert_same(p.hour_min_valid_pct, np.array([75, 80], np.int64))
    assert_same(p.t0_k, np.array([273.0, 273.15]))
    assert_same(p.density_kg_m3, np.array([44.01 / 22.4, 1.977]))
    assert_same(p.p0_kpa, np.array([101.325, 101.325]))
    # Ranges: the stack's own override, the defaults elsewhere.
    assert (p.lo[0, CO2], p.hi[0, CO2]) == (0.0, 20.0)
    assert (p.lo[1, CO2], p.hi[1, CO2]) == (0.0, 25.0)
    for c in CHANNELS:
        if c.name != "co2_pct":
            assert (p.lo[0, INDEX[c.name]], p.hi[0, INDEX[c.name]]) == c.default_range
    # Calibration: only where configured.
    assert (p.cal_a[0, CO2], p.cal_b[0, CO2]) == (0.1, 1.02)
    assert np.count_nonzero(p.cal_a) == 1 and np.count_nonzero(p.cal_b != 1.0) == 1
    assert_same(p.required[0], np.array([False, True, True, False, True, True, True]))
    assert_same(p.required[1], np.array([True, False, True, False, False, False, False]))


# ---- flags -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("letter", ["N", "T"])
def test_flags_n_and_t_are_valid(letter):
    p = build_params(StackSpec())
    c = classify(p, rows(1, **GOOD), flag_codes(letter))
    assert c.validity[0] == VALID
    assert c.reason[0] == 0


@pytest.mark.parametrize("letter", list("MSDCB"))
def test_flags_m_s_d_c_b_make_a_reading_invalid(letter):
    p = build_params(StackSpec())
    c = classify(p, rows(1, **GOOD), flag_codes(letter))
    assert c.validity[0] == INVALID
    assert c.reason[0] == REASON_FLAG


def test_flag_f_is_stopped_whatever_the_channels_say():
    p = build_params(StackSpec())
    vals = np.vstack([row(**GOOD), row(), row(**{**GOOD, "co2_pct": 99.0})])
    c = classify(p, vals, flag_codes("FFF"))
    assert_same(c.validity, np.array([STOPPED] * 3, np.int8))
    assert_same(c.reason, np.zeros(3, np.int32))


@pytest.mark.parametrize("letter", ["X", "A", "n", "?"])
def test_unknown_letter_is_invalid_with_unknown_flag_bit(letter):
    p = build_params(StackSpec())
    codes = flag_codes(letter)
    assert codes[0] == FLAG_UNKNOWN
    c = classify(p, rows(1, **GOOD), codes)
    assert c.validity[0] == INVALID
    assert c.reason[0] == REASON_UNKNOWN_FLAG
    assert not c.reason[0] & REASON_FLAG


def test_unknown_flag_and_channel_reasons_combine():
    p = build_params(StackSpec())
    c = classify(p, rows(1, **{**GOOD, "co2_pct": np.nan}), flag_codes("X"))
    assert c.validity[0] == INVALID
    assert c.reason[0] == REASON_UNKNOWN_FLAG | missing_bit(CO2)
    c = classify(p, rows(1, **{**GOOD, "co2_pct": np.nan}), flag_codes("D"))
    assert c.reason[0] == REASON_FLAG | missing_bit(CO2)


# ---- channels: presence, finiteness, range -----------------------------------------------------------

@pytest.mark.parametrize("name", ["flow_m3h", "co2_pct", "temp_c", "press_kpa", "h2o_pct"])
def test_missing_required_channel_invalidates(name):
    p = build_params(StackSpec())
    c = classify(p, rows(1, **{**GOOD, name: np.nan}), flag_codes("N"))
    assert c.validity[0] == INVALID
    assert c.reason[0] == missing_bit(INDEX[name])


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_required_channel_is_not_finite(bad):
    p = build_params(StackSpec())
    c = classify(p, rows(1, **{**GOOD, "co2_pct": bad}), flag_codes("N"))
    assert c.validity[0] == INVALID
    assert c.reason[0] == missing_bit(CO2)


def test_non_required_o2_missing_or_out_of_range_does_not_invalidate():
    p = build_params(StackSpec())
    vals = np.vstack([row(**{**GOOD, "o2_pct": np.nan}), row(**{**GOOD, "o2_pct": 99.0}),
                      row(**{k: v for k, v in GOOD.items() if k != "o2_pct"})])
    c = classify(p, vals, flag_codes("NNN"))
    assert_same(c.validity, np.array([VALID] * 3, np.int8))
    assert_same(c.reason, np.zeros(3, np.int32))
    assert c.values[1, O2] == 99.0  # kept as sent


def test_velocity_not_required_without_area_and_flow_not_required_with_area():
    no_area, area = build_params(StackSpec()), build_params(StackSpec(area_m2=30.0))
    c = classify(no_area, rows(1, **{**GOOD, "velocity_ms": np.nan}), flag_codes("N"))
    assert c.validity[0] == VALID
    c = classify(area, rows(1, **{**GOOD, "flow_m3h": np.nan}), flag_codes("N"))
    assert c.validity[0] == VALID
    c = classify(area, rows(1, **{**GOOD, "velocity_ms": np.nan}), flag_codes("N"))
    assert c.validity[0] == INVALID and c.reason[0] == missing_bit(VELOCITY)
    c = classify(area, rows(1, **{**GOOD, "velocity_ms": 61.0}), flag_codes("N"))
    assert c.validity[0] == INVALID and c.reason[0] == range_bit(VELOCITY)


def test_std_dry_dry_co2_needs_neither_temperature_pressure_nor_moisture():
    p = build_params(StackSpec(flow_basis="std_dry"))
    c = classify(p, rows(1, flow_m3h=1.0e6, co2_pct=12.0), flag_codes("N"))
    assert c.validity[0] == VALID
    p = build_params(StackSpec(flow_basis="std_dry", co2_basis="wet"))
    c = classify(p, rows(1, flow_m3h=1.0e6, co2_pct=12.0), flag_codes("N"))
    assert c.validity[0] == INVALID and c.reason[0] == missing_bit(H2O)


def test_range_bounds_are_inclusive():
    p = build_params(StackSpec())
    vals = np.vstack([row(**{**GOOD, "co2_pct": 0.0}), row(**{**GOOD, "co2_pct": 25.0}),
                      row(**{**GOOD, "co2_pct": np.nextafter(25.0, 30.0)}),
                      row(**{**GOOD, "co2_pct": np.nextafter(0.0, -1.0)})])
    c = classify(p, vals, flag_codes("NNNN"))
    assert_same(c.validity, np.array([VALID, VALID, INVALID, INVALID], np.int8))
    assert_same(c.reason, np.array([0, 0, range_bit(CO2), range_bit(CO2)], np.int32))


def test_several_reasons_at_once():
    p = build_params(StackSpec())
    c = classify(p, rows(1, **{**GOOD, "co2_pct": np.nan, "press_kpa": 10.0, "temp_c": 900.0}), flag_codes("M"))
    assert c.reason[0] == missing_bit(CO2) | range_bit(PRESS) | range_bit(TEMP) | REASON_FLAG
    text = describe_reason(int(c.reason[0]), "M")
    assert text == "co2_pct missing or not finite; temp_c out of range; press_kpa out of range; flag M"


def test_describe_reason_unknown_flag():
    assert describe_reason(REASON_UNKNOWN_FLAG, "X") == "status 'X' is not an HJ 212 flag"
    assert describe_reason(REASON_FLAG) == "flag not valid"
    assert describe_reason(0) == ""


def test_stack_range_override_applies_per_stack():
    p = build_params(StackSpec(ranges=(("co2_pct", 0.0, 14.0),)), StackSpec())
    vals = rows(2, **{**GOOD, "co2_pct": 15.0})
    c = classify(p, vals, flag_codes("NN"), np.array([0, 1]))
    assert_same(c.validity, np.array([INVALID, VALID], np.int8))


# ---- calibration y = a + b*x, before the range check --------------------------------------------------

def test_calibration_is_applied_to_every_channel_value():
    p = build_params(StackSpec(calibration=(("co2_pct", 0.5, 1.1), ("temp_c", -2.0, 1.0))))
    c = classify(p, rows(1, **GOOD), flag_codes("N"))
    assert c.values[0, CO2] == 0.5 + 1.1 * 12.0
    assert c.values[0, TEMP] == -2.0 + 1.0 * 50.0
    assert c.values[0, FLOW] == GOOD["flow_m3h"]  # a=0, b=1 elsewhere
    assert np.isnan(classify(p, rows(1, **{**GOOD, "co2_pct": np.nan}), flag_codes("N")).values[0, CO2])


def test_out_of_range_before_calibration_but_in_range_after_is_valid():
    # Raw 30 % is above the 25 % top; calibrated 30 - 10 = 20 % is inside.
    p = build_params(StackSpec(calibration=(("co2_pct", -10.0, 1.0),)))
    c = classify(p, rows(1, **{**GOOD, "co2_pct": 30.0}), flag_codes("N"))
    assert c.validity[0] == VALID
    assert c.values[0, CO2] == 20.0


def test_in_range_before_calibration_but_out_of_range_after_is_invalid():
    # Raw 13 % is inside; calibrated 2 * 13 = 26 % is above 25 %.
    p = build_params(StackSpec(calibration=(("co2_pct", 0.0, 2.0),)))
    c = classify(p, rows(1, **{**GOOD, "co2_pct": 13.0}), flag_codes("N"))
    assert c.validity[0] == INVALID
    assert c.reason[0] == range_bit(CO2)
    # ... and the offset alone can push a value below the bottom.
    p = build_params(StackSpec(calibration=(("co2_pct", -10.0, 1.0),)))
    c = classify(p, rows(1, **{**GOOD, "co2_pct": 5.0}), flag_codes("N"))
    assert c.validity[0] == INVALID
    assert c.reason[0] == range_bit(CO2)
    assert c.values[0, CO2] == -5.0


def test_calibration_per_stack():
    p = build_params(StackSpec(calibration=(("co2_pct", -10.0, 1.0),)), StackSpec())
    c = classify(p, rows(2, **{**GOOD, "co2_pct": 30.0}), flag_codes("NN"), np.array([0, 1]))
    assert_same(c.validity, np.array([VALID, INVALID], np.int8))
    assert_same(c.values[:, CO2], np.array([20.0, 30.0]))


def test_empty_input():
    p = build_params(StackSpec())
    c = classify(p, np.zeros((0, N_CHANNELS)), np.zeros(0, np.int8), np.zeros(0, np.int64))
    assert c.values.shape == (0, N_CHANNELS) and c.validity.shape == (0,) and c.reason.shape == (0,)


# ---- kernel == reference -----------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(specs=st.lists(stack_specs(), min_size=1, max_size=4), data=st.data(),
       seed=st.integers(0, 2**32 - 1))
def test_classify_equals_reference(specs, data, seed):
    p = build_params(*specs)
    plans = data.draw(st.lists(group_plans(len(specs)), min_size=1, max_size=6))
    rng = np.random.default_rng(seed)
    vals, flags, idx = [], [], []
    for plan in plans:
        v, f = draw_readings(rng, plan)
        vals.append(v)
        flags.append(f)
        idx.append(np.full(len(f), plan["stack"], np.int64))
    values, flags, idx = np.concatenate(vals), np.concatenate(flags), np.concatenate(idx)
    got = classify(p, values, flags, idx)
    y, validity, bits = ref.classify_readings(values, flags, idx, p.cal_a, p.cal_b, p.lo, p.hi, p.required)
    assert_same(got.values, y, "calibrated values")
    assert_same(got.validity, validity, "validity")
    assert_same(got.reason, bits, "reason bits")
    # Independent checks of the rules themselves.
    assert np.all(got.reason[got.validity == VALID] == 0)
    assert np.all(got.reason[got.validity == STOPPED] == 0)
    assert np.all(got.reason[got.validity == INVALID] != 0)
    assert np.all((got.validity == STOPPED) == (flags == FLAG_CODE["F"]))
    ok_flag = (flags == FLAG_CODE["N"]) | (flags == FLAG_CODE["T"])
    req = p.required[idx]
    with np.errstate(invalid="ignore"):
        in_range = np.isfinite(got.values) & (got.values >= p.lo[idx]) & (got.values <= p.hi[idx])
    expected_valid = ok_flag & np.all(in_range | ~req, axis=1)
    assert_same(got.validity == VALID, expected_valid, "valid = flag N/T and every required channel finite, in range")
