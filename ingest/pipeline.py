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
from typing import NamedTuple

import numpy as np
import orjson

from cems.compute import constants as K
from cems.compute.channels import CHANNELS, NAMES
from cems.compute.hour import H_STOPPED, HOUR_STATUS_NAMES, MISSING, hour_figures
from cems.compute.minute import minute_figures
from cems.compute.params import StackParams
from cems.compute.part75 import part75_reported
from cems.compute.substitution import EMPTY, METHOD_NAMES, POLICIES
from cems.compute.validity import VALID, VALIDITY_NAMES, classify_readings, describe_reason
from cems.config import Config, PlantConfig, StackConfig
from cems.ingest.decode import (
    REPORTED_INTERVALS,
    Decoded,
    Rejected,
    Reported,
    check_times,
    decode_payload,
    decode_reported,
    parse_topic,
)
from cems.ingest.hourseries import BASE_NAMES, HISTORY_DAYS, HourSeries, Resolved
from cems.ingest.live import LiveTotals, local_year_start
from cems.ingest.message import Message
from cems.ingest.rawwindow import Block, MinuteRaw, Raw, same_reading
from cems.store import schema
from cems.store.deadletter import DeadLetters
from cems.store.influx import Influx, InfluxError
from cems.store.lineproto import line

log = logging.getLogger("cems.pipeline")
DEFAULT_RANGES = {c.name: c.default_range for c in CHANNELS}
_EMPTY = MinuteRaw.from_records({}).columns()
LIVE_PUBLISH_S = 5.0  # a stack's live figures go out on MQTT at most this often while they change
LOADED_IDLE_S = 300.0  # old hours read back for late data stay in memory this long after their last data
# Raw readings stay in memory until their minute is this far behind both the clock and the stack's newest
# reading (late readings within it merge without a read from the store); their minute figures stay for the
# plant's whole window (`StackState.retention_s`).
RAW_WINDOW_S = 1800
RAW_SCAN_S = 30.0  # how often each stack's raw minutes are looked over for that
# After a failed read from the store, messages needing one wait (`Pipeline.waiting`) without trying again
# for this long, doubling to `READ_PAUSE_MAX_S`: a database that hangs rather than refuses would otherwise
# cost its timeout on every round of the processor.
READ_PAUSE_S = 0.5
READ_PAUSE_MAX_S = 8.0


class ReadsPaused(InfluxError):
    """A read from the store not tried, within the pause after a failed one."""


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


class MinuteKept(NamedTuple):
    """What memory keeps of a closed minute's figures: what its hour's figures take from it (status code,
    concentration, flow), its mass for the live totals, and so its status for `/live`. About 220 bytes with
    its dict entry, against about 1,000 for the whole row (`schema.MINUTE_FIELDS`), which only the store keeps:
    the plant's window holds 4-5 hours of minutes per stack."""
    status: int
    conc: float
    flow: float
    mass_kg: float  # 0.0 where the row has none


@dataclass
class StackState:
    row: int
    plant: PlantConfig
    stack: StackConfig
    raw: dict[int, MinuteRaw] = field(default_factory=dict)  # minute [s] -> its raw readings
    # minute [s] -> what memory keeps of its figures (`MinuteKept`); the whole row is in the store
    minutes: dict[int, MinuteKept] = field(default_factory=dict)
    series: HourSeries = field(default_factory=HourSeries)  # the hourly series, base and resolved
    dirty_minutes: set[int] = field(default_factory=set)
    dirty_hours: set[int] = field(default_factory=set)
    loaded_hours: set[int] = field(default_factory=set)  # old hours read back whole from the store
    loaded_touched: dict[int, float] = field(default_factory=dict)  # old hour -> last time data came for it
    # Hours (at or after authoritative_from) some of whose minutes' raw readings have left memory
    # (`RAW_WINDOW_S`): hour [s] -> end of the newest minute of it evicted [s]. Later minutes of the hour are
    # whole in memory; late data for an earlier one reads the hour's raw readings back first.
    raw_evicted: dict[int, int] = field(default_factory=dict)
    raw_scanned_at: float = 0.0
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
    def raw_evicted_end(self) -> int:
        """End of the newest evicted minute (readings at or after it are whole in memory)."""
        return max(self.raw_evicted.values(), default=0)

    @property
    def lateness_s(self) -> int:
        return int(self.plant.lateness_h * 3600)

    @property
    def retention_s(self) -> int:
        """How long closed periods stay in memory before only the store holds them."""
        return self.lateness_s + 2 * 3600


@dataclass
class _Readings:
    st: StackState
    d: Decoded
    out: Outcome


@dataclass
class _Reported:
    plant: str
    stack: str
    rep: Reported


def _outcome(topic: str) -> Outcome:
    """An outcome naming the plant and stack of a topic of the expected shape (for a rejection's notice)."""
    parts = topic.split("/")
    return Outcome(plant=parts[2], stack=parts[3]) if len(parts) == 5 else Outcome()


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
        self._heads = [schema.reading_head(p.id, s.id) for p, s, _ in specs]  # by row
        self._minute_heads = [schema.series_head(schema.MINUTE, p.id, s.id) for p, s, _ in specs]
        self._by_row = list(self.stacks.values())
        self.counters = {"messages": 0, "accepted": 0, "duplicates": 0, "corrections": 0, "invalid": 0,
                         "rejected": 0, "reported": 0}
        self._last_live_publish = 0.0
        self._live_sent: dict[tuple[str, str], tuple[float, dict]] = {}  # stack -> (when, body) last published
        # stack -> (what its live body shows, the body): the body the API serves, rebuilt on change each tick
        self._live_built: dict[tuple[str, str], tuple[tuple, dict]] = {}
        self._audit_seq = 0
        self._out_ms: list[str] = []  # points waiting for `flush`
        self._out_ns: list[str] = []
        self.started = False
        # Stacks with messages waiting for a read from the store (old hours back, for late data) that failed:
        # their later messages wait too, in order, while every other stack's go on (`handle_batch`).
        self.waiting: set[tuple[str, str]] = set()
        self._reads_paused_until = 0.0
        self._read_pause_s = READ_PAUSE_S

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
        self._load_raw(st, start_s, end_s)
        for m, row in schema.figure_rows(self.db, schema.MINUTE, schema.MINUTE_FIELDS, plant, stack,
                                         start_s, end_s).items():
            st.minutes.setdefault(m, _kept(row))

    def _load_raw(self, st: StackState, start_s: int, end_s: int) -> None:
        """Raw readings of [start, end) from the store, for the minutes memory does not hold (a minute is
        held whole or not at all)."""
        fresh: dict[int, dict[int, Raw]] = {}
        for ts, vals, status, gw, seq in schema.raw_readings(self.db, *st.key, start_s * 1000, end_s * 1000):
            fresh.setdefault(ts // 60000 * 60, {})[ts] = (vals, status, gw, seq)
        for m, readings in fresh.items():
            if m not in st.raw:
                st.raw[m] = MinuteRaw.from_records(readings)

    def reads_paused(self, now: float) -> bool:
        """Whether reads from the store are paused after a failure (messages needing one wait meanwhile)."""
        return now < self._reads_paused_until

    def resume_reads(self) -> None:
        """The store is complete again (the spool has drained): end a pause of reads at once."""
        self._reads_paused_until = 0.0
        self._read_pause_s = READ_PAUSE_S

    def _read_failed(self, now: float) -> None:
        self._reads_paused_until = now + self._read_pause_s
        self._read_pause_s = min(2 * self._read_pause_s, READ_PAUSE_MAX_S)

    def _ensure_loaded(self, st: StackState, ts_ms: np.ndarray, now: float) -> None:
        """Bring whole old hours (or an hour's raw readings) back into memory before late readings for them
        are merged. Raises `InfluxError` if the store fails, or while reads are paused after a failure."""
        oldest = (int(ts_ms[0]) if len(ts_ms) == 1 else int(ts_ms.min())) // 1000
        if oldest >= st.authoritative_from and oldest >= st.raw_evicted_end:
            return  # the common case: every hour concerned is whole in memory
        oldest_in: dict[int, int] = {}  # hour -> its oldest minute among the readings
        for m in np.unique(ts_ms // 60000 * 60).tolist():
            oldest_in.setdefault(m - m % 3600, m)
        needed = [(h, m) for h, m in sorted(oldest_in.items())
                  if (h < st.authoritative_from and h not in st.loaded_hours)
                  or (h >= st.authoritative_from and m < st.raw_evicted.get(h, 0))]
        if needed and self.reads_paused(now):
            raise ReadsPaused("reads from the store are paused after a failure")
        try:
            for h, _ in needed:
                if h < st.authoritative_from:
                    self._load(st, h, h + 3600)
                    st.loaded_hours.add(h)
                else:
                    self._load_raw(st, h, h + 3600)
                    del st.raw_evicted[h]
        except InfluxError:
            self._read_failed(now)
            raise
        if needed:
            self._read_pause_s = READ_PAUSE_S
        for h in oldest_in:
            if h < st.authoritative_from:
                st.loaded_touched[h] = now

    # ---- messages ------------------------------------------------------------------------------
    def handle(self, msg: Message, now: float) -> Outcome | None:
        """Process one message (see `handle_batch`)."""
        return self.handle_batch([msg], now)[0]

    def handle_batch(self, msgs: list[Message], now: float) -> list[Outcome | None]:
        """Process messages in order, as if one by one; their points wait for `flush`.

        A message whose readings need a read from the store (old hours back, for late data) that fails
        waits, and so does every later message of its stack, here and in later calls, until the caller
        hands the waiting messages back after `retry_waiting`: their outcome is None, and nothing of them
        has changed any state. Every other stack's messages go on. The readings of all messages are judged
        in one pass over arrays; a stack's readings then take the bulk path unless they repeat a reading
        time (duplicates, corrections), in which case its messages are taken one by one, reading by reading.
        """
        judged = [self._judge(msg, now) for msg in msgs]
        readings = []
        for i, j in enumerate(judged):
            if not isinstance(j, _Readings):
                continue
            key = j.st.key
            if key not in self.waiting:
                try:
                    self._ensure_loaded(j.st, j.d.ts_ms, now)
                    readings.append(j)
                    continue
                except InfluxError as e:
                    if not isinstance(e, ReadsPaused):  # one line a failed read, not one a waiting stack
                        log.warning("%s/%s: old hours for late readings could not be read back from the store "
                                    "(%s); this stack's messages wait, the others go on", *key, e)
                    self.waiting.add(key)
            judged[i] = None  # waits
        outs: list[Outcome | None] = []
        for msg, j in zip(msgs, judged, strict=True):
            if j is None:
                outs.append(None)
                continue
            self.counters["messages"] += 1
            if isinstance(j, Rejected):
                outs.append(self._reject(msg, j, _outcome(msg.topic)))
            elif isinstance(j, _Readings):
                outs.append(j.out)
                if j.d.ignored_keys:
                    log.warning("%s/%s gw=%s: ignored unknown keys %s", *j.st.key, j.d.gw, ", ".join(j.d.ignored_keys))
            else:
                outs.append(self._store_reported(j))
        if readings:
            self._accept(readings, now)
        return outs

    def retry_waiting(self) -> None:
        """The caller hands the waiting messages back next, first and in order: let them try again."""
        self.waiting.clear()

    def _judge(self, msg: Message, now: float) -> "_Readings | Rejected | _Reported":
        """Decode and apply the message-level rules; nothing is recorded yet."""
        try:
            if msg.topic.endswith("/reported"):
                plant, stack = parse_topic(msg.topic, "reported")
                rep = decode_reported(msg.payload)
                if (plant, stack) not in self.stacks:
                    raise Rejected(f"unknown plant/stack {plant}/{stack}", rep.gw)
                return _Reported(plant, stack, rep)
            plant, stack = parse_topic(msg.topic)
            d = decode_payload(msg.payload)  # first, so a rejection can name the sender's gw and seq
            st = self.stacks.get((plant, stack))
            if st is None:
                raise Rejected(f"unknown plant/stack {plant}/{stack}", d.gw, d.seq)
            check_times(d, now, K.MAX_FUTURE_S, now - st.plant.lock_after_days * 86400)
        except Rejected as e:
            return e
        return _Readings(st, d, Outcome(plant=plant, stack=stack))

    def _store_reported(self, r: "_Reported") -> Outcome:
        """Keep a gateway's own interval figures beside ours (DESIGN §5, reported vs recalculated)."""
        rep = r.rep
        fields = {"values": orjson.dumps(rep.values).decode(), "gw": rep.gw or "",
                  "co2_kg": math.nan if rep.co2_kg() is None else rep.co2_kg(),
                  "seconds": REPORTED_INTERVALS[rep.interval]}
        self._write([line(schema.REPORTED, {"plant": r.plant, "stack": r.stack, "interval": rep.interval}, fields,
                          rep.start_s * 1000)])
        self.counters["reported"] += 1
        return Outcome(plant=r.plant, stack=r.stack, accepted=1)

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

    def _accept(self, batch: list["_Readings"], now: float) -> None:
        """Readings of accepted messages, in message order: judged together, then stored per stack."""
        p = self.params
        if len(batch) == 1:
            d = batch[0].d
            ts, values, flags = d.ts_ms, d.values, d.flags
            rows = np.full(len(d), batch[0].st.row)
        else:
            ts = np.concatenate([j.d.ts_ms for j in batch])
            values = np.concatenate([j.d.values for j in batch])
            flags = np.concatenate([j.d.flags for j in batch])
            rows = np.repeat(np.array([j.st.row for j in batch]), [len(j.d) for j in batch])
        cls = classify_readings(values, flags, rows, p.cal_a, p.cal_b, p.lo, p.hi, p.required)
        validity, reason = cls.validity, cls.reason
        ts_l = ts.tolist()
        minutes_l = [t // 60000 * 60 for t in ts_l]
        bounds = [0]
        by_stack: dict[tuple[str, str], list[int]] = {}
        for k, j in enumerate(batch):
            bounds.append(bounds[-1] + len(j.d))
            by_stack.setdefault(j.st.key, []).append(k)
        bulk: list[int] = []  # messages taking the bulk path
        for ks in by_stack.values():
            st = batch[ks[0]].st
            if self._repeats(st, [(bounds[k], bounds[k + 1]) for k in ks], ts_l, minutes_l):
                for k in ks:  # one by one, reading by reading
                    sl = slice(bounds[k], bounds[k + 1])
                    self._accept_each(st, batch[k].d, validity[sl], reason[sl], now, batch[k].out)
            else:
                bulk.extend(ks)
        if not bulk:
            return
        bulk.sort()  # back in message order, the order of the arrays
        if len(bulk) < len(batch):
            idx = np.concatenate([np.arange(bounds[k], bounds[k + 1]) for k in bulk])
            ts, values, flags, validity, reason = (a[idx] for a in (ts, values, flags, validity, reason))
            ts_l = ts.tolist()
            minutes_l = [t // 60000 * 60 for t in ts_l]
        heads, tails, status, gws, seqs = [], [], [], [], []
        invalid = (validity != 0).tolist()
        blocks: dict[tuple[int, int], list[int]] = {}  # (stack row, minute) -> reading positions
        pos = 0
        for k in bulk:
            j = batch[k]
            d, st = j.d, j.st
            n = len(d)
            end = pos + n
            heads += [self._heads[st.row]] * n
            tails += self._tails(d, validity[pos:end], reason[pos:end])
            status += d.status
            gws += [d.gw] * n
            seqs += [d.seq] * n
            j.out.accepted = n
            j.out.invalid = sum(invalid[pos:end])
            self.counters["accepted"] += n
            self.counters["invalid"] += j.out.invalid
            newest = max(ts_l[pos:end])
            if st.last_reading_ms is None or newest > st.last_reading_ms:
                st.last_reading_ms = newest
            m0 = minutes_l[pos]
            if n == 1 or min(minutes_l[pos:end]) == m0 == max(minutes_l[pos:end]):
                blocks.setdefault((st.row, m0), []).extend(range(pos, end))
            else:
                for i in range(pos, end):
                    blocks.setdefault((st.row, minutes_l[i]), []).append(i)
            pos = end
        self._write(schema.reading_lines(heads, ts, values, tails))
        # The window: one block per stack and minute.
        for (row, m), ix in blocks.items():
            st = self._by_row[row]
            if len(ix) == ix[-1] - ix[0] + 1:  # consecutive
                sel = slice(ix[0], ix[-1] + 1)
                block = Block(ts[sel], values[sel], flags[sel], status[sel], gws[sel], seqs[sel])
            else:
                sel = np.array(ix)
                block = Block(ts[sel], values[sel], flags[sel], [status[i] for i in ix], [gws[i] for i in ix],
                              [seqs[i] for i in ix])
            mr = st.raw.get(m)
            if mr is None:
                mr = st.raw[m] = MinuteRaw()
            mr.add(block, max(ts_l[i] for i in ix))
            st.dirty_minutes.add(m)
            st.series.touch(m - m % 3600, now)

    @staticmethod
    def _repeats(st: StackState, parts: list[tuple[int, int]], ts: list[int], minutes: list[int]) -> bool:
        """Whether a stack's readings in this batch repeat a reading time, among themselves or held."""
        if len(parts) == 1:
            a, b = parts[0]
            t, mins = ts[a:b], minutes[a:b]
        else:
            t = [x for a, b in parts for x in ts[a:b]]
            mins = [x for a, b in parts for x in minutes[a:b]]
        if len(t) > 1 and len(set(t)) != len(t):
            return True
        held = st.raw.keys() & set(mins)
        if not held:
            return False  # the common batch: a minute not yet begun
        by_minute: dict[int, list[int]] = {}
        for m, x in zip(mins, t, strict=True):
            if m in held:
                by_minute.setdefault(m, []).append(x)
        return any(st.raw[m].overlaps(xs) for m, xs in by_minute.items())

    def _tails(self, d: Decoded, validity: np.ndarray, reason: np.ndarray) -> list[str]:
        """`schema.reading_tail` of each reading of one message."""
        n = len(d)
        if n > 1 and not validity.any() and d.status.count(d.status[0]) == n:  # the common batch: one tail
            return [schema.reading_tail(d.status[0], "valid", "", d.gw, d.seq)] * n
        cache: dict[tuple, str] = {}
        out = []
        for st_, v, r in zip(d.status, validity.tolist(), reason.tolist(), strict=True):
            t = cache.get((st_, v, r))
            if t is None:
                t = cache[(st_, v, r)] = schema.reading_tail(st_, VALIDITY_NAMES[v],
                                                              describe_reason(r, st_) if r else "", d.gw, d.seq)
            out.append(t)
        return out

    def _accept_each(self, st: StackState, d: Decoded, validity: np.ndarray, reasons: np.ndarray, now: float,
                     out: Outcome) -> None:
        """One message's readings one by one: duplicates are dropped, corrections replace (and are audited)."""
        plant, stack = st.key
        minutes, ts_list, vals = (d.ts_ms // 60000 * 60).tolist(), d.ts_ms.tolist(), d.values.tolist()
        held = {m: st.raw[m].records() for m in set(minutes) if m in st.raw}
        pending: dict[int, Raw] = {}
        keep: list[int] = []
        audits = []
        for i, (m, ts) in enumerate(zip(minutes, ts_list, strict=True)):
            rec = (tuple(vals[i]), d.status[i], d.gw, d.seq)
            old = pending.get(ts)
            if old is None:
                bucket = held.get(m)
                old = bucket.get(ts) if bucket else None
            if old is not None:
                if same_reading(old, rec):
                    out.duplicates += 1
                    continue
                out.corrections += 1
                audits.append(self._audit_line(plant, stack, "correction", ts, now,
                                               {"old": self._raw_json(old), "new": self._raw_json(rec)},
                                               f"gateway correction gw={d.gw} seq={d.seq}"))
            pending[ts] = rec
            keep.append(i)
        v, r = validity[keep], reasons[keep]
        kd = Decoded(d.ts_ms[keep], d.values[keep], d.flags[keep], [d.status[i] for i in keep], d.gw, d.seq)
        self._write(schema.reading_lines([self._heads[st.row]] * len(keep), kd.ts_ms, kd.values,
                                         self._tails(kd, v, r) if keep else []), audits)
        out.invalid = int(np.count_nonzero(v))
        touched = set()
        for ts, rec in pending.items():
            m = ts // 60000 * 60
            held.setdefault(m, {})[ts] = rec
            touched.add(m)
        for m in touched:
            st.raw[m] = MinuteRaw.from_records(held[m])
            st.dirty_minutes.add(m)
            st.series.touch(m - m % 3600, now)
        if pending:
            st.last_reading_ms = max(st.last_reading_ms or 0, max(pending))
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
        blocks = [st.raw[m].columns() if m in st.raw else _EMPTY for st, m in groups]
        counts = [len(b.ts_ms) for b in blocks]
        offsets = np.zeros(len(groups) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        values = np.concatenate([b.values for b in blocks])
        flags = np.concatenate([b.flags for b in blocks])
        rows = np.repeat(np.array([st.row for st, _ in groups], np.int64), counts)
        p = self.params
        cls = classify_readings(values, flags, rows, p.cal_a, p.cal_b, p.lo, p.hi, p.required)
        figs = minute_figures(offsets, np.array([st.row for st, _ in groups]), cls.validity,
                              cls.values, p)
        status = figs.status.tolist()
        floats = np.column_stack([figs.means, figs.qs_m3_h, figs.qsn_m3_h, figs.co2_dry_pct, figs.co2_mg_m3,
                                  figs.rate_kg_h, figs.mass_kg, figs.conc, figs.flow])  # schema.MINUTE_FLOATS
        self._write(schema.minute_lines([self._minute_heads[st.row] for st, _ in groups],
                                        [VALIDITY_NAMES[x] for x in status],
                                        np.column_stack([figs.n, figs.n_valid, figs.n_stopped]), floats,
                                        [st.plant.regime for st, _ in groups], [m for _, m in groups]))
        conc, flow, mass, rate = (a.tolist() for a in (figs.conc, figs.flow, figs.mass_kg, figs.rate_kg_h))
        for g, (st, m) in enumerate(groups):
            old = st.minutes.get(m)
            kept = st.minutes[m] = MinuteKept(status[g], conc[g], flow[g], 0.0 if math.isnan(mass[g]) else mass[g])
            st.live.add(m, kept.mass_kg - (0.0 if old is None else old.mass_kg))
            st.dirty_minutes.discard(m)
            st.dirty_hours.add(m - m % 3600)
            if st.latest_minute is None or m >= st.latest_minute:
                st.latest_minute = m
            if status[g] == VALID and (st.latest_valid is None or m >= st.latest_valid[0]):
                st.latest_valid = (m, rate[g])

    def _close_hours(self, now: float) -> None:
        """Base figures for closed dirty hours, then substitution over each touched stack's series."""
        # An hour whose readings are still arriving (a backfill, a broker's backlog) waits until they stop, as
        # its write would (below): computing it at every tick meanwhile would only be thrown away.
        groups = [(st, h) for st in self.stacks.values() for h in sorted(st.dirty_hours)
                  if h + 3600 <= now and now - st.series.touched(h) >= st.plant.settle_s]
        for st, h in groups:
            if h < st.authoritative_from and h not in st.loaded_hours:
                self._load(st, h, h + 3600)
                st.loaded_hours.add(h)
                st.loaded_touched[h] = now
        if groups:
            status, conc, flow, idx, offsets = [], [], [], [], [0]
            for st, h in groups:
                kept = st.minutes
                for k, m in enumerate(range(h, h + 3600, 60)):
                    v = kept.get(m)
                    if v is None:
                        continue
                    status.append(v[0])
                    conc.append(v[1])
                    flow.append(v[2])
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
            self._evict_raw(st, now, busy)
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
            st.raw_evicted = {h: e for h, e in st.raw_evicted.items() if h >= st.authoritative_from}
            st.live.prune(cutoff - 86400)

    @staticmethod
    def _evict_raw(st: StackState, now: float, busy: set[int]) -> None:
        """Raw readings of minutes more than `RAW_WINDOW_S` behind both the clock and the stack's newest
        reading leave memory (about 100 bytes a reading; the minute figures stay for the whole window).
        Measured from the newest reading too, so a backfill of old data in order (a gateway emptying its
        store after an outage) never needs its own readings back from the store, which would stall the
        pipeline while InfluxDB is down. Only minutes at or after `authoritative_from`: older hours come
        and go whole."""
        if now - st.raw_scanned_at < RAW_SCAN_S:
            return
        st.raw_scanned_at = now
        newest = now if st.last_reading_ms is None else min(now, st.last_reading_ms / 1000)
        cutoff = int(newest) - RAW_WINDOW_S
        old = [m for m in st.raw if st.authoritative_from <= m < cutoff and m not in st.dirty_minutes
               and (m - m % 3600) not in busy]
        for m in old:
            del st.raw[m]
            h = m - m % 3600
            st.raw_evicted[h] = max(st.raw_evicted.get(h, 0), m + 60)

    # ---- live figures ------------------------------------------------------------------------------
    def _refresh_live(self, now: float, publish: bool) -> None:
        """The live bodies the API serves, every tick; on MQTT (retained), a stack's body when it has changed,
        at most every `LIVE_PUBLISH_S` unless its status changed, and every stack's at least once a minute
        (DESIGN §3)."""
        due = publish and self.publish is not None and now - self._last_live_publish >= 60
        for st in self.stacks.values():
            body = self._live_body(st, now)
            if self.publish is None or not publish:
                continue
            at, sent = self._live_sent.get(st.key, (-math.inf, None))
            if due or sent != body and (now - at >= LIVE_PUBLISH_S or sent is None
                                        or sent["status"] != body["status"]):
                self.publish(f"cems/v1/{st.plant.id}/{st.stack.id}/live", orjson.dumps(body), True)
                self._live_sent[st.key] = (now, body)
        if due:
            self._last_live_publish = now

    def _live_body(self, st: StackState, now: float) -> dict:
        """The stack's live body (DESIGN §7 `/live`): the one built last time, unless something it shows
        changed (a tick builds it for every stack every second)."""
        at = min(now, st.last_reading_ms / 1000) if st.last_reading_ms else now
        latest = st.minutes.get(st.latest_minute) if st.latest_minute is not None else None
        if st.last_reading_ms is None:
            status = "no_data"
        elif now - st.last_reading_ms / 1000 > 300:
            status = "stale"
        else:
            status = VALIDITY_NAMES[latest.status] if latest else "pending"
        key = (at, status, st.live.version, st.latest_valid, st.last_reading_ms)
        cached = self._live_built.get(st.key)
        if cached is not None and cached[0] == key:
            return cached[1]
        zone = st.live.zone
        body = {"plant": st.plant.id, "stack": st.stack.id,
                "at": dt.datetime.fromtimestamp(at, zone).isoformat(),
                "rate_t_h": st.latest_valid[1] / 1000.0 if st.latest_valid else None}
        body.update(st.live.to_date_t(at))
        body["status"] = status
        body["last_reading_at"] = (dt.datetime.fromtimestamp(st.last_reading_ms / 1000, zone).isoformat()
                                   if st.last_reading_ms else None)
        body["latest_valid_minute"] = (dt.datetime.fromtimestamp(st.latest_valid[0], zone).isoformat()
                                       if st.latest_valid else None)
        self._live_built[st.key] = (key, body)
        return body

    def live(self, plant: str, stack: str) -> dict | None:
        built = self._live_built.get((plant, stack))
        return None if built is None else built[1]

    def snapshot_counters(self) -> dict:
        return dict(self.counters)



def _kept(row: dict) -> MinuteKept:
    # Rows stored before `conc`/`flow` existed carry CQ and Qsn under their own names.
    mass = _num(row.get("mass_kg"))
    return MinuteKept(VALIDITY_NAMES.index(row["status"]), _num(schema.first_of(row, "conc", "co2_mg_m3")),
                      _num(schema.first_of(row, "flow", "qsn_m3_h")), 0.0 if math.isnan(mass) else mass)


def _num(v) -> float:
    return math.nan if v is None else float(v)

