"""InfluxDB line protocol (https://docs.influxdata.com/influxdb/v1/write_protocols/line_protocol_reference/).

NaN floats cannot be stored; a point lists the float fields it leaves out in its `nulls` string field, so
that an overwrite of the same point never lets a stale value of an earlier version show through (InfluxDB
merges the fields of points with the same series and time).
"""

import functools
import math

import numpy as np
import orjson

_TAG_ESCAPE = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\="})
_MEAS_ESCAPE = str.maketrans({",": r"\,", " ": r"\ "})


def tag(v: str) -> str:
    return v.translate(_TAG_ESCAPE)


def string_field(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def float_text(v: float) -> str:
    """A finite float as its shortest round-trip decimal, as `reading_lines` formats whole columns
    (orjson: the digits of ``repr``, with exponents written ``1.2e-7`` rather than ``1.2e-07``; InfluxDB
    reads both)."""
    return orjson.dumps(v).decode()


def field_value(v) -> str | None:
    """Encode one field value, or None for a NaN float (left out and named in `nulls`)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, float):
        return float_text(v) if math.isfinite(v) else None
    if isinstance(v, str):
        return string_field(v)
    raise TypeError(f"cannot store {type(v).__name__} in a field")


def line(measurement: str, tags: dict[str, str], fields: dict, time: int) -> str:
    """One point; `time` in the precision of the write. Float fields that are NaN go into `nulls`."""
    parts, nulls = [], []
    for k, v in fields.items():
        t = type(v)
        if t is float:  # most fields: no dispatch
            if v - v == 0.0:  # finite
                parts.append(f"{_key(k)}={float_text(v)}")
            else:
                nulls.append(k)
            continue
        if v is None:
            continue
        enc = field_value(v)
        if enc is None:
            nulls.append(k)
        else:
            parts.append(f"{_key(k)}={enc}")
    parts.append(f"nulls={string_field(','.join(nulls))}")
    tagstr = "".join(f",{tag(k)}={tag(v)}" for k, v in tags.items())
    return f"{measurement.translate(_MEAS_ESCAPE)}{tagstr} {','.join(parts)} {time}"


@functools.lru_cache(maxsize=1024)
def _key(k: str) -> str:
    return tag(k)


def apply_nulls(row: dict) -> dict:
    """Undo `line`'s encoding on a row read back: fields named in `nulls` become NaN."""
    nulls = row.pop("nulls", None)
    if nulls:
        for k in nulls.split(","):
            row[k] = math.nan
    return row
