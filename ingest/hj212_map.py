"""HJ 212 content -> the MQTT contract (DESIGN §3a). Pure: no I/O, no clock (`now_s` is passed in).

CN 2011 (real-time data) becomes one reading of DESIGN §3 at ``DataTime``, the plant's local time.
Codes and units (HJ 212-2017 App. B Table B.2 as sent, unless the device config says otherwise):

| code | HJ 212 name | as sent | contract key |
|---|---|---|---|
| a00000 | 废气 flue-gas flow | m3/s (`flow_unit = "m3_h"`: m3/h) | flow_m3h = x 3600 (m3/s) |
| a01011 | 烟气流速 velocity | m/s | velocity_ms |
| a01012 | 烟气温度 temperature | degC | temp_c |
| a01013 | 烟气压力 pressure | kPa or Pa (`pressure_unit`) | press_kpa (+ a01006 or ambient_kpa when gauge) |
| a01006 | 气压 atmospheric pressure | kPa or Pa | only to make a gauge a01013 absolute |
| a01014 | 烟气湿度 moisture | % | h2o_pct |
| a19001 | 氧气含量 O2 | % | o2_pct |
| a05001 | 二氧化碳 CO2 | % or mg/m3 (`co2_unit`) | co2_pct = mg/m3 / (density [kg/m3] x 1e4) |

CN 2051 / 2061 / 2031 (minute / hour / day, ``DataTime`` = interval start) become the logger's own
figures for the ``reported`` topic, unconverted.
"""

import datetime as dt
import math
import zoneinfo
from dataclasses import dataclass

from cems.config import Config, Hj212Device, StackConfig
from cems.ingest.hj212_codec import Cp

REALTIME_CN = "2011"
INTERVAL_BY_CN = {"2051": "minute", "2061": "hour", "2031": "day"}
STATUS_ORDER = "FBDMCST"  # DESIGN §3a: the first of these among a reading's channel flags wins
REPORTED_FIELDS = ("Avg", "Cou", "Min", "Max", "Flag")
SECONDS_PER_HOUR = 3600.0
PA_PER_KPA = 1000.0
SPLIT_EXPIRY_S = 600.0  # DESIGN §3a: an incomplete split upload is dropped after 10 minutes


class MapError(ValueError):
    """A CP that cannot be mapped (no or bad DataTime); the message says why."""


@dataclass(frozen=True)
class DeviceContext:
    """What mapping needs about one logger: its config, its stack, the plant's timezone and the bridge's
    atmospheric pressure [kPa]."""

    device: Hj212Device
    stack: StackConfig
    tz: zoneinfo.ZoneInfo
    ambient_kpa: float

    @property
    def co2_density_kg_m3(self) -> float:
        """M/Vm of the stack [kg/m3] (DESIGN §4), for a05001 in mg/m3."""
        return self.stack.co2_density_kg_m3

    @property
    def readings_topic(self) -> str:
        return f"cems/v1/{self.device.plant}/{self.device.stack}/readings"

    @property
    def reported_topic(self) -> str:
        return f"cems/v1/{self.device.plant}/{self.device.stack}/reported"


def device_contexts(cfg: Config) -> dict[str, DeviceContext]:
    """Every configured logger by MN (config validation guarantees its plant and stack exist)."""
    if cfg.hj212 is None:
        return {}
    out = {}
    for d in cfg.hj212.devices:
        plant = cfg.plant(d.plant)
        stack = next(s for s in plant.stacks if s.id == d.stack)
        out[d.mn] = DeviceContext(d, stack, zoneinfo.ZoneInfo(plant.timezone), cfg.hj212.ambient_kpa)
    return out


def data_time_s(cp: Cp, tz: zoneinfo.ZoneInfo) -> int:
    """``DataTime=YYYYMMDDhhmmss`` in the plant's local time -> epoch seconds. Raises MapError."""
    text = cp.fields.get("DataTime")
    if text is None:
        raise MapError("no DataTime")
    if not (len(text) == 14 and text.isascii() and text.isdigit()):
        raise MapError(f"DataTime {text!r} is not YYYYMMDDhhmmss")
    try:
        local = dt.datetime.strptime(text, "%Y%m%d%H%M%S")
    except ValueError:
        raise MapError(f"DataTime {text!r} is not a valid time") from None
    return int(local.replace(tzinfo=tz).timestamp())


def number(text: str | None) -> float | None:
    """A finite decimal number, else None (absent, empty, garbage, NaN or infinite)."""
    if text is None:
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def fold_status(flags: list[str]) -> str:
    """A reading's status from its channels' flags: the first non-N flag in the order F, B, D, M, C, S, T;
    any other non-N letter counts as D; an empty flag is no flag; none -> N (DESIGN §3a)."""
    present = {f if f in STATUS_ORDER else "D" for f in flags if f and f != "N"}
    return next((f for f in STATUS_ORDER if f in present), "N")


def realtime_reading(cp: Cp, mn: str, ctx: DeviceContext) -> dict | None:
    """One DESIGN §3 reading from a CN 2011 CP, or None when it carries none of the mapped codes.

    A mapped code whose ``-Rtd`` is missing or not a finite number gives a null channel. Unit
    conversions: flow m3/s x 3600 -> m3/h; pressure Pa / 1000 -> kPa; gauge pressure + atmospheric
    (a01006, else `ambient_kpa`); CO2 mg/m3 / (density x 1e4) -> % (the inverse of DESIGN §4's
    ``CQ = CO2% x 1e4 x M/Vm``).
    """
    dev = ctx.device
    codes = cp.codes
    reading: dict = {}
    flags: list[str] = []

    def rtd(code: str) -> float | None:
        flags.append(codes[code].get("Flag", ""))
        return number(codes[code].get("Rtd"))

    def scaled(v: float | None, factor: float) -> float | None:
        return None if v is None else v * factor

    if "a00000" in codes:
        reading["flow_m3h"] = scaled(rtd("a00000"), SECONDS_PER_HOUR if dev.flow_unit == "m3_s" else 1.0)
    if "a01011" in codes:
        reading["velocity_ms"] = rtd("a01011")
    if "a01012" in codes:
        reading["temp_c"] = rtd("a01012")
    if "a01013" in codes:
        to_kpa = 1.0 / PA_PER_KPA if dev.pressure_unit == "Pa" else 1.0
        p = scaled(rtd("a01013"), to_kpa)
        if dev.pressure == "gauge" and p is not None:
            atm = number(codes.get("a01006", {}).get("Rtd"))
            if atm is not None:
                flags.append(codes["a01006"].get("Flag", ""))
                p += atm * to_kpa
            else:
                p += ctx.ambient_kpa
        reading["press_kpa"] = p
    if "a01014" in codes:
        reading["h2o_pct"] = rtd("a01014")
    if "a19001" in codes:
        reading["o2_pct"] = rtd("a19001")
    if "a05001" in codes:
        co2 = rtd("a05001")
        reading["co2_pct"] = co2 if dev.co2_unit == "pct" else scaled(co2, 1.0 / (ctx.co2_density_kg_m3 * 1e4))
    if not reading:
        return None
    return {"ts": data_time_s(cp, ctx.tz), **reading, "status": fold_status(flags), "gw": mn}


def reported_payload(cn: str, cp: Cp, mn: str, tz: zoneinfo.ZoneInfo) -> dict:
    """The logger's own minute/hour/day figures (CN 2051/2061/2031) for the ``reported`` topic.

    ``{"interval", "start" [epoch s, interval start], "gw" (MN), "values": {code: {"Avg", "Cou", "Min",
    "Max", "Flag"}}}``: numbers as sent (null when absent or not a finite number), Flag as sent (null when
    absent). Every code that carries at least one of those fields is kept, mapped or not.
    """
    values = {}
    for code, items in cp.codes.items():
        if not any(k in items for k in REPORTED_FIELDS):
            continue
        values[code] = {k: number(items.get(k)) for k in REPORTED_FIELDS[:4]} | {"Flag": items.get("Flag")}
    return {"interval": INTERVAL_BY_CN[cn], "start": data_time_s(cp, tz), "gw": mn, "values": values}


def join_cps(cps: list[Cp]) -> Cp:
    """One CP from the packets of a split upload, in PNO order: the first value of each field wins."""
    fields: dict[str, str] = {}
    codes: dict[str, dict[str, str]] = {}
    malformed: list[str] = []
    for cp in cps:
        for k, v in cp.fields.items():
            fields.setdefault(k, v)
        for code, items in cp.codes.items():
            merged = codes.setdefault(code, {})
            for k, v in items.items():
                merged.setdefault(k, v)
        malformed += cp.malformed
    return Cp(fields, codes, tuple(malformed))


class JoinError(ValueError):
    """A split packet that cannot be held (inconsistent PNUM, or the hold is full)."""


@dataclass
class _Pending:
    pnum: int
    first_seen_s: float
    items: dict


class SplitJoiner:
    """Holds the packets of split uploads (Flag bit 1, PNUM/PNO) by key (MN, QN) until all are in.

    `add` returns the items in PNO order once the set is complete, else None. A packet sent again
    replaces the held one. Sets older than `expiry_s` are dropped by `expire`. At most `max_packets` are
    held in all (about 1 KiB each), beyond which `add` raises JoinError.
    """

    def __init__(self, expiry_s: float = SPLIT_EXPIRY_S, max_packets: int = 10_000):
        self.expiry_s = expiry_s
        self.max_packets = max_packets
        self._sets: dict[tuple, _Pending] = {}
        self._held = 0

    def __len__(self) -> int:
        return len(self._sets)

    def add(self, key: tuple, pno: int, pnum: int, item, now_s: float) -> list | None:
        s = self._sets.get(key)
        if s is None:
            s = self._sets[key] = _Pending(pnum, now_s, {})
        if pnum != s.pnum:
            raise JoinError(f"PNUM={pnum} differs from PNUM={s.pnum} of the earlier packets")
        if pno not in s.items:
            if self._held >= self.max_packets:
                if not s.items:
                    del self._sets[key]
                raise JoinError(f"{self._held} split packets held already")
            self._held += 1
        s.items[pno] = item
        if len(s.items) < s.pnum:
            return None
        del self._sets[key]
        self._held -= len(s.items)
        return [s.items[i] for i in sorted(s.items)]

    def expire(self, now_s: float) -> list[tuple]:
        """Drop and return the keys of sets first seen more than `expiry_s` ago."""
        old = [k for k, s in self._sets.items() if now_s - s.first_seen_s > self.expiry_s]
        for k in old:
            self._held -= len(self._sets.pop(k).items)
        return old
