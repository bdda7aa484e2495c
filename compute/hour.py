"""Hour figures from minute figures (DESIGN §4): operating minutes, the valid-minute rule, hour mass."""

from dataclasses import dataclass

import numpy as np

from .jit import kernel
from .validity import STOPPED, VALID

MEASURED, H_STOPPED, SUBSTITUTED, MISSING = 0, 1, 2, 3
HOUR_STATUS_NAMES = ("measured", "stopped", "substituted", "missing")
MINUTES_PER_HOUR = 60


@dataclass(frozen=True)
class HourFigures:
    valid_min: np.ndarray  # int64
    stopped_min: np.ndarray  # int64
    op_min: np.ndarray  # int64 operating minutes = 60 - stopped minutes
    status: np.ndarray  # int8 MEASURED, H_STOPPED or SUBSTITUTED
    conc: np.ndarray  # mean concentration of valid minutes (CQ mg/m3, or wet CO2 % for us_part75)
    flow: np.ndarray  # mean flow of valid minutes (Qsn m3/h, or wet standard scfh for us_part75)
    rate_kg_h: np.ndarray  # NaN until substituted when not measured
    mass_t: np.ndarray  # rate x operating minutes / 60 / 1000; 0 when stopped

    @property
    def co2_mg_m3(self) -> np.ndarray:
        return self.conc

    @property
    def qsn_m3_h(self) -> np.ndarray:
        return self.flow


@kernel
def _hours(offsets, group_stack, minute_status, minute_idx, conc, flow, min_valid_pct, rate_factor, quadrant_rule,
           valid_out, stopped_out, op_out, status, conc_h, flow_h, rate, mass):
    q_valid = np.zeros(4, np.int64)
    q_stopped = np.zeros(4, np.int64)
    for g in range(offsets.shape[0] - 1):
        s = group_stack[g]
        nv = 0
        ns = 0
        s_c = 0.0
        s_f = 0.0
        q_valid[:] = 0
        q_stopped[:] = 0
        for i in range(offsets[g], offsets[g + 1]):
            q = minute_idx[i] // 15
            if minute_status[i] == STOPPED:
                ns += 1
                q_stopped[q] += 1
            elif minute_status[i] == VALID:
                nv += 1
                q_valid[q] += 1
                s_c += conc[i]
                s_f += flow[i]
        op = MINUTES_PER_HOUR - ns
        valid_out[g], stopped_out[g], op_out[g] = nv, ns, op
        conc_h[g] = s_c / nv if nv > 0 else np.nan
        flow_h[g] = s_f / nv if nv > 0 else np.nan
        if quadrant_rule[s]:
            # 40 CFR 75.10(d)(1): a valid value in every quarter-hour in which the unit operated.
            ok = nv > 0
            for q in range(4):
                if q_stopped[q] < 15 and q_valid[q] == 0:
                    ok = False
        else:
            # ceil(pct/100 * op) in integers, so 45 of 60 is exact (HJ 212-2017 eq. 24).
            ok = nv >= (min_valid_pct[s] * op + 99) // 100
        if op == 0:
            status[g] = H_STOPPED
            rate[g] = 0.0
            mass[g] = 0.0
        elif ok:
            status[g] = MEASURED
            rate[g] = conc_h[g] * flow_h[g] * rate_factor[s]
            mass[g] = rate[g] * op / 60.0 / 1000.0
        else:
            status[g] = SUBSTITUTED
            rate[g] = np.nan
            mass[g] = np.nan


def hour_figures(offsets, group_stack, minute_status, conc, flow, min_valid_pct, rate_factor=None, minute_idx=None,
                 quadrant_rule=None) -> HourFigures:
    """Figures for groups of minute figures, each group one stack's hour (at most 60 minutes).

    Parameters
    ----------
    offsets : int64 (groups + 1,) minutes of group g are ``offsets[g]:offsets[g + 1]``
    group_stack : int64 (groups,) stack row of each group
    minute_status : int8 minute status (`validity.VALID`, `STOPPED`, `INVALID`)
    conc, flow : float64 minute concentration and flow in the regime's units (CQ [mg/m3] and Qsn [m3/h]
        for china and eu; wet CO2 [%] and wet standard flow [scfh] for us_part75)
    min_valid_pct : int64 (stacks,) share of operating minutes that must be valid [%] (75 china, 80 eu)
    rate_factor : float64 (stacks,) kg/h per conc x flow (default 1e-6: mg/m3 x m3/h)
    minute_idx : int64 minute of the hour (0-59) of each minute figure (needed by the quadrant rule)
    quadrant_rule : bool (stacks,) judge the hour by Part 75's quadrant rule instead of the share

    Notes
    -----
    Minutes with no figure count as operating and not valid. The hour rate is the mean concentration times
    the mean flow of the valid minutes times `rate_factor` (``Gh = CQh * Qsnh * 1e-6`` kg/h, HJ 212-2017
    eq. 33; ``E = K * CO2w * Q``, 40 CFR 75 App. F eq. F-11); hour mass [t] = rate x operating minutes /
    60 / 1000. An hour below the valid-minute rule is `SUBSTITUTED`: its figures stay NaN here and
    substitution fills them.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    group_stack = np.asarray(group_stack, dtype=np.int64)
    min_valid_pct = np.asarray(min_valid_pct, dtype=np.int64)
    stacks = min_valid_pct.shape[0]
    if rate_factor is None:
        rate_factor = np.full(stacks, 1e-6)
    if quadrant_rule is None:
        quadrant_rule = np.zeros(stacks, np.bool_)
    if minute_idx is None:
        minute_idx = np.zeros(len(np.asarray(minute_status)), np.int64)  # only the quadrant rule reads it
    g = offsets.shape[0] - 1
    out = HourFigures(
        valid_min=np.empty(g, np.int64), stopped_min=np.empty(g, np.int64), op_min=np.empty(g, np.int64),
        status=np.empty(g, np.int8), conc=np.empty(g), flow=np.empty(g), rate_kg_h=np.empty(g), mass_t=np.empty(g),
    )
    _hours(offsets, group_stack, np.asarray(minute_status, dtype=np.int8), np.asarray(minute_idx, dtype=np.int64),
           np.asarray(conc, dtype=np.float64), np.asarray(flow, dtype=np.float64), min_valid_pct,
           np.asarray(rate_factor, dtype=np.float64), np.asarray(quadrant_rule, dtype=np.bool_), out.valid_min,
           out.stopped_min, out.op_min, out.status, out.conc, out.flow, out.rate_kg_h, out.mass_t)
    return out
