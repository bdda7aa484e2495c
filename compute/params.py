"""Per-stack parameters as arrays, so one kernel call serves many stacks at once."""

from dataclasses import dataclass

import numpy as np

from .channels import CO2_BASES, FLOW_BASES, INDEX, N_CHANNELS, required_channels
from .constants import (
    HOUR_MIN_VALID_PCT_CHINA,
    HOUR_MIN_VALID_PCT_EU,
    HOUR_MIN_VALID_PCT_US,
    K_PART75,
    KG_PER_SHORT_TON,
    M_CO2_OVER_VM,
    MINUTE_MIN_SAMPLES,
    P0_KPA,
    P0_KPA_US,
    T0_K_CHINA,
    T0_K_EU,
    T0_K_US,
)

REGIME_MASS_CONC, REGIME_PART75 = 0, 1  # kernel codes: CQ x Qsn (china, eu) or F-11/F-2 (us_part75)


def regime_constants(regime: str) -> dict:
    """The constants a regime fixes (every stored hour records them)."""
    if regime == "eu":
        return {"t0_k": T0_K_EU, "p0_kpa": P0_KPA, "hour_min_valid_pct": HOUR_MIN_VALID_PCT_EU}
    if regime == "us_part75":
        return {"t0_k": T0_K_US, "p0_kpa": P0_KPA_US, "hour_min_valid_pct": HOUR_MIN_VALID_PCT_US}
    return {"t0_k": T0_K_CHINA, "p0_kpa": P0_KPA, "hour_min_valid_pct": HOUR_MIN_VALID_PCT_CHINA}



_BIG = np.finfo(np.float64).max
_MAGNITUDE = np.int64(0x7FFFFFFFFFFFFFFF)


def _key(x):
    """float64 -> int64 in the same order (NaN excluded), so bisection can walk every float between two."""
    i = np.asarray(x, np.float64).view(np.int64)
    return i ^ ((i >> 63) & _MAGNITUDE)


def _unkey(k):
    return (k ^ ((k >> 63) & _MAGNITUDE)).view(np.float64)


def _first_at_least(a, b, bound):
    """Per element, the least finite x with fl(a + fl(b*x)) >= bound, for b > 0; NaN where there is none.

    fl(a + b*x) is non-decreasing in x when b > 0 (each rounding is monotone), so bisection over the ordered
    floats finds the exact threshold in at most 64 steps: no ulp is lost at a range's edge.
    """
    lo, hi = np.full(a.shape, _key(-_BIG)), np.full(a.shape, _key(_BIG))
    with np.errstate(over="ignore", invalid="ignore"):
        exists = a + b * _BIG >= bound
        for _ in range(66):
            mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)  # floor((lo + hi) / 2) without overflow
            up = a + b * _unkey(mid) >= bound
            hi = np.where(up, mid, hi)
            lo = np.minimum(np.where(up, lo, mid + 1), hi)
    return np.where(exists, _unkey(lo), np.nan)


def raw_bounds(cal_a, cal_b, lo, hi, required):
    """Bounds on the raw value x equivalent to the validity test on y = fl(a + fl(b*x)) (see `StackParams`).

    A required channel passes when lo <= y <= hi, any other when y is finite. NaN bounds (nothing passes)
    and NaN readings fail both comparisons, as NaN fails the calibrated test.
    """
    lo = np.where(required, np.maximum(lo, -_BIG), -_BIG)  # finite, so +-inf readings fail
    hi = np.where(required, np.minimum(hi, _BIG), _BIG)
    a, b = np.asarray(cal_a, np.float64), np.asarray(cal_b, np.float64)
    m = np.where(b == 0, 1.0, np.abs(b))
    # In u = sign(b) * x, y = fl(a + fl(|b| * u)) rises with u; y <= hi  <=>  fl(-a + fl(|b| * -u)) >= -hi.
    u_lo = _first_at_least(a, m, lo)
    u_hi = -_first_at_least(-a, m, -hi)
    flat = np.where((lo <= a) & (a <= hi), _BIG, np.nan)  # b == 0: y = a for every finite x
    raw_lo = np.where(b > 0, u_lo, np.where(b < 0, -u_hi, -flat))
    raw_hi = np.where(b > 0, u_hi, np.where(b < 0, -u_lo, flat))
    return raw_lo, raw_hi


@dataclass(frozen=True)
class StackSpec:
    """What the numeric core needs to know of one stack (built by the wiring from the config)."""

    area_m2: float | None = None  # flow from velocity when set
    kv: float = 1.0
    flow_basis: str = "actual_wet"
    co2_basis: str = "dry"
    co2_density_kg_m3: float = M_CO2_OVER_VM
    minute_min_samples: int = MINUTE_MIN_SAMPLES
    t0_k: float = T0_K_CHINA
    p0_kpa: float = P0_KPA
    hour_min_valid_pct: int = HOUR_MIN_VALID_PCT_CHINA
    regime: str = "china"
    ranges: tuple[tuple[str, float, float], ...] = ()
    calibration: tuple[tuple[str, float, float], ...] = ()


@dataclass(frozen=True)
class StackParams:
    """Arrays indexed by stack row; see `StackSpec` for the meaning of each."""

    area_m2: np.ndarray  # float64, NaN where the stack reports flow directly
    kv: np.ndarray
    flow_basis: np.ndarray  # int8 index into channels.FLOW_BASES
    co2_wet: np.ndarray  # bool
    density_kg_m3: np.ndarray
    min_samples: np.ndarray  # int64
    t0_k: np.ndarray
    p0_kpa: np.ndarray
    hour_min_valid_pct: np.ndarray  # int64
    regime: np.ndarray  # int8 REGIME_MASS_CONC or REGIME_PART75
    rate_factor: np.ndarray  # kg/h per (concentration x flow) in the regime's units
    quadrant_rule: np.ndarray  # bool: an hour needs a valid minute in every operating quarter (Part 75)
    cal_a: np.ndarray  # float64 (stacks, N_CHANNELS)
    cal_b: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    required: np.ndarray  # bool (stacks, N_CHANNELS)
    # The validity test on the raw value x: fl(a + b*x) is in range (required channels) or finite (others)
    # exactly when raw_lo <= x <= raw_hi, so the fused kernel never calibrates a reading it only sums.
    raw_lo: np.ndarray
    raw_hi: np.ndarray

    @classmethod
    def build(cls, specs: list[StackSpec], default_ranges: dict[str, tuple[float, float]]) -> "StackParams":
        n = len(specs)
        cal_a = np.zeros((n, N_CHANNELS))
        cal_b = np.ones((n, N_CHANNELS))
        lo = np.full((n, N_CHANNELS), -np.inf)  # a channel with no range given is unbounded
        hi = np.full((n, N_CHANNELS), np.inf)
        required = np.zeros((n, N_CHANNELS), dtype=np.bool_)
        for i, s in enumerate(specs):
            for name, (a, b) in default_ranges.items():
                lo[i, INDEX[name]], hi[i, INDEX[name]] = a, b
            for name, a, b in s.ranges:
                lo[i, INDEX[name]], hi[i, INDEX[name]] = a, b
            for name, a, b in s.calibration:
                cal_a[i, INDEX[name]], cal_b[i, INDEX[name]] = a, b
            for name in required_channels(s.flow_basis, s.co2_basis, s.area_m2 is not None, s.regime):
                required[i, INDEX[name]] = True
        return cls(
            area_m2=np.array([np.nan if s.area_m2 is None else s.area_m2 for s in specs], dtype=np.float64),
            kv=np.array([s.kv for s in specs], dtype=np.float64),
            flow_basis=np.array([FLOW_BASES.index(s.flow_basis) for s in specs], dtype=np.int8),
            co2_wet=np.array([s.co2_basis == CO2_BASES[1] for s in specs], dtype=np.bool_),
            density_kg_m3=np.array([s.co2_density_kg_m3 for s in specs], dtype=np.float64),
            min_samples=np.array([s.minute_min_samples for s in specs], dtype=np.int64),
            t0_k=np.array([s.t0_k for s in specs], dtype=np.float64),
            p0_kpa=np.array([s.p0_kpa for s in specs], dtype=np.float64),
            hour_min_valid_pct=np.array([s.hour_min_valid_pct for s in specs], dtype=np.int64),
            regime=np.array([REGIME_PART75 if s.regime == "us_part75" else REGIME_MASS_CONC for s in specs],
                            dtype=np.int8),
            # CQ [mg/m3] x Qsn [m3/h] x 1e-6 = kg/h; K x CO2 [%] x Q [scfh] short ton/h x 907.18 = kg/h
            rate_factor=np.array([K_PART75 * KG_PER_SHORT_TON if s.regime == "us_part75" else 1e-6 for s in specs]),
            quadrant_rule=np.array([s.regime == "us_part75" for s in specs], dtype=np.bool_),
            cal_a=cal_a, cal_b=cal_b, lo=lo, hi=hi, required=required,
            **dict(zip(("raw_lo", "raw_hi"), raw_bounds(cal_a, cal_b, lo, hi, required), strict=True)),
        )
