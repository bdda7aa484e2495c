"""us_part75: F-11/F-2 through the minute and hour kernels, the quadrant rule, ECMPS reported rounding."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cems.compute.channels import CHANNELS, INDEX, N_CHANNELS
from cems.compute.constants import K_PART75, SCF_PER_M3
from cems.compute.hour import H_STOPPED, MEASURED, SUBSTITUTED, hour_figures
from cems.compute.minute import minute_figures
from cems.compute.params import StackParams, StackSpec, regime_constants
from cems.compute.part75 import part75_reported, period_total_reported, round_half_away, short_tons_to_tonnes
from cems.compute.validity import INVALID, STOPPED, VALID, classify_readings

EXAMPLES = {e["id"]: e for e in json.loads(
    (Path(__file__).resolve().parents[3] / "shared" / "data" / "worked_examples.json").read_text())["examples"]}
RANGES = {c.name: c.default_range for c in CHANNELS}


def us_stack(**kw) -> StackParams:
    spec = StackSpec(regime="us_part75", **regime_constants("us_part75"), **kw)
    return StackParams.build([spec], RANGES)


def minute_of(p: StackParams, **channels) -> object:
    values = np.full((12, N_CHANNELS), np.nan)
    for name, v in channels.items():
        values[:, INDEX[name]] = v
    c = classify_readings(values, np.zeros(12, np.int8), np.zeros(12, np.int64), p.cal_a, p.cal_b, p.lo, p.hi,
                          p.required)
    assert (c.validity == VALID).all(), c.reason
    return minute_figures(np.array([0, 12]), np.array([0]), c.validity, c.values, p)


def test_f11_wet_co2_and_wet_standard_flow():
    ex = EXAMPLES["us-f11"]
    q_m3_h = ex["inputs"]["flow_scfh_wet"] / SCF_PER_M3
    p = us_stack(flow_basis="std_wet", co2_basis="wet")
    f = minute_of(p, flow_m3h=q_m3_h, co2_pct=ex["inputs"]["co2_pct"])
    assert f.flow[0] == pytest.approx(ex["inputs"]["flow_scfh_wet"], rel=1e-12)
    assert f.rate_kg_h[0] / 907.18474 == pytest.approx(ex["outputs"]["rate_short_tons_h"], rel=1e-12)
    assert f.rate_kg_h[0] / 1000 == pytest.approx(ex["outputs"]["rate_t_h"], abs=1e-6)
    assert short_tons_to_tonnes(ex["outputs"]["rate_short_tons_h"]) == pytest.approx(ex["outputs"]["rate_t_h"],
                                                                                       abs=1e-6)


def test_f2_dry_co2_with_moisture():
    ex = EXAMPLES["us-f2"]
    p = us_stack(flow_basis="std_wet", co2_basis="dry")
    f = minute_of(p, flow_m3h=ex["inputs"]["flow_scfh_wet"] / SCF_PER_M3, co2_pct=ex["inputs"]["co2_pct"],
                  h2o_pct=ex["inputs"]["h2o_pct"])
    assert f.rate_kg_h[0] / 907.18474 == pytest.approx(ex["outputs"]["rate_short_tons_h"], rel=1e-12)
    rep = part75_reported(f.conc[0], f.flow[0], 1.0)
    assert rep["rate_short_tons_h_reported"] == ex["outputs"]["rate_short_tons_h_reported"]


def test_reported_rounding_example():
    ex = EXAMPLES["us-reported-rounding"]
    i = ex["inputs"]
    co2_wet = i["co2_pct"] * (100 - i["h2o_pct"]) / 100
    rep = part75_reported(co2_wet, i["flow_scfh_wet"], i["op_time"])
    assert rep["flow_scfh_reported"] == ex["outputs"]["flow_scfh_used"]
    assert rep["rate_short_tons_h"] == pytest.approx(ex["outputs"]["rate_short_tons_h_unrounded"], abs=5e-3)
    assert rep["rate_short_tons_h_reported"] == ex["outputs"]["rate_short_tons_h_reported"]
    assert rep["mass_short_tons_reported"] == pytest.approx(ex["outputs"]["hour_mass_short_tons_reported"], abs=1e-9)


def test_operating_time_weighted_total():
    ex = EXAMPLES["us-f12-optime"]
    rates, times = zip(*ex["inputs"]["hours"], strict=True)
    assert period_total_reported(np.array(rates), np.array(times)) == ex["outputs"]["total_short_tons"]


@pytest.mark.parametrize("x, digits, want", [(0.25, 1, 0.3), (-0.25, 1, -0.3), (0.35, 1, 0.4), (377.55, 1, 377.6),
                                             (60000.5, 0, 60001.0), (2.5, 0, 3.0), (-2.5, 0, -3.0), (1.24, 1, 1.2)])
def test_round_half_away_from_zero(x, digits, want):
    assert round_half_away(x, digits) == want


def test_actual_flow_is_brought_to_68F_and_29_92_inHg():
    p = us_stack(flow_basis="actual_wet", co2_basis="wet")
    f = minute_of(p, flow_m3h=1.0e6, co2_pct=10.0, temp_c=60.0, press_kpa=100.0)
    want_scfh = 1.0e6 * 293.15 / (293.15 + 60.0) * 100.0 / (29.92 * 3.386389) * SCF_PER_M3
    assert f.flow[0] == pytest.approx(want_scfh, rel=1e-12)
    assert f.rate_kg_h[0] == pytest.approx(K_PART75 * 10.0 * want_scfh * 907.18474, rel=1e-12)


def hour_of(statuses_by_minute: dict[int, int]):
    idx = np.array(sorted(statuses_by_minute), np.int64)
    st = np.array([statuses_by_minute[i] for i in idx], np.int8)
    n = len(idx)
    return hour_figures(np.array([0, n]), np.array([0]), st, np.full(n, 10.0), np.full(n, 6.0e7), np.array([0]),
                        np.array([K_PART75 * 907.18474]), idx, np.array([True]))


def test_quadrant_rule_one_valid_minute_per_quarter_is_enough():
    h = hour_of({0: VALID, 15: VALID, 30: VALID, 45: VALID})
    assert h.status[0] == MEASURED and h.valid_min[0] == 4 and h.op_min[0] == 60
    assert h.mass_t[0] == pytest.approx(K_PART75 * 10.0 * 6.0e7 * 907.18474 / 1000, rel=1e-12)


def test_quadrant_rule_a_quarter_without_a_valid_minute_fails():
    minutes = {m: VALID for m in range(45)} | {m: INVALID for m in range(45, 60)}
    assert hour_of(minutes).status[0] == SUBSTITUTED  # 45 of 60 would pass the china rule


def test_quadrant_rule_ignores_quarters_the_unit_did_not_operate():
    minutes = {m: STOPPED for m in range(30)} | {30: VALID, 50: VALID}
    h = hour_of(minutes)
    assert h.status[0] == MEASURED and h.op_min[0] == 30
    assert h.mass_t[0] == pytest.approx(K_PART75 * 10.0 * 6.0e7 * 907.18474 / 1000 / 2, rel=1e-12)
    assert hour_of({m: STOPPED for m in range(60)}).status[0] == H_STOPPED


def test_stopped_hour_reports_zero():
    rep = part75_reported(math.nan, math.nan, 0.0, stopped=True)
    assert rep["mass_short_tons_reported"] == 0.0
