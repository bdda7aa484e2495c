"""Plain NumPy / Python references for every kernel: the same maths, written for reading, not speed.

Tests check the numba kernels against these on worked examples and random streams; the benchmarks use
them as the "plain NumPy" baseline.
"""

import math
from fractions import Fraction

import numpy as np

from .channels import CO2, FLAG_CODE, FLAG_UNKNOWN, FLOW, H2O, PRESS, TEMP, VELOCITY
from .hour import H_STOPPED, MEASURED, MISSING, SUBSTITUTED
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
