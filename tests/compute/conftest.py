"""Shared helpers for the numeric-core tests (cems.compute).

Everything here builds inputs; no helper re-implements the maths under test except where a test says so.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

from cems.compute import reference as ref
from cems.compute.channels import CHANNELS, FLAG_CODE, FLAG_UNKNOWN, INDEX, N_CHANNELS
from cems.compute.minute import minute_figures
from cems.compute.params import StackParams, StackSpec
from cems.compute.validity import classify_readings

EXAMPLES_PATH = Path(__file__).resolve().parents[3] / "shared" / "data" / "worked_examples.json"
DEFAULT_RANGES = {c.name: c.default_range for c in CHANNELS}
RTOL = 1e-12


# ---- worked examples ---------------------------------------------------------------------------------

def load_examples() -> dict[str, dict]:
    with EXAMPLES_PATH.open() as fh:
        return {e["id"]: e for e in json.load(fh)["examples"]}


@pytest.fixture(scope="session")
def examples() -> dict[str, dict]:
    return load_examples()


def printed_decimals(x: float) -> int:
    """Decimals of a number as printed in the JSON (shortest repr), e.g. 1228654.839 -> 3."""
    text = repr(float(x))
    if "e" in text or "E" in text:
        return 17
    return len(text.split(".")[1]) if "." in text else 0


def assert_matches_printed(actual: float, expected: float, what: str = "") -> None:
    """Relative 1e-9 for numbers given to full precision (or exact integers), else to the printed decimals."""
    digits = len(repr(float(expected)).replace("-", "").replace(".", "").lstrip("0").split("e")[0])
    full = float(expected).is_integer() or digits >= 15
    if full:
        ok = math.isclose(actual, expected, rel_tol=1e-9, abs_tol=0.0)
        tol = "rel 1e-9"
    else:
        d = printed_decimals(expected)
        ok = abs(actual - expected) <= 10.0 ** -d
        tol = f"abs 1e-{d}"
    assert ok, f"{what}: got {actual!r}, expected {expected!r} ({tol})"


def spec_from_example(inputs: dict, **overrides) -> StackSpec:
    kw = dict(area_m2=inputs.get("area_m2"), kv=inputs.get("kv", 1.0), flow_basis=inputs["flow_basis"],
              co2_basis=inputs["co2_basis"], co2_density_kg_m3=inputs["co2_density_kg_m3"], t0_k=inputs["T0_K"])
    kw.update(overrides)
    return StackSpec(**kw)


def channel_values_from_example(inputs: dict) -> dict[str, float]:
    return {name: inputs[name] for name in INDEX if name in inputs}


# ---- building readings -------------------------------------------------------------------------------

def row(**channels: float) -> np.ndarray:
    """One reading as a (N_CHANNELS,) array: NaN for every channel not given."""
    out = np.full(N_CHANNELS, np.nan)
    for name, v in channels.items():
        out[INDEX[name]] = v
    return out


def rows(n: int, **channels: float) -> np.ndarray:
    return np.tile(row(**channels), (n, 1))


def flag_codes(letters: str) -> np.ndarray:
    """HJ 212 status letters -> kernel flag codes; any other letter -> FLAG_UNKNOWN."""
    return np.array([FLAG_CODE.get(ch, FLAG_UNKNOWN) for ch in letters], dtype=np.int8)


def build_params(*specs: StackSpec) -> StackParams:
    return StackParams.build(list(specs), DEFAULT_RANGES)


def classify(params: StackParams, values, flags, stack_idx=None):
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if stack_idx is None:
        stack_idx = np.zeros(len(values), np.int64)
    return classify_readings(values, flags, stack_idx, params.cal_a, params.cal_b, params.lo, params.hi,
                             params.required)


def run_minutes(params: StackParams, groups: list[tuple[int, np.ndarray, np.ndarray]]):
    """Classify and aggregate groups given as (stack row, raw values (n, C), flag codes (n,))."""
    sizes = [len(f) for _, _, f in groups]
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    values = np.concatenate([np.reshape(v, (-1, N_CHANNELS)) for _, v, _ in groups]) if groups else \
        np.zeros((0, N_CHANNELS))
    flags = np.concatenate([f for _, _, f in groups]).astype(np.int8) if groups else np.zeros(0, np.int8)
    stack_idx = np.concatenate([np.full(n, s, np.int64) for (s, _, _), n in zip(groups, sizes, strict=True)]) \
        if groups else np.zeros(0, np.int64)
    group_stack = np.array([s for s, _, _ in groups], np.int64)
    cls = classify(params, values, flags, stack_idx)
    figs = minute_figures(offsets, group_stack, cls.validity, cls.values, params)
    return cls, figs, offsets, group_stack


def one_minute(spec: StackSpec, values, flags: str | np.ndarray):
    """Figures of a single minute of one stack; returns (classified, figures) with figures as scalars."""
    params = build_params(spec)
    if isinstance(flags, str):
        flags = flag_codes(flags)
    cls, figs, _, _ = run_minutes(params, [(0, np.asarray(values, dtype=np.float64), flags)])
    return cls, figs


def reference_minute(params: StackParams, s: int, validity, values) -> dict:
    return ref.minute_figure(validity, values, params.area_m2[s], params.kv[s], int(params.flow_basis[s]),
                             bool(params.co2_wet[s]), params.density_kg_m3[s], int(params.min_samples[s]),
                             params.t0_k[s], params.p0_kpa[s])


# ---- comparisons -------------------------------------------------------------------------------------

def assert_close(actual, expected, rtol: float = RTOL, atol: float = 0.0, what: str = "") -> None:
    """assert_allclose with NaN positions required to be equal."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=f"{what}: NaN positions differ")
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def assert_same(actual, expected, what: str = "") -> None:
    """Bit-for-bit equal arrays (NaN equal to NaN)."""
    np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected), err_msg=what, strict=True)


# ---- hypothesis strategies ---------------------------------------------------------------------------

# Plausible in-range values per channel (a band inside the default range).
BANDS = {
    "flow_m3h": (5.0e5, 2.0e6),
    "velocity_ms": (5.0, 25.0),
    "co2_pct": (8.0, 15.0),
    "o2_pct": (3.0, 10.0),
    "temp_c": (30.0, 160.0),
    "press_kpa": (95.0, 105.0),
    "h2o_pct": (2.0, 15.0),
}
FLAG_LETTERS = "NFMSDCTBX"  # X: not an HJ 212 flag


@st.composite
def stack_specs(draw) -> StackSpec:
    has_area = draw(st.booleans())
    calibration = []
    for name in draw(st.lists(st.sampled_from(sorted(INDEX)), max_size=3, unique=True)):
        a = draw(st.sampled_from([0.0, -0.5, 0.25, 1.5]))
        b = draw(st.sampled_from([1.0, 0.98, 1.02, 1.1]))
        calibration.append((name, a, b))
    ranges = []
    if draw(st.booleans()):
        ranges.append(("co2_pct", 0.0, draw(st.sampled_from([14.0, 20.0, 25.0]))))
    return StackSpec(
        area_m2=draw(st.sampled_from([12.5, 30.0, 7.0685])) if has_area else None,
        kv=draw(st.sampled_from([1.0, 0.95, 1.08])) if has_area else 1.0,
        flow_basis=draw(st.sampled_from(["actual_wet", "std_wet", "std_dry"])),
        co2_basis=draw(st.sampled_from(["dry", "wet"])),
        co2_density_kg_m3=draw(st.sampled_from([44.01 / 22.4, 1.977])),
        minute_min_samples=draw(st.integers(1, 15)),
        t0_k=draw(st.sampled_from([273.0, 273.15])),
        ranges=tuple(ranges),
        calibration=tuple(calibration),
    )


@st.composite
def group_plans(draw, n_stacks: int):
    """How one minute's readings are drawn: its stack, size and the odds of each defect."""
    return dict(
        stack=draw(st.integers(0, n_stacks - 1)),
        size=draw(st.one_of(st.integers(1, 15), st.integers(10, 40), st.integers(40, 80), st.just(0))),
        p_stop=draw(st.sampled_from([0.0, 0.0, 0.2, 0.5, 0.8])),
        p_bad_flag=draw(st.sampled_from([0.0, 0.0, 0.1, 0.5])),
        p_nan=draw(st.sampled_from([0.0, 0.0, 0.02, 0.1])),
        p_out=draw(st.sampled_from([0.0, 0.0, 0.02, 0.1])),
    )


def draw_readings(rng: np.random.Generator, plan: dict) -> tuple[np.ndarray, np.ndarray]:
    """Raw values and flag codes for one planned minute."""
    n = plan["size"]
    values = np.empty((n, N_CHANNELS))
    for name, (lo, hi) in BANDS.items():
        values[:, INDEX[name]] = rng.uniform(lo, hi, n)
    out = rng.random((n, N_CHANNELS)) < plan["p_out"]
    # Out of range: above the top of the default range, or below the bottom (never straddling zero badly:
    # the low outliers stay small so sums over mixed signs do not cancel).
    for name, (lo, hi) in DEFAULT_RANGES.items():
        j = INDEX[name]
        high = hi * (1.0 + rng.uniform(0.01, 0.5, n)) + 1.0
        low = lo - rng.uniform(0.5, 5.0, n)
        values[:, j] = np.where(out[:, j], np.where(rng.random(n) < 0.5, high, low), values[:, j])
    values[rng.random((n, N_CHANNELS)) < plan["p_nan"]] = np.nan
    letters = np.full(n, "N")
    u = rng.random(n)
    letters[u < plan["p_stop"]] = "F"
    bad = (u >= plan["p_stop"]) & (rng.random(n) < plan["p_bad_flag"])
    letters[bad] = rng.choice(list("MSDCBX"), size=int(bad.sum()))
    tee = (letters == "N") & (rng.random(n) < 0.05)
    letters[tee] = "T"
    return values, flag_codes("".join(letters))
