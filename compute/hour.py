"""Hour figures from minute figures (DESIGN §4): operating minutes, the 75 % rule, hour mass."""

from dataclasses import dataclass

import numpy as np

from .formulas import mass_rate_kg_h
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
    co2_mg_m3: np.ndarray  # mean CQ of valid minutes; NaN until substituted when not measured
    qsn_m3_h: np.ndarray  # mean Qsn of valid minutes
    rate_kg_h: np.ndarray
    mass_t: np.ndarray  # rate x operating minutes / 60 / 1000; 0 when stopped


@kernel
def _hours(offsets, group_stack, minute_status, cq, qsn, min_valid_pct, valid_out, stopped_out, op_out,
           status, cqh, qsnh, rate, mass):
    for g in range(offsets.shape[0] - 1):
        nv = 0
        ns = 0
        s_cq = 0.0
        s_qsn = 0.0
        for i in range(offsets[g], offsets[g + 1]):
            if minute_status[i] == STOPPED:
                ns += 1
            elif minute_status[i] == VALID:
                nv += 1
                s_cq += cq[i]
                s_qsn += qsn[i]
        op = MINUTES_PER_HOUR - ns
        valid_out[g], stopped_out[g], op_out[g] = nv, ns, op
        cqh[g] = s_cq / nv if nv > 0 else np.nan
        qsnh[g] = s_qsn / nv if nv > 0 else np.nan
        # ceil(pct/100 * op) in integers, so 45 of 60 is exact (HJ 212-2017 eq. 24).
        need = (min_valid_pct[group_stack[g]] * op + 99) // 100
        if op == 0:
            status[g] = H_STOPPED
            rate[g] = 0.0
            mass[g] = 0.0
        elif nv >= need:
            status[g] = MEASURED
            rate[g] = mass_rate_kg_h(cqh[g], qsnh[g])
            mass[g] = rate[g] * op / 60.0 / 1000.0
        else:
            status[g] = SUBSTITUTED
            rate[g] = np.nan
            mass[g] = np.nan


def hour_figures(offsets, group_stack, minute_status, co2_mg_m3, qsn_m3_h, min_valid_pct) -> HourFigures:
    """Figures for groups of minute figures, each group one stack's hour (at most 60 minutes).

    Parameters
    ----------
    offsets : int64 (groups + 1,) minutes of group g are ``offsets[g]:offsets[g + 1]``
    group_stack : int64 (groups,) stack row of each group
    minute_status : int8 minute status (`validity.VALID`, `STOPPED`, `INVALID`)
    co2_mg_m3, qsn_m3_h : float64 minute CQ [mg/m3] and Qsn [m3/h]
    min_valid_pct : int64 (stacks,) share of operating minutes that must be valid [%] (75 china, 80 eu)

    Notes
    -----
    Minutes with no figure count as operating and not valid. ``Gh = CQh * Qsnh * 1e-6`` [kg/h] over the
    valid minutes (HJ 212-2017 eq. 33); hour mass [t] = Gh x operating minutes / 60 / 1000. An hour
    below the valid-minute rule is `SUBSTITUTED`: its figures stay NaN here and substitution fills them.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    g = offsets.shape[0] - 1
    out = HourFigures(
        valid_min=np.empty(g, np.int64), stopped_min=np.empty(g, np.int64), op_min=np.empty(g, np.int64),
        status=np.empty(g, np.int8), co2_mg_m3=np.empty(g), qsn_m3_h=np.empty(g), rate_kg_h=np.empty(g),
        mass_t=np.empty(g),
    )
    _hours(offsets, np.asarray(group_stack, dtype=np.int64), np.asarray(minute_status, dtype=np.int8),
           np.asarray(co2_mg_m3, dtype=np.float64), np.asarray(qsn_m3_h, dtype=np.float64),
           np.asarray(min_valid_pct, dtype=np.int64), out.valid_min, out.stopped_min, out.op_min,
           out.status, out.co2_mg_m3, out.qsn_m3_h, out.rate_kg_h, out.mass_t)
    return out
