"""Calibration and reading validity (DESIGN §4): applied to every reading before anything else."""

from dataclasses import dataclass

import numpy as np

from .channels import FLAG_CODE, FLAG_UNKNOWN, N_CHANNELS, NAMES
from .jit import kernel

VALID, STOPPED, INVALID = 0, 1, 2
VALIDITY_NAMES = ("valid", "stopped", "invalid")

# Reason bits: channel c missing or not finite -> bit c; out of range -> bit 8 + c; then the flag.
REASON_RANGE_SHIFT = 8
REASON_FLAG = 1 << 16  # an HJ 212 flag that makes the reading invalid (M, S, D, C, B)
REASON_UNKNOWN_FLAG = 1 << 17  # a status letter that is not an HJ 212 flag

_F = FLAG_CODE["F"]
_N = FLAG_CODE["N"]
_T = FLAG_CODE["T"]


@kernel
def _classify(values, flags, stack_idx, cal_a, cal_b, lo, hi, required, out, validity, reason):
    n, c = values.shape
    for i in range(n):
        s = stack_idx[i]
        r = 0
        for j in range(c):
            y = cal_a[s, j] + cal_b[s, j] * values[i, j]
            out[i, j] = y
            if not np.isfinite(y):
                if required[s, j]:
                    r |= 1 << j
            elif y < lo[s, j] or y > hi[s, j]:
                # Only the channels the CO2 mass needs decide validity; others are kept as sent.
                if required[s, j]:
                    r |= 1 << (REASON_RANGE_SHIFT + j)
        f = flags[i]
        if f == _F:
            validity[i] = STOPPED
            reason[i] = 0
            continue
        if f == FLAG_UNKNOWN:
            r |= REASON_UNKNOWN_FLAG
        elif f != _N and f != _T:
            r |= REASON_FLAG
        validity[i] = VALID if r == 0 else INVALID
        reason[i] = r


@dataclass(frozen=True)
class Classified:
    values: np.ndarray  # float64 (n, N_CHANNELS), calibrated; NaN where missing
    validity: np.ndarray  # int8 (n,): VALID, STOPPED or INVALID
    reason: np.ndarray  # int32 (n,): reason bits, 0 for valid and stopped readings


def classify_readings(values, flags, stack_idx, cal_a, cal_b, lo, hi, required) -> Classified:
    """Calibrate each channel (``y = a + b*x``, EN 14181 QAL2) and classify each reading.

    Parameters
    ----------
    values : float64 (n, N_CHANNELS) raw channel values, NaN where missing
    flags : int8 (n,) HJ 212 flag codes (`channels.FLAG_CODE`, `FLAG_UNKNOWN`)
    stack_idx : int64 (n,) row of each reading's stack in the per-stack arrays below
    cal_a, cal_b : float64 (stacks, N_CHANNELS) calibration offset and slope
    lo, hi : float64 (stacks, N_CHANNELS) inclusive valid range of the calibrated value
    required : bool (stacks, N_CHANNELS) channels a reading must carry to be valid

    Notes
    -----
    Valid: flag N or T and every required channel present, finite and in range. Stopped: flag F
    (whatever the channels say). Invalid: anything else, with the reasons as bits.
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    n = values.shape[0]
    out = np.empty_like(values)
    validity = np.empty(n, dtype=np.int8)
    reason = np.empty(n, dtype=np.int32)
    _classify(values, np.asarray(flags, dtype=np.int8), np.asarray(stack_idx, dtype=np.int64),
              np.asarray(cal_a, dtype=np.float64), np.asarray(cal_b, dtype=np.float64),
              np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64),
              np.asarray(required, dtype=np.bool_), out, validity, reason)
    return Classified(out, validity, reason)


def describe_reason(bits: int, flag: str = "") -> str:
    """Human-readable reasons for a reading's reason bits, e.g. ``"co2_pct missing; flag D"``."""
    parts = []
    for j in range(N_CHANNELS):
        if bits & (1 << j):
            parts.append(f"{NAMES[j]} missing or not finite")
        if bits & (1 << (REASON_RANGE_SHIFT + j)):
            parts.append(f"{NAMES[j]} out of range")
    if bits & REASON_FLAG:
        parts.append(f"flag {flag}" if flag else "flag not valid")
    if bits & REASON_UNKNOWN_FLAG:
        parts.append(f"status {flag!r} is not an HJ 212 flag")
    return "; ".join(parts)
