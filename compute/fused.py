"""The minute path in one pass over columnar readings: calibration, validity and minute figures fused.

Same results as `validity.classify_readings` followed by `minute.minute_figures` (tests check it), but it
reads each input once and writes only per-minute outputs, with each group's per-stack constants hoisted
out of the reading loop. Calibration leaves the loop too: the range test moves to the raw value
(`params.raw_bounds`, exact to the ulp) and, calibration being linear, a minute's sums are calibrated once.
Input is columnar: one contiguous float64 array per channel, as the benchmark and the decoder hold them.
"""

import numpy as np

from .channels import FLAG_CODE
from .jit import kernel
from .minute import MinuteFigures, finish_minutes
from .params import StackParams

_N, _T, _F = FLAG_CODE["N"], FLAG_CODE["T"], FLAG_CODE["F"]
# Sums of a minute's readings may be added in any order (reassociation lets LLVM vectorise the loop); the
# result differs from the two-pass path by rounding only (< 1e-15 relative), which the tests bound.
_FAST = {"reassoc", "nsz", "contract"}


@kernel
def _ok(y, lo, hi):
    # NaN fails both comparisons; `raw_bounds` are finite (or NaN: nothing passes), so +-inf fails one.
    return (y >= lo) & (y <= hi)


@kernel(fastmath=_FAST)
def _fused(cols, flags, offsets, group_stack, cal_a, cal_b, raw_lo, raw_hi, required, counts, nv_out, ns_out, sums):
    """The accumulating pass (`minute._finish_minutes` is the second): per group, valid and stopped readings,
    and the calibrated sum and count of each channel's values that the means take."""
    for g in range(offsets.shape[0] - 1):
        s = group_stack[g]
        l0, l1, l2, l3, l4, l5, l6 = raw_lo[s, 0], raw_lo[s, 1], raw_lo[s, 2], raw_lo[s, 3], raw_lo[s, 4], \
            raw_lo[s, 5], raw_lo[s, 6]
        h0, h1, h2, h3, h4, h5, h6 = raw_hi[s, 0], raw_hi[s, 1], raw_hi[s, 2], raw_hi[s, 3], raw_hi[s, 4], \
            raw_hi[s, 5], raw_hi[s, 6]
        r0, r1, r2, r3, r4, r5, r6 = required[s, 0], required[s, 1], required[s, 2], required[s, 3], \
            required[s, 4], required[s, 5], required[s, 6]
        n0, n1, n2, n3, n4, n5, n6 = not r0, not r1, not r2, not r3, not r4, not r5, not r6
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = 0.0
        c0 = c1 = c2 = c3 = c4 = c5 = c6 = 0
        nv = 0
        ns = 0
        start, end = offsets[g], offsets[g + 1]
        for i in range(start, end):
            f = flags[i]
            # raw values: the bounds already say whether the calibrated value passes
            y0, y1, y2, y3, y4, y5, y6 = cols[0, i], cols[1, i], cols[2, i], cols[3, i], cols[4, i], cols[5, i], \
                cols[6, i]
            k0, k1, k2, k3 = _ok(y0, l0, h0), _ok(y1, l1, h1), _ok(y2, l2, h2), _ok(y3, l3, h3)
            k4, k5, k6 = _ok(y4, l4, h4), _ok(y5, l5, h5), _ok(y6, l6, h6)
            valid = ((f == _N) | (f == _T)) & (k0 | n0) & (k1 | n1) & (k2 | n2) & (k3 | n3) & (k4 | n4) \
                & (k5 | n5) & (k6 | n6)
            ns += f == _F
            nv += valid
            # Means take the finite values of valid readings (a non-required channel may be out of range).
            # For a required channel k is its range check (which `valid` already passed); for any other it
            # is the finite check (`raw_bounds`), so the means take finite values only.
            f0, f1, f2, f3, f4, f5, f6 = valid & k0, valid & k1, valid & k2, valid & k3, valid & k4, valid & k5, \
                valid & k6
            s0 += y0 if f0 else 0.0
            s1 += y1 if f1 else 0.0
            s2 += y2 if f2 else 0.0
            s3 += y3 if f3 else 0.0
            s4 += y4 if f4 else 0.0
            s5 += y5 if f5 else 0.0
            s6 += y6 if f6 else 0.0
            c0 += f0
            c1 += f1
            c2 += f2
            c3 += f3
            c4 += f4
            c5 += f5
            c6 += f6
        counts[g, 0], counts[g, 1], counts[g, 2], counts[g, 3], counts[g, 4], counts[g, 5], counts[g, 6] = \
            c0, c1, c2, c3, c4, c5, c6
        # calibration is linear: the sum of a + b*x over c readings is c*a + b*(sum of x)
        sums[g, 0] = c0 * cal_a[s, 0] + cal_b[s, 0] * s0
        sums[g, 1] = c1 * cal_a[s, 1] + cal_b[s, 1] * s1
        sums[g, 2] = c2 * cal_a[s, 2] + cal_b[s, 2] * s2
        sums[g, 3] = c3 * cal_a[s, 3] + cal_b[s, 3] * s3
        sums[g, 4] = c4 * cal_a[s, 4] + cal_b[s, 4] * s4
        sums[g, 5] = c5 * cal_a[s, 5] + cal_b[s, 5] * s5
        sums[g, 6] = c6 * cal_a[s, 6] + cal_b[s, 6] * s6
        nv_out[g], ns_out[g] = nv, ns


def minute_figures_columns(cols, flags, offsets, group_stack, params: StackParams) -> MinuteFigures:
    """Minute figures straight from raw columnar readings.

    Parameters
    ----------
    cols : float64 (N_CHANNELS, n) raw channel values in `channels.NAMES` order, NaN where missing
    flags : int8 (n,) HJ 212 flag codes
    offsets : int64 (groups + 1,) readings of group g (one stack's minute) are ``offsets[g]:offsets[g + 1]``
    group_stack : int64 (groups,) stack row of each group
    params : per-stack parameters (calibration, ranges, required channels, bases, regime)
    """
    cols = np.ascontiguousarray(cols, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.int64)
    out = MinuteFigures.empty(offsets.shape[0] - 1)
    group_stack = np.asarray(group_stack, dtype=np.int64)
    counts = np.empty(out.means.shape, np.int64)
    p = params
    _fused(cols, np.asarray(flags, dtype=np.int8), offsets, group_stack, p.cal_a, p.cal_b, p.raw_lo, p.raw_hi,
           p.required, counts, out.n_valid, out.n_stopped, out.means)
    return finish_minutes(offsets, group_stack, counts, p, out)

