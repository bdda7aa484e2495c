"""Hour status resolution and missing-data substitution over one stack's hourly series (DESIGN §4).

Input: the stack's consecutive hours, oldest first, each with its base status from the hour kernel
(`hour.MEASURED`, `H_STOPPED`, `SUBSTITUTED` = operating but too few valid minutes, or `EMPTY` = no
minute figures at all) and, for measured hours, the hourly concentration and flow (in the regime's units).

Output per hour: final status (`MEASURED`, `H_STOPPED`, `SUBSTITUTED`, `MISSING`), operating minutes,
the concentration and flow to use, the method code, and whether the value is provisional.

Empty hours (DESIGN §4): inside a run of operation they are operating (60 min) and substituted; between
stopped hours they are stopped; after the last hour with data they stay `MISSING` until data arrives.
An empty hour between a stopped and an operating hour is substituted (the conservative choice; the
design is silent on it).

Part 75 (40 CFR 75.31-75.35; DESIGN §4), concentration and flow substituted separately from the stack's
own measured hours, with the state as it was before the gap:
- fewer than 720 measured hours so far: the average of the hour before and the hour after (HBHA);
- PMA = measured / operating hours over the last 8,760 operating hours;
  PMA >= 95 %: gap <= 24 h HBHA, longer the greater of HBHA and the 90th percentile of the lookback
  (720 measured hours for concentration, 2,160 for flow); 90-95 %: the same with 8 h and the 95th
  percentile; 80-90 %: the lookback maximum; below 80 %: the maximum potential value (the lookback
  maximum where none is configured);
- until the gap has ended, the hour before stands in for the average (provisional). The hour after is
  the first measured hour after the gap, past stopped hours and any later gap.
EU MRR (2018/2066 Annex VIII section 4, eq. 4): concentration = mean + 2 sigma (sample standard
deviation) of the reporting period's (local calendar year's) measured hours before the gap, flow = their
mean; a gap that runs into the next year keeps the value of the year it started in.
Percentiles interpolate linearly between ranks (NumPy's default).
"""

import numpy as np

from .hour import H_STOPPED, MEASURED, MISSING, SUBSTITUTED
from .jit import kernel

EMPTY = 4  # base status of an hour without any minute figure
POLICY_PART75, POLICY_EU_MRR = 0, 1
POLICIES = ("part75", "eu_mrr")
M_NONE, M_HBHA, M_P90, M_P95, M_MAX, M_MPV, M_MRR = 0, 1, 2, 3, 4, 5, 6
METHOD_NAMES = ("", "HBHA", "P90", "P95", "MAX", "MPV", "MRR")
INITIAL_MEASURED_HOURS = 720  # 75.31(b)
PMA_WINDOW_HOURS = 8760
LOOKBACK_CONC_HOURS = 720
LOOKBACK_FLOW_HOURS = 2160


@kernel
def _resolve(base, op_min, status, op_out):
    n = base.shape[0]
    prev_kind = -1
    for i in range(n):
        if base[i] != EMPTY:
            status[i] = base[i]
            op_out[i] = op_min[i]
            prev_kind = base[i]
            continue
        nxt = -1
        for k in range(i + 1, n):
            if base[k] != EMPTY:
                nxt = base[k]
                break
        if nxt == -1:
            status[i] = MISSING
            op_out[i] = 0
        elif (prev_kind == H_STOPPED or prev_kind == -1) and nxt == H_STOPPED:
            status[i] = H_STOPPED
            op_out[i] = 0
        else:
            status[i] = SUBSTITUTED
            op_out[i] = 60


@kernel
def _hbha(hb, ha, ended):
    if ended:
        if np.isnan(hb):
            return ha
        return (hb + ha) / 2.0
    return hb


@kernel
def _greater(a, b):
    if np.isnan(a):
        return b
    if np.isnan(b):
        return a
    return max(a, b)


@kernel
def _substitute(base, conc, flow, op_min, period, policy, mpv_conc, mpv_flow, status, op_out, conc_out,
                flow_out, method, provisional):
    n = base.shape[0]
    _resolve(base, op_min, status, op_out)
    pma_ring = np.zeros(PMA_WINDOW_HOURS, np.int64)
    pma_pos = 0
    pma_count = 0
    pma_sum = 0
    c_ring = np.empty(LOOKBACK_CONC_HOURS)
    f_ring = np.empty(LOOKBACK_FLOW_HOURS)
    c_pos = 0
    c_count = 0
    f_pos = 0
    f_count = 0
    measured_total = 0
    hb_c = np.nan
    hb_f = np.nan
    cur_period = -1
    p_n = 0
    p_mean = 0.0  # Welford's running mean and sum of squared deviations: exact for constant values
    p_m2 = 0.0
    p_fsum = 0.0
    i = 0
    while i < n:
        s = status[i]
        if period[i] != cur_period:
            cur_period = period[i]
            p_n = 0
            p_mean = p_m2 = p_fsum = 0.0
        if s == MEASURED:
            c, f = conc[i], flow[i]
            conc_out[i], flow_out[i] = c, f
            method[i] = M_NONE
            provisional[i] = False
            measured_total += 1
            hb_c, hb_f = c, f
            c_ring[c_pos] = c
            c_pos = (c_pos + 1) % LOOKBACK_CONC_HOURS
            c_count = min(c_count + 1, LOOKBACK_CONC_HOURS)
            f_ring[f_pos] = f
            f_pos = (f_pos + 1) % LOOKBACK_FLOW_HOURS
            f_count = min(f_count + 1, LOOKBACK_FLOW_HOURS)
            if pma_count == PMA_WINDOW_HOURS:
                pma_sum -= pma_ring[pma_pos]
            else:
                pma_count += 1
            pma_ring[pma_pos] = 1
            pma_sum += 1
            pma_pos = (pma_pos + 1) % PMA_WINDOW_HOURS
            p_n += 1
            delta = c - p_mean
            p_mean += delta / p_n
            p_m2 += delta * (c - p_mean)
            p_fsum += f
            i += 1
            continue
        if s != SUBSTITUTED:
            conc_out[i] = flow_out[i] = np.nan
            method[i] = M_NONE
            provisional[i] = s == MISSING
            i += 1
            continue
        # A gap: the run of substituted hours from i to j (exclusive).
        j = i
        while j < n and status[j] == SUBSTITUTED:
            j += 1
        # The hour after: the first measured hour, past stopped hours and any later gap.
        k = j
        while k < n and (status[k] == H_STOPPED or status[k] == SUBSTITUTED):
            k += 1
        ended = k < n and status[k] == MEASURED
        ha_c = conc[k] if ended else np.nan
        ha_f = flow[k] if ended else np.nan
        gap = j - i
        hc = _hbha(hb_c, ha_c, ended)
        hf = _hbha(hb_f, ha_f, ended)
        if policy == POLICY_EU_MRR and p_n > 0:
            var = p_m2 / (p_n - 1) if p_n > 1 else 0.0
            sc = p_mean + 2.0 * np.sqrt(max(var, 0.0))
            sf = p_fsum / p_n
            m = M_MRR
        elif policy == POLICY_EU_MRR or measured_total < INITIAL_MEASURED_HOURS:
            sc, sf, m = hc, hf, M_HBHA
        else:
            pma = 100.0 * pma_sum / pma_count if pma_count > 0 else 100.0
            if pma >= 90.0:
                # 75.33(b): PMA >= 95 %: HBHA up to 24 h, else the greater of HBHA and the 90th percentile;
                # 90-95 %: up to 8 h, else the 95th percentile.
                longest, pct, code = (24, 90.0, M_P90) if pma >= 95.0 else (8, 95.0, M_P95)
                if gap <= longest:
                    sc, sf, m = hc, hf, M_HBHA
                else:
                    sc = _greater(hc, np.percentile(c_ring[:c_count], pct))
                    sf = _greater(hf, np.percentile(f_ring[:f_count], pct))
                    m = code
            elif pma >= 80.0 or not (np.isfinite(mpv_conc) and np.isfinite(mpv_flow)):
                sc, sf, m = np.max(c_ring[:c_count]), np.max(f_ring[:f_count]), M_MAX
            else:
                sc, sf, m = mpv_conc, mpv_flow, M_MPV
        for t in range(i, j):
            conc_out[t], flow_out[t] = sc, sf
            method[t] = m
            provisional[t] = not ended
            if pma_count == PMA_WINDOW_HOURS:
                pma_sum -= pma_ring[pma_pos]
            else:
                pma_count += 1
            pma_ring[pma_pos] = 0
            pma_pos = (pma_pos + 1) % PMA_WINDOW_HOURS
        i = j


def substitute(base, conc, flow, op_min, period, policy: int = POLICY_PART75, mpv_conc: float = np.nan,
               mpv_flow: float = np.nan):
    """Resolve statuses and substitute one stack's consecutive hours.

    Parameters
    ----------
    base : int8 (n,) base status per hour (`MEASURED`, `H_STOPPED`, `SUBSTITUTED`, `EMPTY`)
    conc, flow : float64 (n,) measured hourly concentration and flow (regime units), NaN unless measured
    op_min : int64 (n,) operating minutes from the hour kernel
    period : int64 (n,) reporting-period id per hour (the local calendar year), for `eu_mrr`
    policy : `POLICY_PART75` or `POLICY_EU_MRR`
    mpv_conc, mpv_flow : maximum potential values in the same units (NaN where not configured)

    Returns
    -------
    status int8, op_min int64, conc float64, flow float64, method int8, provisional bool — per hour.
    """
    n = len(base)
    status = np.empty(n, np.int8)
    op_out = np.empty(n, np.int64)
    conc_out = np.empty(n)
    flow_out = np.empty(n)
    method = np.empty(n, np.int8)
    provisional = np.empty(n, np.bool_)
    _substitute(np.asarray(base, np.int8), np.asarray(conc, np.float64), np.asarray(flow, np.float64),
                np.asarray(op_min, np.int64), np.asarray(period, np.int64), policy, float(mpv_conc),
                float(mpv_flow), status, op_out, conc_out, flow_out, method, provisional)
    return status, op_out, conc_out, flow_out, method, provisional
