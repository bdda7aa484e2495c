"""Day figures from hour figures over the plant's local calendar day (DESIGN §4)."""

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np

from .constants import DAY_VALID_MEASURED_HOURS
from .hour import H_STOPPED, MEASURED, MISSING, SUBSTITUTED
from .jit import kernel


@dataclass(frozen=True)
class DayFigures:
    mass_t: np.ndarray  # sum of measured and substituted hour masses (hours without a mass yet add 0)
    measured_hours: np.ndarray  # int64
    substituted_hours: np.ndarray
    stopped_hours: np.ndarray
    missing_hours: np.ndarray
    valid: np.ndarray  # bool: measured >= 20/24 of operating hours
    final: np.ndarray  # bool: every hour final


@kernel
def _days(offsets, status, mass_t, final, valid_measured_hours, mass, nm, nsub, nst, nmis, valid, fin):
    for g in range(offsets.shape[0] - 1):
        m = 0.0
        a = b = c = d = 0
        f = True
        for i in range(offsets[g], offsets[g + 1]):
            st = status[i]
            if st == MEASURED:
                a += 1
            elif st == SUBSTITUTED:
                b += 1
            elif st == H_STOPPED:
                c += 1
            elif st == MISSING:
                d += 1
            if (st == MEASURED or st == SUBSTITUTED) and np.isfinite(mass_t[i]):
                m += mass_t[i]
            f = f and final[i]
        mass[g], nm[g], nsub[g], nst[g], nmis[g] = m, a, b, c, d
        # At least 20 measured hours of 24 operating hours, pro rata, in integers.
        valid[g] = 24 * a >= valid_measured_hours * (a + b)
        fin[g] = f


def day_figures(offsets, hour_status, hour_mass_t, hour_final,
                valid_measured_hours: int = DAY_VALID_MEASURED_HOURS) -> DayFigures:
    """Aggregate groups of hour figures, each group one stack's local day.

    Parameters
    ----------
    offsets : int64 (days + 1,)
    hour_status : int8 (`hour.MEASURED`, `H_STOPPED`, `SUBSTITUTED`, `MISSING`)
    hour_mass_t : float64 hour mass [t]
    hour_final : bool
    valid_measured_hours : measured hours a 24-operating-hour day needs to be valid

    Notes
    -----
    Day mass is the plain sum of hour masses in tonnes; HJ 212-2017 eq. 34's stray 1e-6 is not copied.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    g = offsets.shape[0] - 1
    out = DayFigures(np.empty(g), np.empty(g, np.int64), np.empty(g, np.int64), np.empty(g, np.int64),
                     np.empty(g, np.int64), np.empty(g, np.bool_), np.empty(g, np.bool_))
    _days(offsets, np.asarray(hour_status, dtype=np.int8), np.asarray(hour_mass_t, dtype=np.float64),
          np.asarray(hour_final, dtype=np.bool_), valid_measured_hours, out.mass_t, out.measured_hours,
          out.substituted_hours, out.stopped_hours, out.missing_hours, out.valid, out.final)
    return out


def local_dates(epoch_s: np.ndarray, tz: str) -> list[dt.date]:
    """The local calendar date in `tz` of each instant [epoch s]."""
    zone = ZoneInfo(tz)
    return [dt.datetime.fromtimestamp(float(t), zone).date() for t in np.asarray(epoch_s)]
