"""Physics steps of DESIGN §4 (formulas.py) against the worked examples and closed forms."""

import math

import numpy as np
import pytest

from cems.compute import constants as K
from cems.compute.formulas import (
    actual_flow_from_velocity,
    co2_mass_concentration,
    co2_wet_to_dry,
    dry_standard_flow,
    mass_rate_kg_h,
    wet_standard_to_dry,
)
from tests.compute.conftest import assert_matches_printed, load_examples

CN_IDS = ["cn-hour-velocity", "cn-hour-wet-co2", "cn-hour-density-1977"]


def chain(inputs: dict) -> dict[str, float]:
    """The worked-example chain through the formulas (one call per step of DESIGN §4)."""
    qs = actual_flow_from_velocity(inputs["velocity_ms"], inputs["area_m2"], inputs["kv"])
    qsn = dry_standard_flow(qs, inputs["temp_c"], inputs["press_kpa"], inputs["h2o_pct"], inputs["T0_K"], K.P0_KPA)
    co2 = inputs["co2_pct"]
    if inputs["co2_basis"] == "wet":
        co2 = co2_wet_to_dry(co2, inputs["h2o_pct"])
    cq = co2_mass_concentration(co2, inputs["co2_density_kg_m3"])
    rate = mass_rate_kg_h(cq, qsn)
    return {"qs_m3_h": qs, "qsn_m3_h": qsn, "co2_mg_m3": cq, "rate_kg_h": rate,
            "hour_mass_t": rate / 1000.0, "day_mass_t_24_valid_hours": 24 * rate / 1000.0}


def test_examples_file_has_the_china_examples():
    examples = load_examples()
    for eid in CN_IDS:
        assert examples[eid]["regime"] == "china"
        assert examples[eid]["inputs"]["T0_K"] == K.T0_K_CHINA


@pytest.mark.parametrize("eid", CN_IDS)
def test_china_worked_example_through_formulas(eid):
    ex = load_examples()[eid]
    got = chain(ex["inputs"])
    assert ex["outputs"], eid
    for key, expected in ex["outputs"].items():
        assert_matches_printed(got[key], expected, f"{eid}.{key}")


def test_velocity_example_exact_values():
    # 3600 * 30 m2 * 1.0 * 15 m/s is exact in binary floating point.
    assert actual_flow_from_velocity(15.0, 30.0, 1.0) == 1_620_000.0
    # Written out independently: 1,620,000 * 273/323 * 101.025/101.325 * 0.9
    expected = 1_620_000.0 * 273.0 / 323.0 * (101.025 / 101.325) * 0.9
    assert math.isclose(dry_standard_flow(1_620_000.0, 50.0, 101.025, 10.0, 273.0, 101.325), expected, rel_tol=1e-14)


def test_default_density_is_hj_eq20():
    assert K.M_CO2_OVER_VM == 44.01 / 22.4
    ex = load_examples()["cn-hour-velocity"]["inputs"]
    assert math.isclose(ex["co2_density_kg_m3"], K.M_CO2_OVER_VM, rel_tol=1e-15)
    # 1 % vol CO2 = 1e4 ppm -> 19647.32... mg/m3
    assert math.isclose(co2_mass_concentration(1.0, K.M_CO2_OVER_VM), 1e4 * 44.01 / 22.4, rel_tol=1e-15)


def test_velocity_flow_uses_area_and_kv():
    assert math.isclose(actual_flow_from_velocity(10.0, 12.5, 0.9), 3600 * 12.5 * 0.9 * 10.0, rel_tol=1e-15)
    assert actual_flow_from_velocity(0.0, 12.5, 0.9) == 0.0
    # Linear in each factor.
    assert math.isclose(actual_flow_from_velocity(10.0, 25.0, 0.9), 2 * actual_flow_from_velocity(10.0, 12.5, 0.9),
                        rel_tol=1e-15)


def test_dry_standard_flow_identity_at_standard_conditions():
    # At T = 0 degC, P = P0, dry gas: Qsn = Qs.
    assert dry_standard_flow(1.0e6, 0.0, K.P0_KPA, 0.0, 273.0, K.P0_KPA) == 1.0e6
    # Moisture removes its share; temperature T0 + t in the denominator; pressure proportional.
    assert math.isclose(dry_standard_flow(1.0e6, 0.0, K.P0_KPA, 25.0, 273.0, K.P0_KPA), 0.75e6, rel_tol=1e-15)
    assert math.isclose(dry_standard_flow(1.0e6, 273.0, K.P0_KPA, 0.0, 273.0, K.P0_KPA), 0.5e6, rel_tol=1e-15)
    assert math.isclose(dry_standard_flow(1.0e6, 0.0, 2 * K.P0_KPA, 0.0, 273.0, K.P0_KPA), 2.0e6, rel_tol=1e-15)


def test_eu_t0_differs_from_china_t0():
    china = dry_standard_flow(1.0e6, 50.0, 101.325, 10.0, K.T0_K_CHINA, K.P0_KPA)
    eu = dry_standard_flow(1.0e6, 50.0, 101.325, 10.0, K.T0_K_EU, K.P0_KPA)
    assert math.isclose(china, 1.0e6 * 273.0 / 323.0 * 0.9, rel_tol=1e-14)
    assert math.isclose(eu, 1.0e6 * 273.15 / 323.15 * 0.9, rel_tol=1e-14)
    assert eu > china


def test_wet_standard_to_dry():
    assert math.isclose(wet_standard_to_dry(1.0e6, 10.0), 0.9e6, rel_tol=1e-15)
    assert wet_standard_to_dry(1.0e6, 0.0) == 1.0e6


def test_co2_wet_to_dry_is_hj_eq19():
    assert math.isclose(co2_wet_to_dry(10.8, 10.0), 12.0, rel_tol=1e-15)
    assert co2_wet_to_dry(12.0, 0.0) == 12.0
    assert math.isclose(co2_wet_to_dry(9.0, 25.0), 12.0, rel_tol=1e-15)


def test_mass_rate_units():
    # 200,000 mg/m3 x 1e6 m3/h = 2e11 mg/h = 200,000 kg/h
    assert math.isclose(mass_rate_kg_h(2.0e5, 1.0e6), 2.0e5, rel_tol=1e-15)


def test_formulas_work_elementwise_on_arrays():
    v = np.array([5.0, 15.0, 25.0])
    q = actual_flow_from_velocity(v, 30.0, 1.0)
    np.testing.assert_array_equal(q, 3600.0 * 30.0 * v)
    t = np.array([20.0, 50.0, 120.0])
    qsn = dry_standard_flow(q, t, 101.025, 10.0, 273.0, 101.325)
    for i in range(3):
        assert qsn[i] == dry_standard_flow(float(q[i]), float(t[i]), 101.025, 10.0, 273.0, 101.325)
    cq = co2_mass_concentration(np.array([10.0, 12.0]), 1.977)
    np.testing.assert_allclose(cq, [197_700.0, 237_240.0], rtol=1e-15)
    np.testing.assert_allclose(co2_wet_to_dry(np.array([9.0, 10.8]), np.array([10.0, 10.0])), [10.0, 12.0],
                               rtol=1e-15)
    np.testing.assert_allclose(mass_rate_kg_h(cq, np.array([1.0e6, 2.0e6])), [197_700.0, 474_480.0], rtol=1e-15)


def test_nan_propagates():
    assert math.isnan(dry_standard_flow(math.nan, 50.0, 101.0, 10.0, 273.0, 101.325))
    assert math.isnan(co2_wet_to_dry(12.0, math.nan))
    assert math.isnan(mass_rate_kg_h(math.nan, 1.0))
