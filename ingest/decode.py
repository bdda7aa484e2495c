"""Decoding of the MQTT readings payload (DESIGN §3) into columnar NumPy arrays.

Message-level problems raise `Rejected` with a reason a gateway developer can act on; reading-level
problems (missing channel, out of range, a bad flag) are left to validity, which keeps the reading.
"""

import datetime as dt
import functools
import math
import re
from dataclasses import dataclass, field

import numpy as np
import orjson

from cems.compute.channels import FLAG_CODE, FLAG_UNKNOWN, N_CHANNELS, NAMES

MAX_PAYLOAD_BYTES = 256 * 1024
ID_RE = re.compile(r"[a-z0-9_-]{1,64}")
KNOWN_KEYS = frozenset(NAMES) | {"ts", "status", "gw", "seq"}
_NUMBER = (int, float)
_NUMBER_SET = frozenset(_NUMBER)
_NUMBERS_OR_NONE = frozenset((int, float, type(None)))
_INT_SET = frozenset((int,))


class Rejected(Exception):
    """A whole message is refused; `reason` says why, for the dead-letter store and the sender."""

    def __init__(self, reason: str, gw: str | None = None, seq: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.gw = gw
        self.seq = seq


@dataclass
class Decoded:
    ts_ms: np.ndarray  # int64 (n,) reading times [ms since the epoch, UTC]
    values: np.ndarray  # float64 (n, N_CHANNELS) as sent, NaN where missing
    flags: np.ndarray  # int8 (n,) HJ 212 flag codes
    status: list[str]  # (n,) the status letters as sent
    gw: str | None = None
    seq: int | None = None
    ignored_keys: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.status)  # one letter per reading; a list's length is the cheapest to ask


@functools.lru_cache(maxsize=1 << 16)  # a plant's topics are few and come again and again; rejections are not kept
def parse_topic(topic: str, kind: str = "readings") -> tuple[str, str]:
    """``cems/v1/{plant}/{stack}/{kind}`` -> (plant, stack); `Rejected` if the ids are malformed."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[:2] != ["cems", "v1"] or parts[4] != kind:
        raise Rejected(f"topic {topic!r} is not cems/v1/{{plant}}/{{stack}}/{kind}")
    for what, ident in (("plant", parts[2]), ("stack", parts[3])):
        if not ID_RE.fullmatch(ident):
            raise Rejected(f"{what} id {ident!r} does not match [a-z0-9_-]{{1,64}}")
    return parts[2], parts[3]


TS_MIN_S, TS_MAX_S = 946_684_800, 4_102_444_800  # 2000-01-01 .. 2100-01-01 UTC


def _ts_ms(x, where: str) -> int:
    if type(x) in _NUMBER:
        t = float(x)
    elif isinstance(x, str):
        try:
            d = dt.datetime.fromisoformat(x)
        except ValueError:
            raise Rejected(f"{where}: {x!r} is not an ISO 8601 time") from None
        if d.tzinfo is None:
            raise Rejected(f"{where}: {x!r} has no UTC offset")
        t = d.timestamp()
    else:
        raise Rejected(f"{where}: expected epoch seconds or an ISO 8601 string, got {type(x).__name__}")
    if not TS_MIN_S <= t < TS_MAX_S:  # also refuses NaN
        raise Rejected(f"{where}: {x!r} is not a time between 2000 and 2100 (epoch seconds expected)")
    return round(t * 1000)


def _column(key: str, raw, n: int) -> np.ndarray:
    if isinstance(raw, list):
        if not _NUMBERS_OR_NONE.issuperset(map(type, raw)):
            for i, x in enumerate(raw):
                if x is not None and type(x) not in _NUMBER:
                    raise Rejected(f"{key}[{i}]: expected a number or null, got {type(x).__name__}")
        return np.array(raw, dtype=np.float64)  # None -> NaN
    return np.full(n, _scalar(key, raw))


def _scalar(key: str, raw) -> float:
    if raw is None:
        return math.nan
    if type(raw) not in _NUMBER:
        raise Rejected(f"{key}: expected a number or null, got {type(raw).__name__}")
    return float(raw)


def _ts_column(ts_raw: list) -> np.ndarray:
    """Reading times [ms]; a list of epoch seconds in one step, anything else (ISO strings) one by one."""
    if _INT_SET.issuperset(map(type, ts_raw)):  # whole seconds, as gateways mostly send: no float round trip
        try:
            t = np.array(ts_raw, dtype=np.int64)
        except OverflowError:
            t = None
        if t is not None and t.min() >= TS_MIN_S and t.max() < TS_MAX_S:
            return t * 1000
    if _NUMBER_SET.issuperset(map(type, ts_raw)):
        t = np.array(ts_raw, dtype=np.float64)
        if ((t >= TS_MIN_S) & (t < TS_MAX_S)).all():  # also refuses NaN
            return np.round(t * 1000).astype(np.int64)  # as round(): half to even
    return np.array([_ts_ms(x, f"ts[{i}]") for i, x in enumerate(ts_raw)], dtype=np.int64)


def _json_object(payload: bytes) -> dict:
    """The message as a JSON object: size bound, JSON, object (DESIGN §3)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Rejected(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise Rejected(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise Rejected(f"payload must be a JSON object, got {type(obj).__name__}")
    return obj


def decode_payload(payload: bytes) -> Decoded:
    """Decode one readings message (one reading or a columnar batch)."""
    obj = _json_object(payload)
    gw, seq = obj.get("gw"), obj.get("seq")
    good_gw = gw if isinstance(gw, str) else None
    good_seq = seq if type(seq) is int else None
    if gw is not None and good_gw is None:
        raise Rejected("gw must be a string", seq=good_seq)
    if seq is not None and good_seq is None:
        raise Rejected("seq must be an integer", gw=good_gw)
    try:
        return _decode_object(obj, gw, seq)
    except Rejected as e:
        e.gw, e.seq = gw, seq
        raise


def _decode_object(obj: dict, gw, seq) -> Decoded:
    ts_raw = obj.get("ts")
    if ts_raw is None:
        raise Rejected("no ts")
    if type(ts_raw) in _NUMBER and list not in set(map(type, obj.values())):
        one = _decode_one(obj, ts_raw, gw, seq)
        if one is not None:
            return one
    lengths = {k: len(v) for k, v in obj.items() if isinstance(v, list) and k in KNOWN_KEYS}
    if len(set(lengths.values())) > 1:
        raise Rejected("unequal array lengths: " + ", ".join(f"{k} {n}" for k, n in lengths.items()))
    n = next(iter(lengths.values())) if lengths else 1
    if n == 0:
        raise Rejected("empty batch")
    ts_raw = obj["ts"]
    if isinstance(ts_raw, list):
        ts = _ts_column(ts_raw)
    elif n > 1:
        raise Rejected("a batch needs one ts per reading")
    else:
        ts = np.array([_ts_ms(ts_raw, "ts")], dtype=np.int64)
    if lengths:
        values = np.empty((n, N_CHANNELS))
        for j, name in enumerate(NAMES):
            values[:, j] = _column(name, obj.get(name), n)
    else:  # one reading of scalars: one array, not one per channel
        values = np.array([[_scalar(name, obj.get(name)) for name in NAMES]])
    st = obj.get("status", "N")
    if isinstance(st, list):
        status = ["N" if x is None else x for x in st]
        for i, x in enumerate(status):
            if not isinstance(x, str):
                raise Rejected(f"status[{i}]: expected an HJ 212 flag letter, got {type(x).__name__}")
        flags = np.array([FLAG_CODE.get(x, FLAG_UNKNOWN) for x in status], dtype=np.int8)
    else:
        if st is None:
            st = "N"
        if not isinstance(st, str):
            raise Rejected(f"status[0]: expected an HJ 212 flag letter, got {type(st).__name__}")
        status = [st] * n
        flags = np.array([FLAG_CODE.get(st, FLAG_UNKNOWN)] * n, dtype=np.int8)
    return Decoded(ts, values, flags, status, gw, seq, _ignored(obj))


def _decode_one(obj: dict, ts_raw, gw, seq) -> Decoded | None:
    """The common single reading (epoch seconds, numbers or nulls, a flag letter) without the general
    path's per-channel work: about a third of its cost. None for anything else, which the general path
    then decodes (or rejects, with its reason)."""
    vals = [obj.get(name) for name in NAMES]
    st = obj.get("status", "N")
    if not _NUMBERS_OR_NONE.issuperset(map(type, vals)) or type(st) is not str:
        return None
    try:
        values = np.array([vals], dtype=np.float64)  # None -> NaN
    except OverflowError:
        return None
    return Decoded(np.array([_ts_ms(ts_raw, "ts")], dtype=np.int64), values,
                   np.array([FLAG_CODE.get(st, FLAG_UNKNOWN)], dtype=np.int8), [st], gw, seq, _ignored(obj))


def _ignored(obj: dict) -> tuple[str, ...]:
    """The message's keys outside DESIGN §3, sorted (kept out of the readings, named in a warning)."""
    unknown = obj.keys() - KNOWN_KEYS
    return tuple(sorted(unknown)) if unknown else ()


REPORTED_INTERVALS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass
class Reported:
    """A gateway's own figures for an interval (the HJ 212 bridge's CN 2051/2061/2031, DESIGN §3a)."""

    interval: str
    start_s: int
    gw: str | None
    values: dict  # code -> {"Avg", "Cou", "Min", "Max", "Flag"} as the logger sent them

    def co2_kg(self) -> float | None:
        """The logger's CO2 amount for the interval: a05001 `Cou` (HJ 212: cumulative emission, kg)."""
        cou = self.values.get("a05001", {}).get("Cou")
        return float(cou) if type(cou) in _NUMBER and np.isfinite(cou) else None


def decode_reported(payload: bytes) -> Reported:
    """Decode a `reported` message; `Rejected` with the reason if it is not of the DESIGN §3a shape."""
    obj = _json_object(payload)
    gw = obj.get("gw") if isinstance(obj.get("gw"), str) else None
    if obj.get("interval") not in REPORTED_INTERVALS:
        raise Rejected(f"interval must be one of {', '.join(REPORTED_INTERVALS)}", gw)
    start = obj.get("start")
    if type(start) not in _NUMBER or not TS_MIN_S <= start < TS_MAX_S:
        raise Rejected("start must be epoch seconds between 2000 and 2100", gw)
    values = obj.get("values")
    if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
        raise Rejected("values must be an object of {code: {Avg, Cou, Min, Max, Flag}}", gw)
    return Reported(obj["interval"], int(start), gw, values)


def check_times(d: Decoded, now_s: float, max_future_s: float, locked_before_s: float | None) -> None:
    """Message-level time rules: nothing more than `max_future_s` ahead; nothing in a locked period."""
    one = len(d) == 1
    newest = int(d.ts_ms[0]) if one else int(d.ts_ms.max())
    if newest > (now_s + max_future_s) * 1000:
        raise Rejected(f"timestamp {_iso(newest)} is more than {max_future_s:g} s in the future",
                       d.gw, d.seq)
    oldest = newest if one else int(d.ts_ms.min())
    if locked_before_s is not None and oldest < locked_before_s * 1000:
        raise Rejected(f"period locked: {_iso(oldest)} is before {_iso(int(locked_before_s * 1000))}",
                       d.gw, d.seq)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()
