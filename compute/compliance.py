"""Compliance arithmetic (issue 11): period totals of hour figures, the year-end projections, the position against
the allowances held, and runs of flagged minutes.

Every year a plant surrenders allowances equal to its verified emissions (EU ETS Directive 2003/87/EC Art. 12(3);
China's national ETS, MEE Order No. 19 of 2020). Pure functions over NumPy arrays: no clock (callers pass
elapsed and period lengths), no I/O. A figure that cannot be formed is NaN.
"""

from dataclasses import dataclass

import numpy as np

from .hour import H_STOPPED, MEASURED, MISSING, SUBSTITUTED
from .substitution import METHOD_NAMES

N_METHODS = len(METHOD_NAMES)


@dataclass(frozen=True)
class PeriodTotals:
    """Totals of hour figures per group (a month, a stack-month, a day...)."""

    mass_t: np.ndarray  # float64: measured and substituted hour masses [t]; hours without a mass yet add 0
    substituted_t: np.ndarray  # float64: the part of `mass_t` from substituted hours [t]
    measured_hours: np.ndarray  # int64
    substituted_hours: np.ndarray  # int64
    stopped_hours: np.ndarray  # int64
    stored_missing_hours: np.ndarray  # int64: hours stored with status `missing` (see `missing_hours`)
    final_hours: np.ndarray  # int64
    method_hours: np.ndarray  # int64 (groups, N_METHODS): substituted hours per method code (column 0: none)


def period_totals(group, n_groups: int, status, mass_t, method, final) -> PeriodTotals:
    """Sum hour figures into `n_groups` groups.

    Parameters
    ----------
    group : int64 (hours,) group index of each hour, in [0, n_groups)
    n_groups : number of groups (groups without hours get zeros)
    status : int8 (hours,) `hour.MEASURED`, `H_STOPPED`, `SUBSTITUTED` or `MISSING`
    mass_t : float64 (hours,) hour mass [t]; NaN while a substitute is pending
    method : int (hours,) index into `substitution.METHOD_NAMES` (0: no method)
    final : bool (hours,)

    Notes
    -----
    The mass is summed as `day.day_figures` sums a day: measured and substituted hours with a mass; stopped
    hours carry 0 t (DESIGN §4). Sums run in the order of the hours, so a group's total equals adding up its
    hours one by one as `/hours` lists them.
    """
    group = np.asarray(group, np.int64)
    status = np.asarray(status, np.int8)
    mass_t = np.asarray(mass_t, np.float64)
    method = np.asarray(method, np.int64)
    final = np.asarray(final, np.bool_)
    if group.size and (group.min() < 0 or group.max() >= n_groups):
        raise ValueError(f"group indices must lie in [0, {n_groups})")
    counted = ((status == MEASURED) | (status == SUBSTITUTED)) & np.isfinite(mass_t)
    mass = np.where(counted, mass_t, 0.0)
    sub = status == SUBSTITUTED

    def count(mask) -> np.ndarray:
        return np.bincount(group[mask], minlength=n_groups).astype(np.int64)

    methods = np.bincount(group[sub] * N_METHODS + np.clip(method[sub], 0, N_METHODS - 1),
                          minlength=n_groups * N_METHODS).reshape(n_groups, N_METHODS).astype(np.int64)
    return PeriodTotals(mass_t=np.bincount(group, weights=mass, minlength=n_groups),
                        substituted_t=np.bincount(group, weights=np.where(sub, mass, 0.0), minlength=n_groups),
                        measured_hours=count(status == MEASURED), substituted_hours=count(sub),
                        stopped_hours=count(status == H_STOPPED), stored_missing_hours=count(status == MISSING),
                        final_hours=count(final), method_hours=methods)


def missing_hours(expected_hours, measured_hours, substituted_hours, stopped_hours):
    """Hours without a figure [h]: the hours that should have one, less those that have a measured, substituted or
    stopped figure. Hours stored as `missing` (after a stack's last reading) count here, as do hours never
    written (before a stack's first reading, or not yet written). Never below 0."""
    have = np.asarray(measured_hours) + np.asarray(substituted_hours) + np.asarray(stopped_hours)
    return np.maximum(np.asarray(expected_hours) - have, 0)


def run_rate_projection_t(ytd_t: float, elapsed_h: float, period_h: float) -> float:
    """Year-end emissions at the year-to-date run rate [t].

    Parameters
    ----------
    ytd_t : emissions so far [t]
    elapsed_h : hours of the period elapsed (whole closed hours) [h]
    period_h : hours in the whole period (8,760 or 8,784; DST years differ by one in some zones) [h]

    Notes
    -----
    ``P = ytd_t / elapsed_h * period_h``. NaN before the first hour has closed. Hours without a figure count as
    elapsed: a gap lowers the run rate until it is filled (or substituted).
    """
    if not elapsed_h > 0:
        return np.nan
    return ytd_t / elapsed_h * period_h


def previous_year_projection_t(ytd_t: float, previous_year_t: float, previous_same_period_t: float) -> float:
    """Year-end emissions scaled by last year's profile [t].

    Parameters
    ----------
    ytd_t : emissions so far this year [t]
    previous_year_t : emissions of the whole previous year [t]
    previous_same_period_t : emissions of the previous year up to the same local date and time [t]

    Notes
    -----
    ``P = ytd_t * previous_year_t / previous_same_period_t``: this year keeps last year's seasonal shape (a CHP
    plant emits more in winter). NaN when the previous year had no emissions in that period.
    """
    if not previous_same_period_t > 0:
        return np.nan
    return ytd_t * (previous_year_t / previous_same_period_t)


def surplus_t(allowances_t: float, emissions_t: float) -> float:
    """Allowances held less emissions [t]: positive a surplus, negative a deficit to buy. NaN without allowances."""
    return allowances_t - emissions_t


def share(part_t: float, total_t: float) -> float:
    """`part_t / total_t` [-], NaN when the total is not positive (e.g. the share of emissions on substituted
    hours)."""
    if not total_t > 0:
        return np.nan
    return part_t / total_t


def runs(times_s, step_s: int) -> tuple[np.ndarray, np.ndarray]:
    """Runs of consecutive times: for ascending `times_s` (e.g. minute starts with a flag), the index of the first and
    of the last time of each run, where a run continues while the next time is exactly `step_s` later."""
    t = np.asarray(times_s, np.int64)
    if t.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    breaks = np.flatnonzero(np.diff(t) != step_s)
    return np.r_[0, breaks + 1].astype(np.int64), np.r_[breaks, t.size - 1].astype(np.int64)
