"""Raw readings leave memory `RAW_WINDOW_S` after their minute; late data for such a minute reads the hour's
raw readings back from the store first, so its figure is recomputed from all of them (in-process store)."""

import math
import sys

import orjson

from cems.ingest import pipeline as pl
from cems.ingest.message import Message
from cems.store import schema
from cems.store.influx import InfluxError
from tests.ingest.test_pipeline_batch import T0, make_pipeline

ROW = {"co2_pct": 12.0, "o2_pct": 6.0, "flow_m3h": 1.2e6, "velocity_ms": 14.0, "temp_c": 50.0, "press_kpa": 101.0,
       "h2o_pct": 9.0}


def minute_msg(stack: str, ts: list[float]) -> Message:
    body = {"ts": ts, **{k: [v] * len(ts) for k, v in ROW.items()}}
    return Message(f"cems/v1/p/{stack}/readings", orjson.dumps(body), T0, source="mqtt")


def minute_n(lines: list[str], stack: str, minute_s: int) -> int:
    mine = [ln for ln in lines if ln.startswith(f"minute,plant=p,stack={stack} ") and ln.endswith(f" {minute_s}000")]
    return int(mine[-1].split(",n=")[1].split("i")[0])


def test_late_reading_for_an_evicted_minute_is_merged_with_its_stored_readings(tmp_path, monkeypatch):
    p, db = make_pipeline(tmp_path)
    stored: dict[tuple[str, str], list[tuple]] = {}

    def raw_readings(_db, plant, stack, start_ms, end_ms):
        return [r for r in stored.get((plant, stack), []) if start_ms <= r[0] < end_ms]

    monkeypatch.setattr(schema, "raw_readings", raw_readings)
    now = T0 + 61.0
    p.start(now)
    first = [T0 + k for k in range(60)]
    p.handle(minute_msg("a", first), now)
    stored[("p", "a")] = [(t * 1000, tuple(ROW.get(n, math.nan) for n in pl.NAMES), "N", None, None) for t in first]
    p.tick(now)
    assert minute_n(db.lines, "a", T0) == 60

    later = T0 + pl.RAW_WINDOW_S + 3600 + 120.0  # past the raw window, the hour settled and not busy
    p.handle(minute_msg("a", [later - 60]), later)  # the stack's newest reading is past the window too
    p.tick(later)
    st = p.stacks[("p", "a")]
    assert T0 not in st.raw and st.raw_evicted[T0 - T0 % 3600] == T0 + 60 and T0 in st.minutes  # the figure stays

    p.handle(minute_msg("a", [T0 + 30.5]), later)  # a late reading for that minute
    assert len(st.raw[T0]) == 61  # the 60 read back, and the new one
    p.tick(later + 1)
    assert minute_n(db.lines, "a", T0) == 61
    assert T0 - T0 % 3600 not in st.raw_evicted


def test_recent_minutes_keep_their_raw_readings(tmp_path):
    p, _ = make_pipeline(tmp_path)
    now = T0 + 61.0
    p.start(now)
    p.handle(minute_msg("a", [T0 + k for k in range(60)]), now)
    p.tick(now)
    p.tick(now + pl.RAW_WINDOW_S - 120)
    assert T0 in p.stacks[("p", "a")].raw


def test_a_backfill_in_order_never_reads_its_own_readings_back(tmp_path, monkeypatch):
    """Three hours of old readings arriving in order hours after their time (a gateway emptying its store):
    the window is measured from the stack's newest reading too, so no minute still being filled has left
    memory, and processing never waits on the store (which may be down)."""
    p, db = make_pipeline(tmp_path)

    def store_down(*_a, **_k):
        raise InfluxError("InfluxDB unreachable")

    now = T0 + 3.5 * 3600.0  # the data is hours old, within the plant's window (lateness 2 h + 2 h)
    p.start(now)
    monkeypatch.setattr(schema, "raw_readings", store_down)
    for m in range(180):  # 3 hours, each minute in two messages (the second crossing into the next minute)
        t = T0 + 60 * m
        p.handle(minute_msg("a", [t + k for k in range(0, 30)]), now)
        p.handle(minute_msg("a", [t + k for k in range(30, 61)]), now)
        now += 31.0  # each tick past the scan interval and the settle time
        p.tick(now)
    st = p.stacks[("p", "a")]
    assert st.raw_evicted and min(st.raw) >= T0 + 180 * 60 - pl.RAW_WINDOW_S - 60  # memory stays bounded
    assert minute_n(db.lines, "a", T0 + 60 * 100) == 60



def test_a_failed_read_back_holds_only_that_stacks_messages(tmp_path, monkeypatch):
    """A message needing old hours back from a store that is down waits (outcome None, nothing changed),
    and so do its stack's later messages, in this batch and in later ones; every other stack's go on. Reads
    are paused for a moment after a failure; handed back after `retry_waiting` once the store answers, the
    waiting messages are handled in order."""
    p, db = make_pipeline(tmp_path)
    now = T0 + 8 * 3600.0  # T0's hour is outside the window (lateness 2 h + 2 h): late data reads it back
    p.start(now)
    p.tick(now)
    down = {"yes": True}
    reads = []

    def raw_readings(*_a, **_k):
        reads.append(1)
        if down["yes"]:
            raise InfluxError("InfluxDB unreachable")
        return []

    monkeypatch.setattr(schema, "raw_readings", raw_readings)
    monkeypatch.setattr(schema, "figure_rows", lambda *_a, **_k: {})
    recent = now - 600
    late_a = minute_msg("a", [T0 + k for k in range(60)])
    a1, a2 = (minute_msg("a", [recent + k + 60 * i for k in range(60)]) for i in (0, 1))
    msgs = [minute_msg("b", [recent + k for k in range(60)]), late_a, minute_msg("c", [recent + k for k in range(60)]),
            a1]
    outs = p.handle_batch(msgs, now)
    assert [o and o.accepted for o in outs] == [60, None, 60, None] and p.waiting == {("p", "a")}
    assert p.counters["accepted"] == 120 and p.counters["messages"] == 2  # nothing of the waiting ones taken
    assert p.handle_batch([a2], now) == [None]  # a later message of the stack waits behind them
    assert p.reads_paused(now) and len(reads) == 1
    p.retry_waiting()
    assert p.handle_batch([late_a, a1, a2], now + 0.1) == [None] * 3 and len(reads) == 1  # paused: not tried
    p.retry_waiting()
    assert p.handle_batch([late_a, a1, a2], now + 0.6) == [None] * 3 and len(reads) == 2  # tried, still down
    down["yes"] = False
    p.retry_waiting()
    assert p.handle_batch([late_a, a1, a2], now + 0.6) == [None] * 3  # the pause doubled after the second failure
    p.retry_waiting()
    assert [o.accepted for o in p.handle_batch([late_a, a1, a2], now + 2.0)] == [60, 60, 60]
    assert not p.waiting and p.counters["accepted"] == 300


def test_state_held_stays_bounded_over_a_long_run(tmp_path):
    """Ten hours of three stacks at 1 Hz in real time (a minute's 60 readings in one message, the clock a
    second past each minute): from the fifth hour on, what the pipeline holds stops growing: raw readings
    of the hour being filled and `RAW_WINDOW_S` before, minute rows for the plant's window (lateness 2 h +
    2 h, hour-aligned)."""
    p, _ = make_pipeline(tmp_path)
    start = T0 - T0 % 3600
    p.start(start + 1.0)
    held: list[tuple[int, int, int]] = []  # every 15 minutes: raw readings, minute rows, bytes of the rows
    for k in range(10 * 60):
        t = start + 60 * k
        now = t + 61.0
        for s in ("a", "b", "c"):
            p.handle(minute_msg(s, [t + i for i in range(60)]), now)
        p.tick(now)
        if k % 15 == 14:
            sts = p.stacks.values()
            held.append((sum(len(mr) for st in sts for mr in st.raw.values()),
                         sum(len(st.minutes) for st in sts), sum(_deep_size(st.minutes) for st in sts)))
    raw, minutes, row_bytes = zip(*held, strict=True)
    window_min = (4 + 1) * 60  # the window, and the hour the cutoff is aligned back to
    # 1 Hz, three stacks: the hour being filled stays whole (it is busy until computed), older minutes for
    # `RAW_WINDOW_S`
    assert max(raw) <= 3 * (3600 + pl.RAW_WINDOW_S), held
    assert max(minutes) <= 3 * window_min
    # what memory keeps of a minute's figures is a few numbers, not the whole row the store keeps
    assert max(b / n for b, n in zip(row_bytes, minutes, strict=True)) < 300, held
    early, late = slice(16, 24), slice(24, 40)  # hours 4-6 and 6-10
    for what in (raw, minutes, row_bytes):
        assert max(what[late]) == max(what[early]), held  # flat, not creeping


def _deep_size(d: dict) -> int:
    """Bytes of a dict of minute -> tuple of numbers, with its keys and elements (small ints are shared)."""
    return sys.getsizeof(d) + sum(sys.getsizeof(k) + sys.getsizeof(v) + sum(sys.getsizeof(x) for x in v)
                                  for k, v in d.items())
