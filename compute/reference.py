"""Plain NumPy / Python references for every kernel: the same maths, written for reading, not speed.

Tests check the numba kernels against these on worked examples and random streams; the benchmarks use
them as the "plain NumPy" baseline.
"""

import math
from fractions import Fraction

import numpy as np

from .channels import CO2, FLAG_CODE, FLAG_UNKNOWN, FLOW, H2O, PRESS, TEMP, VELOCITY
from .hour import H_STOPPED, MEASURED, MISSING, SUBSTITUTED
from .substitution import (
    EMPTY,
    INITIAL_MEASURED_HOURS,
    LOOKBACK_CONC_HOURS,
    LOOKBACK_FLOW_HOURS,
    M_HBHA,
    M_MAX,
    M_MPV,
    M_MRR,
    M_P90,
    M_P95,
    PMA_WINDOW_HOURS,
    POLICY_EU_MRR,
    POLICY_PART75,
)
from .validity import INVALID, REASON_FLAG, REASON_RANGE_SHIFT, REASON_UNKNOWN_FLAG, STOPPED, VALID


def classify_readings(values, flags, stack_idx, cal_a, cal_b, lo, hi, required):
    s = np.asarray(stack_idx)
    y = cal_a[s] + cal_b[s] * values
    finite = np.isfinite(y)
    with np.errstate(invalid="ignore"):
        out_of_range = finite & ((y < lo[s]) | (y > hi[s]))
    req = required[s]
    bits = np.zeros(len(y), dtype=np.int64)
    for j in range(y.shape[1]):
        bits |= np.where(req[:, j] & ~finite[:, j], 1 << j, 0)
        bits |= np.where(req[:, j] & out_of_range[:, j], 1 << (REASON_RANGE_SHIFT + j), 0)
    flags = np.asarray(flags)
    bits |= np.where(flags == FLAG_UNKNOWN, REASON_UNKNOWN_FLAG, 0)
    ok_flag = (flags == FLAG_CODE["N"]) | (flags == FLAG_CODE["T"]) | (flags == FLAG_UNKNOWN)
    bits |= np.where(~ok_flag & (flags != FLAG_CODE["F"]), REASON_FLAG, 0)
    stopped = flags == FLAG_CODE["F"]
    bits[stopped] = 0
    validity = np.where(stopped, STOPPED, np.where(bits == 0, VALID, INVALID)).astype(np.int8)
    return y, validity, bits.astype(np.int32)


def minute_figure(validity, values, area_m2, kv, flow_basis, co2_wet, density, min_samples, t0_k, p0_kpa):
    """One minute of one stack, as a dict. flow_basis 0 actual wet, 1 std wet, 2 std dry."""
    n = len(validity)
    n_valid = int(np.sum(validity == VALID))
    n_stopped = int(np.sum(validity == STOPPED))
    v = values[validity == VALID]
    with np.errstate(invalid="ignore"):
        means = np.array([np.mean(v[np.isfinite(v[:, j]), j]) if np.isfinite(v[:, j]).any() else np.nan
                          for j in range(values.shape[1])])
    if 2 * n_stopped > n:
        status = STOPPED
    elif n_valid >= min_samples:
        status = VALID
    else:
        status = INVALID
    fig = dict(n=n, n_valid=n_valid, n_stopped=n_stopped, status=status, means=means, qs=math.nan,
               qsn=math.nan, co2_dry=math.nan, cq=math.nan, rate=math.nan,
               mass=0.0 if status == STOPPED else math.nan)
    if status != VALID:
        return fig
    h2o = means[H2O]
    qs = 3600.0 * area_m2 * kv * means[VELOCITY] if not math.isnan(area_m2) else means[FLOW]
    if flow_basis == 0:
        qsn = qs * t0_k / (t0_k + means[TEMP]) * means[PRESS] / p0_kpa * (1 - h2o / 100)
    elif flow_basis == 1:
        qsn = qs * (1 - h2o / 100)
    else:
        qsn = qs
    co2 = means[CO2] / (1 - h2o / 100) if co2_wet else means[CO2]
    cq = co2 * 1e4 * density
    rate = cq * qsn * 1e-6
    fig.update(qs=qs, qsn=qsn, co2_dry=co2, cq=cq, rate=rate, mass=rate / 60)
    return fig


def hour_figure(minute_status, cq, qsn, min_valid_pct):
    minute_status = np.asarray(minute_status)
    valid = minute_status == VALID
    nv = int(valid.sum())
    ns = int(np.sum(minute_status == STOPPED))
    op = 60 - ns
    cqh = float(np.mean(np.asarray(cq)[valid])) if nv else math.nan
    qsnh = float(np.mean(np.asarray(qsn)[valid])) if nv else math.nan
    if op == 0:
        return dict(valid=nv, stopped=ns, op=op, status=H_STOPPED, cq=cqh, qsn=qsnh, rate=0.0, mass=0.0)
    if nv >= math.ceil(min_valid_pct * op / 100):
        rate = cqh * qsnh * 1e-6
        return dict(valid=nv, stopped=ns, op=op, status=MEASURED, cq=cqh, qsn=qsnh, rate=rate,
                    mass=rate * op / 60 / 1000)
    return dict(valid=nv, stopped=ns, op=op, status=SUBSTITUTED, cq=cqh, qsn=qsnh, rate=math.nan,
                mass=math.nan)


def day_figure(hour_status, hour_mass_t, hour_final, valid_measured_hours=20):
    st = np.asarray(hour_status)
    m = np.asarray(hour_mass_t, dtype=float)
    counted = ((st == MEASURED) | (st == SUBSTITUTED)) & np.isfinite(m)
    a, b = int(np.sum(st == MEASURED)), int(np.sum(st == SUBSTITUTED))
    return dict(mass=float(m[counted].sum()), measured=a, substituted=b, stopped=int(np.sum(st == H_STOPPED)),
                missing=int(np.sum(st == MISSING)), valid=a >= Fraction(valid_measured_hours, 24) * (a + b),
                final=bool(np.all(hour_final)))


def _resolve_hour(base, i):
    """Status and operating minutes of hour i from the base statuses (substitution.py, DESIGN §4)."""
    if base[i] != EMPTY:
        return int(base[i]), None
    known = np.flatnonzero(base != EMPTY)
    before = known[known < i]
    after = known[known > i]
    if len(after) == 0:
        return MISSING, 0  # after the last hour with data
    prev_kind = int(base[before[-1]]) if len(before) else None
    next_kind = int(base[after[0]])
    # Kernel's choice where DESIGN §4 is silent: with no hour before, the empty hour takes the side of the hour
    # after; between a stopped and an operating hour (either order) it is operating and substituted.
    if prev_kind in (None, H_STOPPED) and next_kind == H_STOPPED:
        return H_STOPPED, 0
    return SUBSTITUTED, 60


def _hour_after(status, j):
    """The first measured hour at or after j, or None if the series runs out or turns missing first.

    Stopped hours are skipped (DESIGN §4: the hour after the gap). So are further substituted hours after a stop
    (gap, stop, gap, measured): the first gap has ended once the stack measures again, and its hour after is that
    measured hour. The kernel (substitution.py `ended`) stops at the second gap and leaves the first one provisional
    with the hour before for good; tests/compute/test_substitution.py reports that as a kernel defect.
    """
    for k in range(j, len(status)):
        if status[k] == MEASURED:
            return k
        if status[k] == MISSING:
            return None
    return None


def _hbha(conc, flow, hb, ha):
    """Mean of the hour before and the hour after; the hour after alone with no hour before (the kernel's choice);
    the hour before alone until the gap has ended (provisional); NaN with neither."""
    if ha is None:
        return (conc[hb], flow[hb]) if hb is not None else (math.nan, math.nan)
    if hb is None:
        return conc[ha], flow[ha]
    return (conc[hb] + conc[ha]) / 2.0, (flow[hb] + flow[ha]) / 2.0


def _gap_value(status, conc, flow, period, i, j, policy, mpv_conc, mpv_flow):
    """(conc, flow, method, provisional) for the gap of substituted hours i..j-1, from the history before i."""
    measured = np.flatnonzero(status[:i] == MEASURED)
    hb = int(measured[-1]) if len(measured) else None
    ha = _hour_after(status, j)
    hc, hf = _hbha(conc, flow, hb, ha)
    provisional = ha is None
    if policy == POLICY_EU_MRR:
        # MRR Annex VIII eq. 4 over the measured hours before the gap in the period of the gap's first hour (periods
        # are local calendar years, so they only increase). Kernel's choice: a gap running into the next period keeps
        # that value for all its hours.
        same = measured[period[measured] == period[i]]
        if len(same) == 0:
            return hc, hf, M_HBHA, provisional  # nothing measured in this period yet (the kernel's choice)
        c = conc[same]
        sd = float(np.std(c, ddof=1)) if len(c) > 1 else 0.0
        return float(np.mean(c)) + 2.0 * sd, float(np.mean(flow[same])), M_MRR, provisional
    if len(measured) < INITIAL_MEASURED_HOURS:
        return hc, hf, M_HBHA, provisional
    operating = np.flatnonzero((status[:i] == MEASURED) | (status[:i] == SUBSTITUTED))[-PMA_WINDOW_HOURS:]
    pma = Fraction(int(np.sum(status[operating] == MEASURED)), len(operating)) * 100
    look_c = conc[measured[-LOOKBACK_CONC_HOURS:]]
    look_f = flow[measured[-LOOKBACK_FLOW_HOURS:]]
    gap = j - i  # while the gap is open: its length so far (the kernel's choice)
    if pma >= 90:
        short, q, m = (24, 90, M_P90) if pma >= 95 else (8, 95, M_P95)
        if gap <= short:
            return hc, hf, M_HBHA, provisional
        # hb exists here (>= 720 measured hours), so hc and hf are numbers
        return (max(hc, float(np.percentile(look_c, q))), max(hf, float(np.percentile(look_f, q))), m,
                provisional)
    if pma >= 80 or not (math.isfinite(mpv_conc) and math.isfinite(mpv_flow)):
        # Kernel's choice: the lookback maximum for both unless both maximum potential values are configured.
        return float(np.max(look_c)), float(np.max(look_f)), M_MAX, provisional
    return float(mpv_conc), float(mpv_flow), M_MPV, provisional


def substitute(base, conc, flow, op_min, period, policy=POLICY_PART75, mpv_conc=math.nan, mpv_flow=math.nan):
    """Hour status resolution and substitution of one stack's consecutive hours (substitution.py, DESIGN §4).

    Each gap (a run of consecutive substituted hours) is worked out from scratch from the hours before it.
    Returns status, op_min, conc, flow, method, provisional as the kernel does.
    """
    base = np.asarray(base, np.int8)
    conc = np.asarray(conc, np.float64)
    flow = np.asarray(flow, np.float64)
    op_min = np.asarray(op_min, np.int64)
    period = np.asarray(period, np.int64)
    n = len(base)
    status = np.empty(n, np.int8)
    op_out = np.empty(n, np.int64)
    for i in range(n):
        s, op = _resolve_hour(base, i)
        status[i] = s
        op_out[i] = op_min[i] if op is None else op
    conc_out = np.full(n, np.nan)
    flow_out = np.full(n, np.nan)
    method = np.zeros(n, np.int8)
    provisional = status == MISSING
    measured = status == MEASURED
    conc_out[measured] = conc[measured]
    flow_out[measured] = flow[measured]
    i = 0
    while i < n:
        if status[i] != SUBSTITUTED:
            i += 1
            continue
        j = i
        while j < n and status[j] == SUBSTITUTED:
            j += 1
        c, f, m, prov = _gap_value(status, conc, flow, period, i, j, policy, mpv_conc, mpv_flow)
        conc_out[i:j], flow_out[i:j], method[i:j], provisional[i:j] = c, f, m, prov
        i = j
    return status, op_out, conc_out, flow_out, method, provisional
