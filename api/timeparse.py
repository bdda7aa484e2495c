"""Query times of DESIGN §7: ISO 8601 with offset, or a bare YYYY-MM-DD meaning local midnight."""

import datetime as dt
import re
from zoneinfo import ZoneInfo

from fastapi import HTTPException

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
FIRST_YEAR, LAST_YEAR = 1970, 2199  # queries outside are refused (InfluxDB stores 1677..2262)


def local_midnight(d: dt.date, tz: str) -> int:
    """Epoch seconds of the start of local date `d` in `tz`."""
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=ZoneInfo(tz)).timestamp())


def parse_time(name: str, value: str, tz: str) -> int:
    """Epoch seconds of `value`; 422 with a precise message if it is not a usable time."""
    try:
        t = dt.date.fromisoformat(value) if _DATE.match(value) else dt.datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(422, f"{name}: {value!r} is not an ISO 8601 time or a YYYY-MM-DD date") from None
    if not FIRST_YEAR <= t.year <= LAST_YEAR:
        raise HTTPException(422, f"{name}: {value!r} is outside the years {FIRST_YEAR}..{LAST_YEAR}")
    if not isinstance(t, dt.datetime):
        return local_midnight(t, tz)
    if t.tzinfo is None:
        raise HTTPException(422, f"{name}: {value!r} has no UTC offset (add one, e.g. +08:00, or give a date)")
    return int(t.timestamp())


def parse_range(start: str, end: str, tz: str, max_days: int) -> tuple[int, int]:
    s, e = parse_time("start", start, tz), parse_time("end", end, tz)
    if e <= s:
        raise HTTPException(422, f"end ({end}) must be after start ({start})")
    if e - s > max_days * 86400:
        raise HTTPException(422, f"range of {(e - s) / 86400:.1f} days is longer than {max_days} days; "
                                 "ask in parts")
    return s, e


def iso(epoch_s: float, tz: str) -> str:
    return dt.datetime.fromtimestamp(epoch_s, ZoneInfo(tz)).isoformat()
