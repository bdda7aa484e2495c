"""Minute figures (DESIGN §4): status, channel means, standard dry flow, CO2 concentration and mass."""

from dataclasses import dataclass, fields

import numpy as np

from .channels import CO2, FLOW, H2O, N_CHANNELS, PRESS, TEMP, VELOCITY
from .constants import SCF_PER_M3
from .formulas import (
    actual_flow_from_velocity,
    co2_mass_concentration,
    co2_wet_to_dry,
    dry_standard_flow,
    wet_standard_to_dry,
)
from .jit import kernel
from .params import REGIME_PART75, StackParams
from .validity import INVALID, STOPPED, VALID

FLOW_ACTUAL_WET, FLOW_STD_WET, FLOW_STD_DRY = 0, 1, 2


@dataclass(frozen=True)
class MinuteFigures:
    """One row per group (a stack's minute). Flow and CO2 figures are NaN unless the minute is valid."""

    n: np.ndarray  # int64 readings
    n_valid: np.ndarray  # int64
    n_stopped: np.ndarray  # int64
    status: np.ndarray  # int8 VALID, STOPPED or INVALID
    means: np.ndarray  # float64 (groups, N_CHANNELS): mean of each channel over valid readings
    qs_m3_h: np.ndarray  # actual wet flow (or the flow on the stack's basis)
    qsn_m3_h: np.ndarray  # dry flow at standard conditions
    co2_dry_pct: np.ndarray
    co2_mg_m3: np.ndarray
    rate_kg_h: np.ndarray
    mass_kg: np.ndarray  # 0 for stopped minutes, NaN for invalid ones
    conc: np.ndarray  # the regime's concentration: CQ [mg/m3] (china, eu) or wet CO2 [%] (us_part75)
    flow: np.ndarray  # the regime's flow: Qsn [m3/h] (china, eu) or wet standard flow [scfh] (us_part75)

    @classmethod
    def empty(cls, groups: int) -> "MinuteFigures":
        ints = {"n", "n_valid", "n_stopped"}
        return cls(**{f.name: np.empty((groups, N_CHANNELS)) if f.name == "means"
                      else np.empty(groups, np.int8 if f.name == "status" else np.int64 if f.name in ints
                                    else np.float64) for f in fields(cls)})

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The output arrays in field order, as the kernels take them."""
        return tuple(getattr(self, f.name) for f in fields(self))


def figure_params(p: StackParams) -> tuple[np.ndarray, ...]:
    """The per-stack arrays `_finish_minutes` reads, in its order."""
    return (p.area_m2, p.kv, p.flow_basis, p.co2_wet, p.density_kg_m3, p.min_samples, p.t0_k, p.p0_kpa, p.regime,
            p.rate_factor)


@kernel
def _finish_minutes(offsets, group_stack, counts, area, kv, flow_basis, co2_wet, density, min_samples, t0_k, p0_kpa,
                    regime, rate_factor, n_out, nv_out, ns_out, status, means, qs, qsn, co2d, cq, rate, mass, conc_out,
                    flow_out):
    """Status and figures of every group, the second pass of both minute paths.

    On entry the accumulating pass has left, per group g, ``nv_out[g]`` and ``ns_out[g]`` (valid and stopped
    readings), ``means[g]`` (per-channel sums of valid readings) and ``counts[g]`` (how many were summed).
    Kept out of the reading loop, which then holds its accumulators in registers.
    """
    for g in range(offsets.shape[0] - 1):
        s = group_stack[g]
        n, nv, ns = offsets[g + 1] - offsets[g], nv_out[g], ns_out[g]
        n_out[g] = n
        for j in range(means.shape[1]):
            means[g, j] = means[g, j] / counts[g, j] if counts[g, j] > 0 else np.nan
        # Stopped is checked first: more than half the minute's readings carry F.
        if 2 * ns > n:
            status[g] = STOPPED
        elif nv >= min_samples[s]:
            status[g] = VALID
        else:
            status[g] = INVALID
        qs[g] = qsn[g] = co2d[g] = cq[g] = rate[g] = conc_out[g] = flow_out[g] = np.nan
        if status[g] != VALID:
            mass[g] = 0.0 if status[g] == STOPPED else np.nan
            continue
        h2o = means[g, H2O]
        if np.isfinite(area[s]):
            q = actual_flow_from_velocity(means[g, VELOCITY], area[s], kv[s])
        else:
            q = means[g, FLOW]
        if flow_basis[s] == FLOW_ACTUAL_WET:
            qn = dry_standard_flow(q, means[g, TEMP], means[g, PRESS], h2o, t0_k[s], p0_kpa[s])
        elif flow_basis[s] == FLOW_STD_WET:
            qn = wet_standard_to_dry(q, h2o)
        else:
            qn = q
        c = co2_wet_to_dry(means[g, CO2], h2o) if co2_wet[s] else means[g, CO2]
        conc = co2_mass_concentration(c, density[s])
        qs[g], qsn[g], co2d[g], cq[g] = q, qn, c, conc
        if regime[s] == REGIME_PART75:
            # F-11 on a wet basis: wet CO2 (F-2 for a dry analyser) times wet standard flow in scfh.
            cw = means[g, CO2] if co2_wet[s] else means[g, CO2] * (1.0 - h2o / 100.0)
            if flow_basis[s] == FLOW_ACTUAL_WET:
                qw = q * t0_k[s] / (t0_k[s] + means[g, TEMP]) * means[g, PRESS] / p0_kpa[s]
            elif flow_basis[s] == FLOW_STD_WET:
                qw = q
            else:
                qw = q / (1.0 - h2o / 100.0)
            conc_out[g], flow_out[g] = cw, qw * SCF_PER_M3
        else:
            conc_out[g], flow_out[g] = conc, qn
        rate[g] = conc_out[g] * flow_out[g] * rate_factor[s]
        mass[g] = rate[g] / 60.0


def finish_minutes(offsets, group_stack, counts, params: StackParams, out: "MinuteFigures") -> "MinuteFigures":
    """Run `_finish_minutes` on an accumulated `out` (see there) and return it."""
    _finish_minutes(offsets, group_stack, counts, *figure_params(params), *out.arrays())
    return out


@kernel
def _minutes(offsets, validity, values, counts, nv_out, ns_out, sums):
    """Accumulating pass of the two-pass path: valid and stopped counts, sums and counts of finite values."""
    for g in range(offsets.shape[0] - 1):
        nv = 0
        ns = 0
        sums[g, :] = 0.0
        counts[g, :] = 0
        for i in range(offsets[g], offsets[g + 1]):
            v = validity[i]
            if v == STOPPED:
                ns += 1
            elif v == VALID:
                nv += 1
                for j in range(values.shape[1]):
                    x = values[i, j]
                    if np.isfinite(x):
                        sums[g, j] += x
                        counts[g, j] += 1
        nv_out[g], ns_out[g] = nv, ns


def minute_figures(offsets, group_stack, validity, values, params: StackParams) -> MinuteFigures:
    """Figures for groups of readings, each group one stack's minute.

    Parameters
    ----------
    offsets : int64 (groups + 1,) readings of group g are ``offsets[g]:offsets[g + 1]``
    group_stack : int64 (groups,) stack row of each group in `params`
    validity : int8 (n,) from `validity.classify_readings`
    values : float64 (n, N_CHANNELS) calibrated channel values
    params : per-stack parameters

    Notes
    -----
    Status (DESIGN §4): stopped if more than half the readings are stopped; else valid with at least
    ``min_samples`` valid readings; else invalid. Means over valid readings; ``Qsn`` from the means
    (HJ 212-2017 App. D eq. 31), ``CQ`` from the mean dry CO2 (eq. 20), mass rate ``CQ * Qsn * 1e-6``
    [kg/h] and minute mass = rate / 60 [kg].
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    out = MinuteFigures.empty(offsets.shape[0] - 1)
    counts = np.empty(out.means.shape, np.int64)
    _minutes(offsets, np.asarray(validity, dtype=np.int8), np.ascontiguousarray(values, dtype=np.float64), counts,
             out.n_valid, out.n_stopped, out.means)
    return finish_minutes(offsets, np.asarray(group_stack, dtype=np.int64), counts, params, out)


def group_offsets(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For keys sorted ascending, the first index of each run and the offsets array (runs + 1)."""
    keys = np.asarray(keys)
    if keys.size == 0:
        return np.zeros(0, np.int64), np.zeros(1, np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return starts, np.r_[starts, keys.size].astype(np.int64)
