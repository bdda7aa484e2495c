"""Readings from a CSV file, for `cems simulate --replay FILE.csv`.

Columns (header row required, any order): `plant`, `stack`, `ts` (epoch seconds, or ISO 8601 with an
offset), any of the contract channels (`flow_m3h`, `velocity_ms`, `co2_pct`, `o2_pct`, `temp_c`,
`press_kpa`, `h2o_pct`; an empty cell is a missing value) and optionally `status` (one HJ 212 flag; empty
means `N`). Rows are replayed per stack in file order. Every bad row is reported with its line number.
"""

import csv
import datetime as dt
import math
from pathlib import Path

import numpy as np

from cems.ingest.simulator import CHANNELS, Readings

FLAGS = frozenset("NFMSDCTB")
MAX_ERRORS_SHOWN = 20


class ReplayError(ValueError):
    """The CSV cannot be replayed; the message lists the offending lines."""


def parse_ts_ms(text: str) -> int:
    """Epoch seconds or ISO 8601 with an offset -> epoch milliseconds; ValueError otherwise."""
    text = text.strip()
    try:
        t = float(text)
    except ValueError:
        try:
            d = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"ts {text!r} is neither epoch seconds nor ISO 8601") from None
        if d.tzinfo is None:
            raise ValueError(f"ts {text!r} has no UTC offset (write e.g. 2025-01-01T08:00:00+08:00)") from None
        return round(d.timestamp() * 1000)
    if not math.isfinite(t):
        raise ValueError(f"ts {text!r} is not a finite number")
    return round(t * 1000)


def parse_replay_csv(path: str | Path, known: set[tuple[str, str]] | None = None) -> dict[tuple[str, str], Readings]:
    """The file's readings per (plant, stack), in file order. `known` (configured stacks) rejects others."""
    errors: list[str] = []
    rows: dict[tuple[str, str], list[tuple[int, list[float], str]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        missing = [c for c in ("plant", "stack", "ts") if c not in header]
        if missing:
            raise ReplayError(f"{path}: header lacks column(s) {', '.join(missing)} (have: {', '.join(header)})")
        unknown = [c for c in header if c not in ("plant", "stack", "ts", "status", *CHANNELS)]
        if unknown:
            raise ReplayError(f"{path}: unknown column(s) {', '.join(unknown)}; channels are {', '.join(CHANNELS)}")
        channels = [c for c in CHANNELS if c in header]
        for row in reader:
            line = reader.line_num
            try:
                key = ((row.get("plant") or "").strip(), (row.get("stack") or "").strip())
                if not all(key):
                    raise ValueError("plant and stack are required")
                if known is not None and key not in known:
                    raise ValueError(f"stack {key[0]}/{key[1]} is not configured")
                ts_ms = parse_ts_ms(row.get("ts") or "")
                vals = []
                for c in channels:
                    cell = (row.get(c) or "").strip()
                    v = float(cell) if cell else math.nan
                    if math.isinf(v):
                        raise ValueError(f"{c} {cell!r} is not finite")
                    vals.append(v)
                flag = (row.get("status") or "").strip() or "N"
                if flag not in FLAGS:
                    raise ValueError(f"status {flag!r} is not one of {' '.join(sorted(FLAGS))}")
            except ValueError as e:
                errors.append(f"line {line}: {e}")
                continue
            rows.setdefault(key, []).append((ts_ms, vals, flag))
    if errors:
        more = f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise ReplayError(f"{path}: {len(errors)} bad row(s){more}:\n  " + "\n  ".join(errors[:MAX_ERRORS_SHOWN]))
    if not rows:
        raise ReplayError(f"{path}: no readings")
    out = {}
    for key, rs in rows.items():
        vals = np.array([v for _, v, _ in rs], dtype=np.float64).reshape(len(rs), len(channels))
        out[key] = Readings(np.array([t for t, _, _ in rs], dtype=np.int64),
                            {c: vals[:, i] for i, c in enumerate(channels)}, np.array([s for _, _, s in rs]))
    return out
