"""Per-stack parameters as arrays, so one kernel call serves many stacks at once."""

from dataclasses import dataclass

import numpy as np

from .channels import CO2_BASES, FLOW_BASES, INDEX, N_CHANNELS, required_channels
from .constants import HOUR_MIN_VALID_PCT_CHINA, M_CO2_OVER_VM, MINUTE_MIN_SAMPLES, P0_KPA, T0_K_CHINA


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
    cal_a: np.ndarray  # float64 (stacks, N_CHANNELS)
    cal_b: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    required: np.ndarray  # bool (stacks, N_CHANNELS)

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
            for name in required_channels(s.flow_basis, s.co2_basis, s.area_m2 is not None):
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
            cal_a=cal_a, cal_b=cal_b, lo=lo, hi=hi, required=required,
        )
