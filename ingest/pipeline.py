"""The processing pipeline: accepted readings -> raw record -> minute -> hour figures, with live totals.

`Pipeline.handle` takes one readings message: decode, message-level rules, reading validity, duplicate
and correction handling, and the raw points, queued for `flush` (which must succeed before the journal's
checkpoint passes the message). `Pipeline.tick` closes minutes and hours by the service's wall clock and
writes their figures. State in memory covers the recent past; anything older is read back from the raw
record in InfluxDB when late data touches it (DESIGN §1 principles 1-3).

Threading: one thread calls `handle` and `tick`; readers (the API) use `live()` and `stack_list()`,
which only read snapshots replaced whole.
"""

import datetime as dt
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import orjson

from cems.compute import constants as K
from cems.compute.channels import CHANNELS, FLAG_CODE, FLAG_UNKNOWN, NAMES
from cems.compute.hour import H_STOPPED, HOUR_STATUS_NAMES, MISSING, hour_figures
from cems.compute.minute import minute_figures
from cems.compute.params import StackParams
from cems.compute.part75 import part75_reported
from cems.compute.substitution import EMPTY, METHOD_NAMES, POLICIES
from cems.compute.validity import VALIDITY_NAMES, classify_readings, describe_reason
from cems.config import Config, PlantConfig, StackConfig
from cems.ingest.decode import (
    REPORTED_INTERVALS,
    Decoded,
    Rejected,
    check_times,
    decode_payload,
    decode_reported,
    parse_topic,
)
from cems.ingest.hourseries import BASE_NAMES, HISTORY_DAYS, HourSeries, Resolved
from cems.ingest.live import LiveTotals, local_year_start
from cems.ingest.message import Message
from cems.store import schema
from cems.store.deadletter import DeadLetters
from cems.store.influx import Influx
from cems.store.lineproto import line

log = logging.getLogger("cems.pipeline")
DEFAULT_RANGES = {c.name: c.default_range for c in CHANNELS}
Raw = tuple  # (values tuple, status letter, gw, seq)
LOADED_IDLE_S = 300.0  # old hours read back for late data stay in memory this long after their last data


@dataclass
class Outcome:
    plant: str | None = None
    stack: str | None = None
    accepted: int = 0
    duplicates: int = 0
    corrections: int = 0
    invalid: int = 0
    rejected: str | None = None
    notice: dict | None = None  # the `rejected` notice for the sender


@dataclass
class StackState:
    row: int
    plant: PlantConfig
    stack: StackConfig
    raw: dict[int, dict[int, Raw]] = field(default_factory=dict)  # minute [s] -> ts [ms] -> reading
    minutes: dict[int, dict] = field(default_factory=dict)  # minute [s] -> figure row
    series: HourSeries = field(default_factory=HourSeries)  # the hourly series, base and resolved
    dirty_minutes: set[int] = field(default_factory=set)
    dirty_hours: set[int] = field(default_factory=set)
    loaded_hours: set[int] = field(default_factory=set)  # old hours read back whole from the store
    loaded_touched: dict[int, float] = field(default_factory=dict)  # old hour -> last time data came for it
    # Minutes at or after this are complete in memory; older ones may be in the store only.
    authoritative_from: int = 0
    last_reading_ms: int | None = None
    latest_minute: int | None = None
    latest_valid: tuple[int, float] | None = None  # (minute [s], rate [kg/h])
    live: LiveTotals | None = None
    series_dirty: bool = False
    pending_commits: list = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return self.plant.id, self.stack.id

    @property
    def lateness_s(self) -> int:
        return int(self.plant.lateness_h * 3600)

    @property
    def retention_s(self) -> int:
        """How long closed periods stay in memory before only the store holds them."""
        return self.lateness_s + 2 * 3600


def _same(a: Raw, b: Raw) -> bool:
    if a[1] != b[1]:
        return False
    return all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a[0], b[0], strict=True))


class Pipeline:
    def __init__(self, cfg: Config, db: Influx, deadletters: DeadLetters,
                 publish: Callable[[str, bytes, bool], None] | None = None):
        self.cfg = cfg
        self.db = db
        self.deadletters = deadletters
        self.publish = publish
        specs = cfg.stack_specs()
        self.params = StackParams.build([s for _, _, s in specs], DEFAULT_RANGES)
        self.stacks: dict[tuple[str, str], StackState] = {}
        for row, (p, s, _) in enumerate(specs):
            self.stacks[(p.id, s.id)] = StackState(row=row, plant=p, stack=s, live=LiveTotals(p.timezone))
        self.counters = {"messages": 0, "accepted": 0, "duplicates": 0, "corrections": 0, "invalid": 0,
                         "rejected": 0, "reported": 0}
        self._live: dict[tuple[str, str], dict] = {}
        self._last_live_publish = 0.0
        self._audit_seq = 0
        self._out_ms: list[str] = []  # points waiting for `flush`
        self._out_ns: list[str] = []
        self.started = False

    # ---- start-up ------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Create the database and rebuild the recent state of every stack from the store."""
        self.db.create_database()
        for st in self.stacks.values():
            self._recover(st, now)
        self.started = True
        self._refresh_live(now, publish=False)

    def _recover(self, st: StackState, now: float) -> None:
        plant, stack = st.key
        last = schema.last_time_ms(self.db, schema.READING, "status", plant, stack)
        if last is not None:
            since = int(min(now, last / 1000) - st.retention_s)
            since -= since % 3600
            until = int(now) + 86400
            self._load(st, since, until)
            st.dirty_minutes.update(st.raw)
            st.dirty_hours.update(m - m % 3600 for m in st.raw)
            # Treat recovered hours as just touched: the broker may still hold their missing messages.
            for h in st.dirty_hours:
                st.series.touch(h, now)
            st.authoritative_from = since
            st.last_reading_ms = last
            st.latest_valid = schema.last_valid_minute(self.db, plant, stack)
            st.latest_minute = max(st.minutes, default=None)
        history = int(now) - HISTORY_DAYS * 86400
        for h, row in schema.figure_rows(self.db, schema.HOUR, schema.HOUR_FIELDS, plant, stack, history,
                                         int(now) + 86400).items():
            st.series.load_row(h, row)
        year0 = local_year_start(now, st.plant.timezone)
        until = int(now) + 86400
        st.live.seed(
            schema.minute_mass_sums(self.db, plant, stack, int(now) - 86400, until, "1h"),
            schema.minute_mass_sums(self.db, plant, stack, year0, until, "1d", st.plant.timezone),
        )
        log.info("stack %s/%s recovered: %d minutes in memory", plant, stack, len(st.raw))

    def _load(self, st: StackState, start_s: int, end_s: int) -> None:
        """Read raw readings and figures of [start, end) back from the store into memory."""
        plant, stack = st.key
        fresh: dict[int, dict[int, Raw]] = {}
        for ts, vals, status, gw, seq in schema.raw_readings(self.db, plant, stack, start_s * 1000, end_s * 1000):
            m = ts // 60000 * 60
            fresh.setdefault(m, {})[ts] = (vals, status, gw, seq)
        for m, readings in fresh.items():
            st.raw.setdefault(m, readings)
        for m, row in schema.figure_rows(self.db, schema.MINUTE, schema.MINUTE_FIELDS, plant, stack,
                                         start_s, end_s).items():
            st.minutes.setdefault(m, row)

    def _ensure_loaded(self, st: StackState, minutes: np.ndarray, now: float) -> None:
        """Bring whole old hours back into memory before late readings for them are merged."""
        hours = {int(m) - int(m) % 3600 for m in np.unique(minutes)}
        for h in sorted(hours):
            if h < st.authoritative_from and h not in st.loaded_hours:
                self._load(st, h, h + 3600)
                st.loaded_hours.add(h)
            if h < st.authoritative_from:
                st.loaded_touched[h] = now

    # ---- messages ------------------------------------------------------------------------------
    def handle(self, msg: Message, now: float) -> Outcome:
        """Process one message; its points wait for `flush`. Raises `InfluxError` (nothing changed) if a
        read it needed (an old hour back from the store) failed."""
        self.counters["messages"] += 1
        parts = msg.topic.split("/")
        out = Outcome(plant=parts[2] if len(parts) == 5 else None, stack=parts[3] if len(parts) == 5 else None)
        if msg.topic.endswith("/reported"):
            return self._handle_reported(msg, out)
        try:
            plant, stack = parse_topic(msg.topic)
            d = decode_payload(msg.payload)  # first, so a rejection can name the sender's gw and seq
            st = self.stacks.get((plant, stack))
            if st is None:
                raise Rejected(f"unknown plant/stack {plant}/{stack}", d.gw, d.seq)
            locked = now - st.plant.lock_after_days * 86400
            check_times(d, now, K.MAX_FUTURE_S, locked)
        except Rejected as e:
            return self._reject(msg, e, out)
        self._accept(st, d, now, out)
        if d.ignored_keys:
            log.warning("%s/%s gw=%s: ignored unknown keys %s", plant, stack, d.gw, ", ".join(d.ignored_keys))
        return out

    def _handle_reported(self, msg: Message, out: Outcome) -> Outcome:
        """Keep a gateway's own interval figures beside ours (DESIGN §5, reported vs recalculated)."""
        try:
            plant, stack = parse_topic(msg.topic, "reported")
            rep = decode_reported(msg.payload)
            if (plant, stack) not in self.stacks:
                raise Rejected(f"unknown plant/stack {plant}/{stack}", rep.gw)
        except Rejected as e:
            return self._reject(msg, e, out)
        fields = {"values": orjson.dumps(rep.values).decode(), "gw": rep.gw or "",
                  "co2_kg": math.nan if rep.co2_kg() is None else rep.co2_kg(),
                  "seconds": REPORTED_INTERVALS[rep.interval]}
        self._write([line(schema.REPORTED, {"plant": plant, "stack": stack, "interval": rep.interval}, fields,
                          rep.start_s * 1000)])
        self.counters["reported"] += 1
        out.accepted = 1
        return out

    def _reject(self, msg: Message, e: Rejected, out: Outcome) -> Outcome:
        self.counters["rejected"] += 1
        rec = self.deadletters.record(received_at=msg.received_at, source=f"{msg.source}:{msg.topic}",
                                      reason=e.reason, payload=msg.payload, gw=e.gw, seq=e.seq)
        out.rejected = e.reason
        out.notice = {"reason": e.reason, "gw": e.gw, "seq": e.seq, "received_at": rec["received_at"]}
        log.info("rejected %s: %s", msg.topic, e.reason)
        if out.plant is not None:
            fields = {"reason": e.reason, "gw": e.gw or "", "topic": msg.topic}
            if e.seq is not None:
                fields["seq"] = e.seq
            self._write([], [line(schema.REJECTED, {"plant": out.plant, "stack": out.stack}, fields,
                                  self._unique_ns(msg.received_at))])
            if self.publish:
                self.publish(f"cems/v1/{out.plant}/{out.stack}/rejected", orjson.dumps(out.notice), False)
        return out

    def _unique_ns(self, t: float) -> int:
        self._audit_seq = (self._audit_seq + 1) % 1000
        return int(t * 1e6) * 1000 + self._audit_seq

    def _accept(self, st: StackState, d: Decoded, now: float, out: Outcome) -> None:
        plant, stack = st.key
        n = len(d)
        cls = classify_readings(d.values, d.flags, np.full(n, st.row), self.params.cal_a, self.params.cal_b,
                                self.params.lo, self.params.hi, self.params.required)
        minute_arr = d.ts_ms // 60000 * 60
        self._ensure_loaded(st, minute_arr, now)
        # Python lists once, rather than NumPy scalars reading by reading.
        minutes, ts_list, vals = minute_arr.tolist(), d.ts_ms.tolist(), d.values.tolist()
        validity, reasons = cls.validity.tolist(), cls.reason.tolist()
        pending: dict[tuple[int, int], Raw] = {}
        keep: list[int] = []
        audits = []
        for i in range(n):
            m, ts = minutes[i], ts_list[i]
            rec = (tuple(vals[i]), d.status[i], d.gw, d.seq)
            old = pending.get((m, ts))
            if old is None:
                bucket = st.raw.get(m)
                old = bucket.get(ts) if bucket else None
            if old is not None:
                if _same(old, rec):
                    out.duplicates += 1
                    continue
                out.corrections += 1
                audits.append(self._audit_line(plant, stack, "correction", ts, now,
                                               {"old": self._raw_json(old), "new": self._raw_json(rec)},
                                               f"gateway correction gw={d.gw} seq={d.seq}"))
            pending[(m, ts)] = rec
            keep.append(i)
            if validity[i] != 0:
                out.invalid += 1
        lines = schema.reading_lines(plant, stack, [ts_list[i] for i in keep], [vals[i] for i in keep],
                                     [d.status[i] for i in keep], [VALIDITY_NAMES[validity[i]] for i in keep],
                                     [describe_reason(reasons[i], d.status[i]) if reasons[i] else "" for i in keep],
                                     d.gw, d.seq)
        self._write(lines, audits)
        # The state changes only once every reading has been judged (a failed read above changes nothing).
        touched = set()
        for (m, ts), rec in pending.items():
            bucket = st.raw.get(m)
            if bucket is None:
                bucket = st.raw[m] = {}
            bucket[ts] = rec
            touched.add(m)
        for m in touched:
            st.dirty_minutes.add(m)
            st.series.touch(m - m % 3600, now)
        if pending:
            newest = max(ts for _, ts in pending)
            st.last_reading_ms = max(st.last_reading_ms or 0, newest)
        out.accepted = len(pending)
        for k in ("accepted", "duplicates", "corrections", "invalid"):
            self.counters[k] += getattr(out, k)

    @staticmethod
    def _raw_json(rec: Raw) -> dict:
        vals = {n: (None if math.isnan(v) else v) for n, v in zip(NAMES, rec[0], strict=True)}
        return {**vals, "status": rec[1], "gw": rec[2], "seq": rec[3]}

    def _audit_line(self, plant: str, stack: str, kind: str, target_ms: int, now: float, change: dict,
                    cause: str) -> str:
        return schema.audit_line({"plant": plant, "stack": stack, "kind": kind}, target_ms / 1000, change.get("old"),
                                 change.get("new"), cause, self._unique_ns(now))

    def _write(self, lines: list[str], audits: list[str] = ()) -> None:
        """Queue points for `flush`: readings and figures (ms), audit and rejection records (ns)."""
        self._out_ms.extend(lines)
        self._out_ns.extend(audits)

    def flush(self, on_done=None) -> None:
        """Write the queued points, in order; they stay queued if the store raises (call again).

        A store with a writer thread (`SpooledInflux.submit`) takes them in the background and calls
        `on_done()` once they are stored; otherwise they are written here, then `on_done()`. The processor
        moves the journal's checkpoint past a batch of messages only from `on_done`, and `tick` flushes
        before it returns, so the state in memory may run ahead of the store only until then: a crash in
        between is undone by handling the journal again from the checkpoint.
        """
        submit = getattr(self.db, "submit", None)
        if submit is not None:
            ms, ns = self._out_ms, self._out_ns
            self._out_ms, self._out_ns = [], []
            submit(ms, ns, on_done)
            return
        if self._out_ms:
            self.db.write(self._out_ms)
            self._out_ms = []
        if self._out_ns:
            self.db.write(self._out_ns, precision="ns")
            self._out_ns = []
        if on_done is not None:
            on_done()

    # ---- the clock -------------------------------------------------------------------------------
    def close_minutes(self, now: float) -> None:
        """Only the minutes whose end has passed (cheap; the processor calls it more often than `tick`, so a
        minute's figure is stored soon after the minute ends)."""
        self._close_minutes(now)
        self.flush()

    def tick(self, now: float) -> None:
        """Close minutes and hours whose end has passed, finalise hours, evict old state, update live."""
        self.flush()  # a failed flush of the last batch first: nothing queued behind it
        self._close_minutes(now)
        self._close_hours(now)
        self._finalise_hours(now)
        self.flush()
        self._evict(now)
        self._refresh_live(now, publish=True)

    def _close_minutes(self, now: float) -> None:
        groups = [(st, m) for st in self.stacks.values() for m in sorted(st.dirty_minutes) if m + 60 <= now]
        if not groups:
            return
        vals, flags, rows, offsets = [], [], [], [0]
        for st, m in groups:
            readings = st.raw.get(m, {})
            for ts in sorted(readings):
                r = readings[ts]
                vals.append(r[0])
                flags.append(FLAG_CODE.get(r[1], FLAG_UNKNOWN))
                rows.append(st.row)
            offsets.append(len(vals))
        values = np.array(vals, dtype=np.float64).reshape(-1, len(NAMES))
        p = self.params
        cls = classify_readings(values, np.array(flags, np.int8), np.array(rows, np.int64), p.cal_a, p.cal_b,
                                p.lo, p.hi, p.required)
        figs = minute_figures(np.array(offsets), np.array([st.row for st, _ in groups]), cls.validity,
                              cls.values, p)
        lines, new_rows = [], []
        for g, (st, m) in enumerate(groups):
            row = {"status": VALIDITY_NAMES[figs.status[g]], "n": int(figs.n[g]), "n_valid": int(figs.n_valid[g]),
                   "n_stopped": int(figs.n_stopped[g])}
            row.update({name: float(figs.means[g, j]) for j, name in enumerate(NAMES)})
            row.update(qs_m3_h=float(figs.qs_m3_h[g]), qsn_m3_h=float(figs.qsn_m3_h[g]),
                       co2_dry_pct=float(figs.co2_dry_pct[g]), co2_mg_m3=float(figs.co2_mg_m3[g]),
                       rate_kg_h=float(figs.rate_kg_h[g]), mass_kg=float(figs.mass_kg[g]),
                       conc=float(figs.conc[g]), flow=float(figs.flow[g]), regime=st.plant.regime)
            new_rows.append(row)
            lines.append(schema.figure_line(schema.MINUTE, *st.key, m, row))
        self._write(lines)
        for (st, m), row in zip(groups, new_rows, strict=True):
            old = st.minutes.get(m)
            old_kg = _mass_kg(old)
            st.minutes[m] = row
            st.live.add(m, _mass_kg(row) - old_kg)
            st.dirty_minutes.discard(m)
            st.dirty_hours.add(m - m % 3600)
            if st.latest_minute is None or m >= st.latest_minute:
                st.latest_minute = m
            if row["status"] == "valid" and (st.latest_valid is None or m >= st.latest_valid[0]):
                st.latest_valid = (m, row["rate_kg_h"])

    def _close_hours(self, now: float) -> None:
        """Base figures for closed dirty hours, then substitution over each touched stack's series."""
        groups = [(st, h) for st in self.stacks.values() for h in sorted(st.dirty_hours) if h + 3600 <= now]
        for st, h in groups:
            if h < st.authoritative_from and h not in st.loaded_hours:
                self._load(st, h, h + 3600)
                st.loaded_hours.add(h)
                st.loaded_touched[h] = now
        if groups:
            status, conc, flow, idx, offsets = [], [], [], [], [0]
            for st, h in groups:
                for k, m in enumerate(range(h, h + 3600, 60)):
                    row = st.minutes.get(m)
                    if row is not None:
                        status.append(VALIDITY_NAMES.index(row["status"]))
                        # Rows stored before `conc`/`flow` existed carry CQ and Qsn under their own names.
                        conc.append(_num(schema.first_of(row, "conc", "co2_mg_m3")))
                        flow.append(_num(schema.first_of(row, "flow", "qsn_m3_h")))
                        idx.append(k)
                offsets.append(len(status))
            p = self.params
            figs = hour_figures(np.array(offsets), np.array([st.row for st, _ in groups]), np.array(status, np.int8),
                                np.array(conc), np.array(flow), p.hour_min_valid_pct, p.rate_factor,
                                np.array(idx, np.int64), p.quadrant_rule)
            for g, (st, h) in enumerate(groups):
                empty = offsets[g + 1] == offsets[g]
                st.series.set_base(h, EMPTY if empty else int(figs.status[g]), int(figs.valid_min[g]),
                                   int(figs.stopped_min[g]), int(figs.op_min[g]), float(figs.conc[g]),
                                   float(figs.flow[g]))
                st.dirty_hours.discard(h)
                st.series_dirty = True
        closed = int(now) - int(now) % 3600  # hours before this one have ended
        lines, audits = [], []
        for st in self.stacks.values():
            ser = st.series
            if ser.start_s is None:
                continue
            if ser.end_s < closed:
                ser.index(closed - 3600)  # hours without data since the last one: to be resolved as well
                st.series_dirty = True
            if not st.series_dirty:
                continue
            st.series_dirty = False
            changes = ser.resolve(self._periods(st), self._policy(st), *self._mpv(st))
            for i, r in changes:
                h = ser.hour(i)
                if h + 3600 > now:
                    continue  # still open
                if now - ser.a["touched"][i] < st.plant.settle_s:
                    # Its own readings are still arriving (a backfill, a broker's backlog): write it once
                    # they stop, rather than a partial hour that a reader could take for the result.
                    st.series_dirty = True
                    continue
                old_final = bool(ser.a["final"][i])
                revision = int(ser.a["revision"][i])
                if old_final and ser.a["status"][i] >= 0:
                    revision += 1
                    audits.append(self._audit_line(*st.key, "revision", h * 1000, now,
                                                   {"old": self._hour_row(st, i, ser.resolved(i), old_final,
                                                                          revision - 1),
                                                    "new": self._hour_row(st, i, r, old_final, revision)},
                                                   "late or corrected data"))
                final = self._may_be_final(st, h, r, now)
                lines.append(schema.figure_line(schema.HOUR, *st.key, h, self._hour_row(st, i, r, final, revision)))
                st.pending_commits.append((i, r, final, revision))
        self._write(lines, audits)
        for st in self.stacks.values():
            for i, r, final, revision in st.pending_commits:
                st.series.commit(i, r, final, revision)
            st.pending_commits.clear()

    def _hour_row(self, st: StackState, i: int, r: Resolved, final: bool, revision: int) -> dict:
        a = st.series.a
        row = st.row
        stopped = r.status == H_STOPPED
        rate = 0.0 if stopped else r.conc * r.flow * float(self.params.rate_factor[row])
        mass = 0.0 if stopped else rate * r.op_min / 60.0 / 1000.0
        us = st.plant.regime == "us_part75"
        out = {"status": HOUR_STATUS_NAMES[r.status], "method": METHOD_NAMES[r.method],
               "valid_min": int(a["valid_min"][i]), "stopped_min": int(a["stopped_min"][i]), "op_min": r.op_min,
               "co2_mg_m3": math.nan if us else r.conc, "qsn_m3_h": math.nan if us else r.flow,
               "rate_kg_h": rate, "mass_t": mass, "revision": revision, "final": final,
               "provisional": r.provisional, "regime": st.plant.regime, "t0_k": float(self.params.t0_k[row]),
               "co2_density_kg_m3": float(self.params.density_kg_m3[row]),
               "min_valid_pct": int(self.params.hour_min_valid_pct[row]),
               "base": BASE_NAMES[int(a["base"][i])], "base_op_min": int(a["base_op"][i]),
               "conc": r.conc, "flow": r.flow, "conc_measured": float(a["conc"][i]),
               "flow_measured": float(a["flow"][i])}
        if us:
            out.update(part75_reported(r.conc, r.flow, r.op_min / 60.0, stopped))
        return out

    def _periods(self, st: StackState) -> np.ndarray:
        """Reporting period (local calendar year) of each hour in the series."""
        ser = st.series
        starts = ser.start_s + 3600 * np.arange(ser.n, dtype=np.int64)
        zone = st.live.zone
        y0 = dt.datetime.fromtimestamp(ser.start_s, zone).year
        y1 = dt.datetime.fromtimestamp(ser.end_s, zone).year
        bounds = np.array([dt.datetime(y, 1, 1, tzinfo=zone).timestamp() for y in range(y0 + 1, y1 + 1)])
        return (y0 + np.searchsorted(bounds, starts, side="right")).astype(np.int64)

    @staticmethod
    def _policy(st: StackState) -> int:
        return POLICIES.index(st.plant.substitution)

    def _mpv(self, st: StackState) -> tuple[float, float]:
        mp = st.stack.max_potential
        co2, flow = mp.get("co2_pct"), mp.get("flow_m3h")
        if st.plant.regime == "us_part75":
            # Part 75 MPVs are a CO2 % and a flow at standard conditions; flow_m3h is taken as such.
            return (math.nan if co2 is None else float(co2),
                    math.nan if flow is None else float(flow) * K.SCF_PER_M3)
        conc = math.nan if co2 is None else co2 * 1e4 * float(self.params.density_kg_m3[st.row])
        # A maximum potential flow is given as actual flow; using it as dry standard flow overstates, which
        # is the conservative side for a substitute.
        return conc, math.nan if flow is None else float(flow)

    @staticmethod
    def _may_be_final(st: StackState, h: int, r: Resolved, now: float) -> bool:
        """Past the lateness window by the wall clock, not provisional, and no data for it for `settle_s`.

        The settle time keeps a backfill (a gateway replaying hours of stored readings) from finalising an
        hour after its first message and revising it with every later one.
        """
        if r.provisional or r.status == MISSING:
            return False
        touched = st.series.last_touched(st.series.index(h))
        return bool(now >= h + 3600 + st.lateness_s and now - touched >= st.plant.settle_s)

    def _finalise_hours(self, now: float) -> None:
        lines, commits = [], []
        for st in self.stacks.values():
            ser = st.series
            for h in sorted(ser.pending_final):
                if h < ser.start_s or h in st.dirty_hours:
                    continue
                i = ser.index(h)
                if ser.a["status"][i] < 0:
                    continue
                r = ser.resolved(i)
                if self._may_be_final(st, h, r, now):
                    revision = int(ser.a["revision"][i])
                    lines.append(schema.figure_line(schema.HOUR, *st.key, h, self._hour_row(st, i, r, True, revision)))
                    commits.append((st, i, r, revision))
        self._write(lines)
        for st, i, r, revision in commits:
            st.series.commit(i, r, True, revision)

    def _evict(self, now: float) -> None:
        for st in self.stacks.values():
            cutoff = int(now) - st.retention_s
            cutoff -= cutoff % 3600
            busy = {m - m % 3600 for m in st.dirty_minutes} | st.dirty_hours
            busy |= {h for h, t in st.loaded_touched.items() if now - t < LOADED_IDLE_S}
            if cutoff <= st.authoritative_from and not (st.loaded_hours - busy):
                continue
            for m in [m for m in st.raw if m < cutoff and (m - m % 3600) not in busy]:
                del st.raw[m]
            for m in [m for m in st.minutes if m < cutoff and (m - m % 3600) not in busy]:
                del st.minutes[m]
            st.series.trim(int(now) - HISTORY_DAYS * 86400)
            st.loaded_hours &= busy
            st.loaded_touched = {h: t for h, t in st.loaded_touched.items() if h in busy}
            # Hours below the cutoff still held (busy) were loaded or are dirty; everything else there
            # now lives in the store only.
            st.authoritative_from = max(st.authoritative_from, cutoff)
            st.live.prune(cutoff - 86400)

    # ---- live figures ------------------------------------------------------------------------------
    def _refresh_live(self, now: float, publish: bool) -> None:
        due = publish and self.publish is not None and now - self._last_live_publish >= 60
        for st in self.stacks.values():
            body = self._live_body(st, now)
            changed = self._live.get(st.key) != body
            self._live[st.key] = body
            if self.publish is not None and publish and (changed or due):
                self.publish(f"cems/v1/{st.plant.id}/{st.stack.id}/live", orjson.dumps(body), True)
        if due:
            self._last_live_publish = now

    def _live_body(self, st: StackState, now: float) -> dict:
        zone = st.live.zone
        at = min(now, st.last_reading_ms / 1000) if st.last_reading_ms else now
        body = {"plant": st.plant.id, "stack": st.stack.id,
                "at": dt.datetime.fromtimestamp(at, zone).isoformat(),
                "rate_t_h": st.latest_valid[1] / 1000.0 if st.latest_valid else None}
        body.update(st.live.to_date_t(at))
        latest = st.minutes.get(st.latest_minute) if st.latest_minute is not None else None
        if st.last_reading_ms is None:
            status = "no_data"
        elif now - st.last_reading_ms / 1000 > 300:
            status = "stale"
        else:
            status = latest["status"] if latest else "pending"
        body["status"] = status
        body["last_reading_at"] = (dt.datetime.fromtimestamp(st.last_reading_ms / 1000, zone).isoformat()
                                   if st.last_reading_ms else None)
        body["latest_valid_minute"] = (dt.datetime.fromtimestamp(st.latest_valid[0], zone).isoformat()
                                       if st.latest_valid else None)
        return body

    def live(self, plant: str, stack: str) -> dict | None:
        return self._live.get((plant, stack))

    def snapshot_counters(self) -> dict:
        return dict(self.counters)



def _num(v) -> float:
    return math.nan if v is None else float(v)


def _mass_kg(row: dict | None) -> float:
    if row is None:
        return 0.0
    v = _num(row.get("mass_kg"))
    return 0.0 if math.isnan(v) else v

