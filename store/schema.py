"""The InfluxDB schema of DESIGN §6: measurements, tags, fields, and how figures are read back.

Tags: `plant`, `stack`. Timestamps: interval start (UTC), epoch milliseconds. Units are in field names.
"""

import datetime as dt
import functools
import math

import numpy as np
import orjson

from cems.compute.channels import N_CHANNELS, NAMES
from cems.store.influx import Influx, quote_ident, quote_str
from cems.store.lineproto import line, string_field, tag

READING, MINUTE, HOUR, REJECTED, AUDIT, REPORTED = "reading", "minute", "hour", "rejected", "audit", "reported"
MINUTE_FIELDS = ("status", "n", "n_valid", "n_stopped", *NAMES, "qs_m3_h", "qsn_m3_h", "co2_dry_pct",
                 "co2_mg_m3", "rate_kg_h", "mass_kg", "conc", "flow", "regime")
HOUR_FIELDS = ("status", "method", "valid_min", "stopped_min", "op_min", "co2_mg_m3", "qsn_m3_h", "rate_kg_h",
               "mass_t", "revision", "final", "provisional", "regime", "t0_k", "co2_density_kg_m3", "min_valid_pct",
               "base", "base_op_min", "conc", "flow", "conc_measured", "flow_measured",
               "co2_pct_reported", "flow_scfh_reported", "rate_short_tons_h", "rate_short_tons_h_reported",
               "mass_short_tons", "mass_short_tons_reported")
PART75_FIELDS = HOUR_FIELDS[-6:]


def first_of(row: dict, *keys):
    """The value of the first of `keys` the row has one for (rows written by older versions lack some)."""
    return next((row[k] for k in keys if row.get(k) is not None), None)


def reading_line(plant: str, stack: str, ts_ms: int, values, status: str, validity: str, reason: str,
                 gw: str | None, seq: int | None) -> str:
    """A raw reading as received (before calibration), with its validity and reason."""
    fields = {name: float(v) for name, v in zip(NAMES, values, strict=True)}
    fields.update(status=status, validity=validity, reason=reason, gw=gw or "")
    if seq is not None:
        fields["seq"] = seq
    return line(READING, {"plant": plant, "stack": stack}, fields, ts_ms)


def reading_tail(status: str, validity: str, reason: str, gw: str | None, seq: int | None) -> str:
    """The fields of a reading line after its channel values: ``status=..,validity=..,reason=..,gw=..[,seq=..i]``."""
    tail = (f"status={string_field(status)},validity={string_field(validity)},reason={string_field(reason)},"
            f"gw={string_field(gw or '')}")
    return tail if seq is None else f"{tail},seq={int(seq)}i"


def series_head(measurement: str, plant: str, stack: str) -> str:
    """The measurement and tags of a stack's line, up to the space before its fields."""
    return f"{measurement},plant={tag(plant)},stack={tag(stack)} "


def reading_head(plant: str, stack: str) -> str:
    return series_head(READING, plant, stack)


def reading_lines(heads: list[str], ts_ms, values, tails: list[str]) -> list[str]:
    """`reading_line` for many readings (of any stacks), the same bytes, built a column at a time.

    `heads[i]` is `reading_head` of reading i's stack, `tails[i]` its `reading_tail`; `ts_ms` (n,) and
    `values` (n, channels) are arrays or lists of that shape. The channel values are formatted by orjson,
    one call for the whole block; readings are grouped by which channels are finite (the others, NaN or
    +-inf, are left out and named in `nulls`, as `line` does) and each group is filled into one template.
    """
    vals = np.asarray(values, dtype=np.float64).reshape(-1, N_CHANNELS)
    n = vals.shape[0]
    if n == 0:
        return []
    cols = _column_texts(vals)
    ts = orjson.dumps(np.asarray(ts_ms, dtype=np.int64), option=orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",")
    pattern = np.isfinite(vals) @ _CHANNEL_BITS
    first = int(pattern[0])
    if (pattern == first).all():
        fmt = _template(first)
        present = [cols[j] for j in range(N_CHANNELS) if first >> j & 1]
        return [fmt % row for row in zip(heads, *present, tails, ts, strict=True)]
    out: list[str] = [""] * n
    for p, present, rows in _finite_groups(pattern, N_CHANNELS):
        fmt = _template(p)
        for i in rows:
            out[i] = fmt % (heads[i], *(cols[j][i] for j in present), tails[i], ts[i])
    return out


_CHANNEL_BITS = 1 << np.arange(len(NAMES), dtype=np.int64)


def _finite_groups(pattern: np.ndarray, width: int):
    """For each distinct bit pattern of finite columns: (pattern, the finite columns, the rows having it)."""
    for p in np.unique(pattern).tolist():
        yield p, [j for j in range(width) if p >> j & 1], np.flatnonzero(pattern == p).tolist()


def _column_texts(vals: np.ndarray) -> list[list[str]]:
    """Each channel's values as text (orjson, one call for the whole block; non-finite come out as null)."""
    text = orjson.dumps(np.ascontiguousarray(vals.T), option=orjson.OPT_SERIALIZE_NUMPY).decode()
    return [c.split(",") for c in text[2:-2].split("],[")]


@functools.lru_cache(maxsize=256)
def _template(finite_bits: int) -> str:
    """A %-template of a reading line: head, the finite channels' values, the tail, then the time."""
    present = "".join(f"{NAMES[j]}=%s," for j in range(N_CHANNELS) if finite_bits >> j & 1)
    nulls = ",".join(NAMES[j] for j in range(N_CHANNELS) if not finite_bits >> j & 1)
    return f"%s{present}%s,nulls={string_field(nulls)} %s"


def figure_line(measurement: str, plant: str, stack: str, start_s: int, row: dict) -> str:
    return line(measurement, {"plant": plant, "stack": stack}, row, start_s * 1000)


MINUTE_FLOATS = (*NAMES, "qs_m3_h", "qsn_m3_h", "co2_dry_pct", "co2_mg_m3", "rate_kg_h", "mass_kg", "conc", "flow")


def minute_lines(heads: list[str], statuses: list[str], counts, floats, regimes: list[str], starts_s) -> list[str]:
    """`figure_line(MINUTE, ...)` of many minutes, the same bytes, built a column at a time.

    `heads[i]` is `series_head(MINUTE, ...)` of minute i's stack, `statuses[i]` its status name, `counts` (n, 3) its
    n, n_valid and n_stopped, `floats` (n, len(MINUTE_FLOATS)) its float fields in that order (NaN or
    +-inf left out and named in `nulls`, as `line` does), `regimes[i]` its regime, `starts_s` its start.
    """
    vals = np.asarray(floats, dtype=np.float64).reshape(-1, len(MINUTE_FLOATS))
    n = vals.shape[0]
    if n == 0:
        return []
    cols = _column_texts(vals)
    ints = np.asarray(counts, dtype=np.int64).reshape(n, 3).tolist()
    times = (np.asarray(starts_s, dtype=np.int64) * 1000).tolist()
    status = [string_field(x) for x in statuses]
    regime = [string_field(x) for x in regimes]
    pattern = np.isfinite(vals) @ _MINUTE_BITS
    out: list[str] = [""] * n
    for p, present, rows in _finite_groups(pattern, len(MINUTE_FLOATS)):
        fmt = _minute_template(p)
        for i in rows:
            out[i] = fmt % (heads[i], status[i], *ints[i], *(cols[j][i] for j in present), regime[i], times[i])
    return out


_MINUTE_BITS = 1 << np.arange(len(MINUTE_FLOATS), dtype=np.int64)


@functools.lru_cache(maxsize=256)
def _minute_template(finite_bits: int) -> str:
    present = "".join(f",{k}=%s" for j, k in enumerate(MINUTE_FLOATS) if finite_bits >> j & 1)
    nulls = ",".join(k for j, k in enumerate(MINUTE_FLOATS) if not finite_bits >> j & 1)
    return f"%sstatus=%s,n=%di,n_valid=%di,n_stopped=%di{present},regime=%s,nulls={string_field(nulls)} %d"


def _where(plant: str, stack: str, start_ms: int, end_ms: int) -> str:
    return (f"plant = {quote_str(plant)} AND stack = {quote_str(stack)} "
            f"AND time >= {int(start_ms)}ms AND time < {int(end_ms)}ms")


def raw_readings(db: Influx, plant: str, stack: str, start_ms: int, end_ms: int) -> list[tuple]:
    """Raw readings as (ts_ms, values, status, gw, seq), values in channel order with NaN if missing."""
    rows = db.query(f"SELECT * FROM {READING} WHERE {_where(plant, stack, start_ms, end_ms)}")
    out = []
    for r in rows:
        vals = tuple(math.nan if r.get(n) is None else float(r[n]) for n in NAMES)
        out.append((int(r["time"]), vals, r.get("status") or "N", r.get("gw") or None, r.get("seq")))
    return out


def figure_rows(db: Influx, measurement: str, fields: tuple[str, ...], plant: str, stack: str,
                start_s: int, end_s: int) -> dict[int, dict]:
    """Minute or hour figures keyed by interval start [epoch s]."""
    rows = db.query(f"SELECT * FROM {measurement} WHERE {_where(plant, stack, start_s * 1000, end_s * 1000)}")
    out = {}
    for r in rows:
        t = int(r["time"]) // 1000
        out[t] = {k: r.get(k) for k in fields}
    return out


def reported_co2_kg(db: Influx, plant: str, stack: str, interval: str, start_s: int, end_s: int) -> dict[int, float]:
    """A gateway's own CO2 amounts [kg] per interval start [epoch s] (DESIGN §5, reported vs recalculated)."""
    rows = db.query(f"SELECT co2_kg FROM {REPORTED} WHERE {_where(plant, stack, start_s * 1000, end_s * 1000)} "
                    f"AND interval = {quote_str(interval)}")
    return {int(r["time"]) // 1000: float(r["co2_kg"]) for r in rows if r.get("co2_kg") is not None}


def last_time_ms(db: Influx, measurement: str, field: str, plant: str, stack: str) -> int | None:
    rows = db.query(f"SELECT last({field}) FROM {measurement} WHERE plant = {quote_str(plant)} "
                    f"AND stack = {quote_str(stack)}")
    return int(rows[0]["time"]) if rows else None


def last_valid_minute(db: Influx, plant: str, stack: str) -> tuple[int, float] | None:
    rows = db.query(f"SELECT last(rate_kg_h) FROM {MINUTE} WHERE plant = {quote_str(plant)} "
                    f"AND stack = {quote_str(stack)} AND status = 'valid'")
    return (int(rows[0]["time"]) // 1000, float(rows[0]["last"])) if rows else None


def minute_mass_sums(db: Influx, plant: str, stack: str, since_s: int, until_s: int, interval: str,
                     tz: str | None = None) -> dict[int, float]:
    """Sums of minute masses [kg] per `interval` ("1h", "1d"), keyed by interval start [epoch s]."""
    tzc = f" tz({quote_str(tz)})" if tz else ""
    rows = db.query(f"SELECT sum(mass_kg) FROM {MINUTE} WHERE "
                    f"{_where(plant, stack, since_s * 1000, until_s * 1000)} GROUP BY time({interval}){tzc}")
    return {int(r["time"]) // 1000: float(r["sum"]) for r in rows if r.get("sum") is not None}


# ---- fuel data (DESIGN §5, CEMS vs calculation): tag `plant`, time = local midnight of the plant's date ------

FUEL = "fuel"
FUEL_FIELDS = ("fuel_t", "carbon_frac", "oxidation", "calculated_t", "submitted_by", "submitted_at")


def _plant_where(plant: str, start_ms: int, end_ms: int) -> str:
    return f"plant = {quote_str(plant)} AND time >= {int(start_ms)}ms AND time < {int(end_ms)}ms"


def fuel_line(plant: str, day_start_s: int, record: dict) -> str:
    """One day's fuel data; written with precision "ms". The same day again overwrites it (same series and time)."""
    fields = {k: record[k] for k in FUEL_FIELDS}
    for k in ("fuel_t", "carbon_frac", "oxidation", "calculated_t"):
        fields[k] = float(fields[k])  # never an integer field: InfluxDB would refuse a float later
    return line(FUEL, {"plant": plant}, fields, day_start_s * 1000)


def fuel_rows(db: Influx, plant: str, start_s: int, end_s: int) -> dict[int, dict]:
    """Fuel records keyed by their local midnight [epoch s], for midnights in [start_s, end_s)."""
    rows = db.query(f"SELECT * FROM {FUEL} WHERE {_plant_where(plant, start_s * 1000, end_s * 1000)}")
    return {int(r["time"]) // 1000: {k: r.get(k) for k in FUEL_FIELDS} for r in rows}


def audit_line(tags: dict[str, str], target_s: float, old, new, cause: str, time_ns: int) -> str:
    """An `audit` record (tags `plant`, `kind` and, for a stack's records, `stack`): what changed, from what to
    what, and why. Written with precision "ns": `time_ns` must be unique per record (the time of the change
    plus a counter), so records made in the same instant all stay. `target` is the changed period's start
    (a reading's time, an hour's, a fuel day's local midnight, a compliance year's) in UTC."""
    fields = {"target": dt.datetime.fromtimestamp(target_s, dt.UTC).isoformat(),
              "old": orjson.dumps(old).decode(), "new": orjson.dumps(new).decode(), "cause": cause}
    return line(AUDIT, tags, fields, time_ns)


def final_hour_counts(db: Influx, plant: str, start_s: int, end_s: int) -> dict[str, int]:
    """Number of final hour figures per stack of `plant` with start in [start_s, end_s)."""
    rows = db.query(f"SELECT count(status) FROM {HOUR} WHERE {_plant_where(plant, start_s * 1000, end_s * 1000)} "
                    "AND final = true GROUP BY stack")
    return {r["stack"]: int(r["count"]) for r in rows if r.get("count")}


# ---- compliance (issue 11): allowances, hour figures of a whole plant, revisions, flagged readings -----------

ALLOWANCE = "allowance"
ALLOWANCE_FIELDS = ("year", "allowances_t", "note", "submitted_by", "submitted_at")


def allowance_line(plant: str, year_start_s: int, record: dict) -> str:
    """The allowances held for a compliance year, at the local midnight of its 1 January; written with precision
    "ms". The same year again overwrites it (same series and time): the latest submission counts."""
    fields = {k: record[k] for k in ALLOWANCE_FIELDS}
    fields["year"] = int(fields["year"])
    fields["allowances_t"] = float(fields["allowances_t"])  # never an integer field
    return line(ALLOWANCE, {"plant": plant}, fields, year_start_s * 1000)


def allowance_rows(db: Influx, plant: str, start_s: int, end_s: int) -> dict[int, dict]:
    """Allowance records keyed by their year's start [epoch s], for starts in [start_s, end_s)."""
    rows = db.query(f"SELECT * FROM {ALLOWANCE} WHERE {_plant_where(plant, start_s * 1000, end_s * 1000)}")
    return {int(r["time"]) // 1000: {k: r.get(k) for k in ALLOWANCE_FIELDS} for r in rows}


def plant_hour_rows(db: Influx, plant: str, start_s: int, end_s: int,
                    fields: tuple[str, ...]) -> dict[str, dict[int, dict]]:
    """Hour figures of every stack of `plant` (only `fields`, read as `figure_rows` reads them), keyed by stack and
    hour start [epoch s]: one query for a whole plant and year."""
    cols = ",".join(quote_ident(f) for f in (*fields, "nulls"))
    rows = db.query(f"SELECT {cols} FROM {HOUR} WHERE {_plant_where(plant, start_s * 1000, end_s * 1000)} "
                    "GROUP BY stack")
    out: dict[str, dict[int, dict]] = {}
    for r in rows:
        out.setdefault(r["stack"], {})[int(r["time"]) // 1000] = {k: r.get(k) for k in fields}
    return out


def revision_audits(db: Influx, plant: str, since_s: int) -> list[dict]:
    """The pipeline's `revision` audit records of `plant` (a final hour recomputed) made at or after `since_s`:
    rows with `stack`, `target` (the hour start, ISO in UTC), `old` and `new` (JSON), `cause`, `time` [ms]."""
    return db.query(f"SELECT * FROM {AUDIT} WHERE plant = {quote_str(plant)} AND kind = 'revision' "
                    f"AND time >= {int(since_s) * 1000}ms")


def flagged_minutes(db: Influx, plant: str, flag: str, start_s: int, end_s: int) -> dict[str, list[tuple[int, int]]]:
    """Minutes with raw readings flagged `flag` (e.g. `C`, calibration), per stack: (minute start [epoch s],
    readings). One grouped count over the readings' `status`, so nothing but the counts leaves the database."""
    rows = db.query(f"SELECT count(status) FROM {READING} WHERE {_plant_where(plant, start_s * 1000, end_s * 1000)} "
                    f"AND status = {quote_str(flag)} GROUP BY time(1m), stack fill(none)")
    out: dict[str, list[tuple[int, int]]] = {}
    for r in sorted(rows, key=lambda r: (r["stack"], r["time"])):
        if r.get("count"):
            out.setdefault(r["stack"], []).append((int(r["time"]) // 1000, int(r["count"])))
    return out
