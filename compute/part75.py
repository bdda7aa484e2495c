"""The figures `us_part75` reports, rounded the way EPA's ECMPS check engine recalculates (DESIGN §4).

HOURCV19: flow used in whole thousands of scfh; the hourly CO2 mass rate rounded to 0.1 short ton/h, half
away from zero; hour mass = that rounded rate x operating time (fraction of the hour); period totals =
round(sum(rate x op_time), 1); CO2 % to 0.1. The unrounded figures stay beside them (decision 0003).
"""

import math

import numpy as np

from .constants import K_PART75, KG_PER_SHORT_TON
from .formulas import part75_co2_rate_short_tons_h


def round_half_away(x: float, digits: int = 0) -> float:
    """Round half away from zero (Python's round() goes half to even, on binary floats)."""
    if not math.isfinite(x):
        return x
    q = 10.0 ** digits
    # The 1e-9 guard absorbs binary representation error of values that are exact halves in decimal.
    return math.copysign(math.floor(abs(x) * q + 0.5 + 1e-9) / q, x)


def part75_reported(co2_wet_pct: float, flow_scfh: float, op_time: float, stopped: bool = False) -> dict:
    """Reported hour figures [short tons, %, scfh] for one hour; NaN inputs give NaN figures."""
    if stopped:
        return {"co2_pct_reported": math.nan, "flow_scfh_reported": math.nan, "rate_short_tons_h": 0.0,
                "rate_short_tons_h_reported": 0.0, "mass_short_tons": 0.0, "mass_short_tons_reported": 0.0}
    flow_used = 1000.0 * round_half_away(flow_scfh / 1000.0)
    rate = part75_co2_rate_short_tons_h(co2_wet_pct, flow_scfh, K_PART75)
    rate_rep = round_half_away(part75_co2_rate_short_tons_h(co2_wet_pct, flow_used, K_PART75), 1)
    return {"co2_pct_reported": round_half_away(co2_wet_pct, 1), "flow_scfh_reported": flow_used,
            "rate_short_tons_h": rate, "rate_short_tons_h_reported": rate_rep,
            "mass_short_tons": rate * op_time, "mass_short_tons_reported": rate_rep * op_time}


def period_total_reported(rates_short_tons_h: np.ndarray, op_times: np.ndarray) -> float:
    """Reported period total [short tons] = round(sum(rate x op_time), 1) of the hours' reported rates."""
    return round_half_away(float(np.nansum(np.asarray(rates_short_tons_h) * np.asarray(op_times))), 1)


def short_tons_to_tonnes(short_tons: float) -> float:
    return short_tons * KG_PER_SHORT_TON / 1000.0
