"""The registry of measured channels: canonical names, units, HJ 212 codes and default ranges.

Every layer (payload decoding, validity, storage, API, simulator) reads channel names and their order
from here. Columnar arrays carry channels in `NAMES` order along their last axis.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Channel:
    name: str
    unit: str
    meaning: str
    hj212_code: str
    default_range: tuple[float, float]


CHANNELS: tuple[Channel, ...] = (
    Channel("flow_m3h", "m3/h", "flue-gas flow on the stack's flow basis", "a00000", (0.0, 1.0e8)),
    Channel("velocity_ms", "m/s", "flue-gas velocity (flow = 3600 x area x Kv x v)", "a01011", (0.0, 60.0)),
    Channel("co2_pct", "% vol", "CO2 on the stack's CO2 basis", "a05001", (0.0, 25.0)),
    Channel("o2_pct", "% vol", "O2 (kept and reported, not used for CO2 mass)", "a19001", (0.0, 25.0)),
    Channel("temp_c", "degC", "flue-gas temperature", "a01012", (-50.0, 500.0)),
    Channel("press_kpa", "kPa abs", "flue-gas absolute pressure", "a01013", (50.0, 200.0)),
    Channel("h2o_pct", "% vol", "flue-gas moisture", "a01014", (0.0, 60.0)),
)
NAMES: tuple[str, ...] = tuple(c.name for c in CHANNELS)
N_CHANNELS = len(CHANNELS)
INDEX: dict[str, int] = {name: i for i, name in enumerate(NAMES)}
FLOW, VELOCITY, CO2, O2, TEMP, PRESS, H2O = (INDEX[n] for n in NAMES)

# HJ 212 data flags, in code order. N normal, F unit stopped, M maintenance, S manual value, D fault,
# C calibration, T over range (valid but flagged for review), B communication failure.
FLAGS = "NFMSDCTB"
FLAG_CODE: dict[str, int] = {f: i for i, f in enumerate(FLAGS)}
FLAG_UNKNOWN = len(FLAGS)  # a status letter that is not an HJ 212 flag

# Flow bases (stack config `flow_basis`) and CO2 bases (`co2_basis`) as kernel codes.
FLOW_BASES = ("actual_wet", "std_wet", "std_dry")
CO2_BASES = ("dry", "wet")


REGIMES = ("china", "eu", "us_part75")


def required_channels(flow_basis: str, co2_basis: str, has_area: bool, regime: str = "china") -> tuple[str, ...]:
    """Channels a reading must carry, finite and in range, to be valid for CO2 mass (DESIGN §4).

    china/eu work on a dry basis (moisture needed unless flow and CO2 are both dry already); us_part75 on
    a wet basis (F-11; moisture needed for a dry CO2 analyser, F-2, or a dry flow).
    """
    req = ["velocity_ms" if has_area else "flow_m3h", "co2_pct"]
    if flow_basis == "actual_wet":
        req += ["temp_c", "press_kpa"]
    if regime == "us_part75":
        if co2_basis == "dry" or flow_basis == "std_dry":
            req.append("h2o_pct")
    elif flow_basis != "std_dry" or co2_basis == "wet":
        req.append("h2o_pct")
    return tuple(req)
