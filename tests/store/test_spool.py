"""The spool in front of InfluxDB and the intake journal, with an in-process fake database (unit tests;
the real database's outages are tests/integration/test_faults.py)."""

import threading

import pytest

from cems.ingest.message import Message
from cems.store.deadletter import DeadLetters
from cems.store.influx import InfluxError
from cems.store.journal import Journal
from cems.store.spool import BATCH, SpooledInflux, series_lanes


class FakeDB:
    url = "http://fake"

    def __init__(self):
        self.points: list[tuple[str, str]] = []
        self.down = False
        self.refuse: str | None = None

    def write(self, lines, precision="ms"):
        if self.down:
            raise InfluxError("unreachable")
        if self.refuse and any(self.refuse in x for x in lines):
            raise InfluxError("400: field type conflict", transient=False, status=400)
        self.points += [(precision, x) for x in lines]

    def query(self, q):
        if self.down:
            raise InfluxError("unreachable")
        return [{"n": len(self.points)}]

    def create_database(self):
        pass

    def ping(self):
        return not self.down


@pytest.fixture
def parts(tmp_path):
    db = FakeDB()
    clock = [1000.0]
    dl = DeadLetters(tmp_path)
    sp = SpooledInflux(db, tmp_path, dl, clock=lambda: clock[0])
    return db, sp, dl, clock


def test_writes_go_straight_through_while_the_database_takes_them(parts):
    db, sp, _, _ = parts
    sp.write(["a v=1 1", "a v=2 2"])
    assert [p for _, p in db.points] == ["a v=1 1", "a v=2 2"]
    assert sp.status()["ok"] and sp.status()["lines"] == 0
    assert sp.query("q") == [{"n": 2}]


def test_an_outage_spools_then_drains_in_order(parts):
    db, sp, _, clock = parts
    sp.write(["a v=1 1"])
    db.down = True
    sp.write(["a v=2 2", "a v=3 3"], precision="ms")
    db.down = False  # back, but the spool is not empty: later writes queue behind it, in order
    sp.write(["audit x=1 5"], precision="ns")
    clock[0] += 7
    s = sp.status()
    assert (s["ok"], s["records"], s["lines"]) == (False, 2, 3)
    assert s["bytes"] > 0 and s["oldest_age_s"] == pytest.approx(7.0)
    with pytest.raises(InfluxError, match="spooled"):
        sp.query("q")  # the database is incomplete until the spool has drained
    assert sp.drain_once()
    assert db.points == [("ms", "a v=1 1"), ("ms", "a v=2 2"), ("ms", "a v=3 3"), ("ns", "audit x=1 5")]
    assert sp.status() | {"bytes": 0} == {"ok": True, "records": 0, "lines": 0, "bytes": 0, "oldest_age_s": None,
                                          "refused": 0, "max_bytes": sp.log.max_bytes}
    sp.write(["b v=1 9"])  # straight through again
    assert db.points[-1] == ("ms", "b v=1 9")


def test_draining_stops_at_the_first_failure_and_loses_nothing(parts):
    db, sp, _, _ = parts
    db.down = True
    for i in range(5):
        sp.write([f"a v={i} {i}"])
    assert not sp.drain_once()
    db.down = False
    calls = []
    real = db.write

    def flaky(lines, precision="ms"):
        calls.append(lines)
        if len(calls) == 3:
            raise InfluxError("timeout")
        real(lines, precision)

    db.write = flaky
    assert not sp.drain_once()
    assert [p for _, p in db.points] == ["a v=0 0", "a v=1 1"]
    assert sp.drain_once()
    assert [p for _, p in db.points] == [f"a v={i} {i}" for i in range(5)]


def test_points_the_database_refuses_go_to_the_dead_letter_store(parts, tmp_path):
    db, sp, dl, _ = parts
    db.refuse = "bad"
    sp.write(["bad v=\"x\" 1"])
    assert db.points == [] and sp.status()["ok"] and sp.status()["refused"] == 1
    assert dl.count == 1
    text = next((tmp_path / "deadletter").glob("*.jsonl")).read_text()
    assert "database refused" in text and "bad v=" in text
    db.down = True
    sp.write(["bad v=\"y\" 2"])
    sp.write(["good v=1 3"])
    db.down = False
    assert sp.drain_once()  # a refused spooled batch does not block the ones behind it
    assert db.points == [("ms", "good v=1 3")] and dl.count == 2


def test_the_spool_survives_a_restart(tmp_path):
    db = FakeDB()
    db.down = True
    dl = DeadLetters(tmp_path)
    sp = SpooledInflux(db, tmp_path, dl)
    sp.write(["a v=1 1", "a v=2 2"])
    sp.write(["a v=3 3"])
    sp.close()  # a crash: nothing more than what is on disk
    db.down = False
    again = SpooledInflux(db, tmp_path, dl)
    assert again.status()["lines"] == 3 and again.spooling
    with pytest.raises(InfluxError):
        again.query("q")
    assert again.drain_once()
    assert [p for _, p in db.points] == ["a v=1 1", "a v=2 2", "a v=3 3"]
    again.close()
    assert SpooledInflux(db, tmp_path, dl).status()["lines"] == 0


def test_the_drain_thread_empties_the_spool_when_the_database_returns(parts):
    db, sp, _, _ = parts
    db.down = True
    sp.write(["a v=1 1"])
    stop = threading.Event()
    t = threading.Thread(target=sp.run_drain, args=(stop,), daemon=True)
    t.start()
    db.down = False
    for _ in range(100):
        if not sp.spooling:
            break
        stop.wait(0.1)
    stop.set()
    t.join(5)
    assert not sp.spooling and db.points == [("ms", "a v=1 1")]


def test_journal_keeps_messages_whole_and_in_order(tmp_path):
    j = Journal(tmp_path)
    msgs = [Message(f"cems/v1/p/s{i}/readings", bytes([i]) * i + b"\xff", 1e9 + i, mid=i, qos=1, source="mqtt")
            for i in range(5)]
    assert j.append(msgs[:2]) == 2
    assert j.append(msgs[2:]) == 5
    got = j.read(10)
    assert [s for s, _ in got] == [1, 2, 3, 4, 5]
    for (_, m), want in zip(got, msgs, strict=True):
        assert (m.topic, m.payload, m.received_at, m.source) == (want.topic, want.payload, want.received_at,
                                                                 want.source)
    j.commit(3)
    s = j.status()
    assert s["unprocessed"] == 2 and s["ok"] and s["oldest_unprocessed_age_s"] is not None
    j.close()
    again = Journal(tmp_path)
    assert [m.topic for _, m in again.read(10)] == [msgs[3].topic, msgs[4].topic]


def test_the_writer_thread_writes_submitted_batches_in_order_then_reports(parts):
    db, sp, _, _ = parts
    stop = threading.Event()
    t = threading.Thread(target=sp.run_writer, args=(stop,), daemon=True)
    t.start()
    done: list[int] = []
    try:
        sp.submit(["a v=1 1"], ["audit x=1 1"], lambda: done.append(1))
        db.down = True  # the second batch goes to the spool, still in order, and still counts as stored
        sp.submit(["a v=2 2"], [], lambda: done.append(2))
        assert sp.wait_written(5)
        assert done == [1, 2] and sp.spooling
        db.down = False
        with pytest.raises(InfluxError):
            sp.query("q")  # written, but part of it only to the spool: the database is not complete yet
        assert sp.drain_once()
        # Batches queued together are written together: each series in order (audits may come after).
        assert [p for _, p in db.points if p.startswith("a ")] == ["a v=1 1", "a v=2 2"]
        assert sorted(p for _, p in db.points) == ["a v=1 1", "a v=2 2", "audit x=1 1"]
        assert sp.query("q") == [{"n": 3}]
    finally:
        stop.set()
        t.join(5)


def _per_series(lines):
    out: dict[str, list[str]] = {}
    for x in lines:
        out.setdefault(x.split(" ", 1)[0], []).append(x)
    return out


def _big_batch(n_series: int = 40, per_series: int = BATCH // 16):
    """Points of several series interleaved, each series rewriting its own points (corrections) as it goes."""
    return [f"m,stack=s{i % n_series} v={i}i {(i // n_series) % 50}" for i in range(n_series * per_series)]


def test_series_lanes_keep_each_series_whole_and_in_order():
    lines = _big_batch()
    lanes = series_lanes(lines, 2)
    assert sorted(x for lane in lanes for x in lane) == sorted(lines)
    seen = [set(_per_series(lane)) for lane in lanes]
    assert not seen[0] & seen[1]
    for lane in lanes:
        for s, pts in _per_series(lane).items():
            assert pts == _per_series(lines)[s]


def test_a_big_write_goes_in_concurrent_lanes_each_series_in_order(parts):
    db, sp, _, _ = parts
    lines = _big_batch()
    assert len(lines) > 2 * BATCH
    sp.write(lines)
    got = [p for _, p in db.points]
    assert sorted(got) == sorted(lines)
    assert _per_series(got) == _per_series(lines)  # so the last write of every point is the last one sent


def test_a_big_write_during_an_outage_drains_each_series_in_order(parts):
    db, sp, _, _ = parts
    db.down = True
    lines = _big_batch()
    sp.write(lines)
    assert not db.points and sp.status()["lines"] == len(lines)
    db.down = False
    while not sp.drain_once():
        pass
    assert _per_series([p for _, p in db.points]) == _per_series(lines)


def test_write_latency_lands_in_cumulative_buckets(parts, monkeypatch):
    from cems.store import spool as spool_module

    _, sp, _, _ = parts
    ticks = iter([0.0, 0.03, 10.0, 10.004, 20.0, 32.0])  # requests of 30 ms, 4 ms and 12 s
    monkeypatch.setattr(spool_module.time, "perf_counter", lambda: next(ticks))
    for i in range(3):
        sp.write([f"a v={i} {i}"])
    le = dict(zip(spool_module.WRITE_BUCKETS_S, sp.write_le, strict=True))
    assert (le[0.005], le[0.025], le[0.05], le[10.0]) == (1, 1, 2, 2)  # 12 s is only under +Inf
    assert sp.writes == 3 and sp.write_seconds == pytest.approx(0.03 + 0.004 + 12.0)
    assert sp.write_le == sorted(sp.write_le)
