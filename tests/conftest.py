"""Shared test helpers."""

import math


def qsn_closed_form(flow_m3h: float, temp_c: float, press_kpa: float, h2o_pct: float, t0_k: float = 273.0) -> float:
    """DESIGN §4 written out again, independently of the code under test."""
    return flow_m3h * t0_k / (t0_k + temp_c) * press_kpa / 101.325 * (1 - h2o_pct / 100)


def rate_kg_h_closed_form(values: dict, area_m2: float | None = None, kv: float = 1.0) -> float:
    flow = 3600 * area_m2 * kv * values["velocity_ms"] if area_m2 else values["flow_m3h"]
    qsn = qsn_closed_form(flow, values["temp_c"], values["press_kpa"], values["h2o_pct"])
    return values["co2_pct"] * 1e4 * 44.01 / 22.4 * qsn * 1e-6


def close(a: float | None, b: float, rel: float = 1e-9) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=rel)
