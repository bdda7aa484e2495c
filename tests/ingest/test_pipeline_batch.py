"""Messages handled in batches give exactly what they give one by one: the same outcomes, the same points.

The pipeline judges a batch's readings together and takes each stack's readings in bulk unless they repeat a
reading time; these tests draw streams full of repeats (duplicates, corrections), stacks interleaved, bad
messages and readings spanning minutes, and compare the two ways, with an in-process store.
"""

import math

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cems.config import parse_config
from cems.ingest.message import Message
from cems.ingest.pipeline import Pipeline
from cems.store import schema
from cems.store.deadletter import DeadLetters

T0 = 1_790_000_040  # a minute start [epoch s]
NOW = T0 + 600.0
STACKS = ("a", "b", "c")


class MemoryDb:
    """Points written, in order; an empty store for reads."""

    def __init__(self):
        self.lines: list[str] = []

    def create_database(self):
        pass

    def query(self, q, **kw):
        return []

    def write(self, lines, precision="ms"):
        self.lines.extend(lines)


def make_pipeline(tmp_path) -> tuple[Pipeline, MemoryDb]:
    cfg = parse_config(f"""
[storage]
data_dir = "{tmp_path}"
[[plants]]
id = "p"
name = "P"
timezone = "Asia/Shanghai"
[[plants.stacks]]
id = "a"
[[plants.stacks]]
id = "b"
area_m2 = 12.0
[[plants.stacks]]
id = "c"
""")
    db = MemoryDb()
    return Pipeline(cfg, db, DeadLetters(tmp_path)), db


value = st.one_of(st.none(), st.sampled_from([12.5, 13.0, 6.0, 50.0, 101.3, 9.5, 1.4e6, 15.0, 99.0, -3.0]))
reading = st.fixed_dictionaries({
    "s": st.integers(0, 150),  # seconds after T0: up to three minutes, so messages span minutes
    "co2_pct": value, "o2_pct": value, "flow_m3h": value, "velocity_ms": value, "temp_c": value,
    "press_kpa": value, "h2o_pct": value,
})


@st.composite
def message(draw) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["batch", "batch", "batch", "single", "bad", "unknown"]))
    stack = draw(st.sampled_from(STACKS))
    topic = f"cems/v1/p/{stack}/readings"
    if kind == "bad":
        return topic, b'{"ts": "yesterday"}'
    if kind == "unknown":
        return "cems/v1/p/zz/readings", orjson.dumps({"ts": T0, "co2_pct": 1.0})
    rows = draw(st.lists(reading, min_size=1, max_size=1 if kind == "single" else 6))
    status = draw(st.sampled_from(["N", "N", "C", "D", "F", "x"]))
    body: dict = {"gw": draw(st.sampled_from(["g1", "g2"])), "seq": draw(st.integers(0, 5))}
    if kind == "single":
        r = rows[0]
        body.update({k: v for k, v in r.items() if k != "s"}, ts=T0 + r["s"], status=status)
    else:
        body["ts"] = [T0 + r["s"] for r in rows]
        for k in rows[0]:
            if k != "s":
                body[k] = [r[k] for r in rows]
        body["status"] = draw(st.one_of(st.just(status), st.lists(st.sampled_from(["N", "C", "D"]),
                                                                    min_size=len(rows), max_size=len(rows))))
    return topic, orjson.dumps(body)


def last_per_point(lines: list[str]) -> dict[str, str]:
    """Each point's last line (InfluxDB keeps the last write of a series and time), audits aside."""
    out = {}
    for ln in lines:
        if ln.startswith((schema.AUDIT, schema.REJECTED)):
            continue
        head, _, rest = ln.partition(" ")
        out[(head, rest.rsplit(" ", 1)[1])] = ln
    return out


def audits(lines: list[str]) -> list[str]:
    """Audit and rejection records without their unique timestamps, sorted."""
    return sorted(ln.rsplit(" ", 1)[0] for ln in lines if ln.startswith((schema.AUDIT, schema.REJECTED)))


def run(tmp_path, msgs, chunks: list[int] | None):
    p, db = make_pipeline(tmp_path)
    p.start(NOW)
    ms = [Message(t, b, NOW, source="mqtt") for t, b in msgs]
    outs = []
    if chunks is None:
        outs = [p.handle(m, NOW) for m in ms]
    else:
        i = 0
        for n in chunks:
            outs += p.handle_batch(ms[i:i + n], NOW)
            i += n
        outs += p.handle_batch(ms[i:], NOW) if i < len(ms) else []
    p.flush()
    p.tick(NOW + 1)
    return outs, db.lines, p.counters


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msgs=st.lists(message(), min_size=1, max_size=25), chunks=st.lists(st.integers(1, 10), max_size=6))
def test_batches_give_what_one_by_one_gives(tmp_path, msgs, chunks):
    one_outs, one_lines, one_counters = run(tmp_path / "one", msgs, None)
    b_outs, b_lines, b_counters = run(tmp_path / "batch", msgs, chunks)
    strip = [(o.plant, o.stack, o.accepted, o.duplicates, o.corrections, o.invalid, o.rejected) for o in one_outs]
    assert [(o.plant, o.stack, o.accepted, o.duplicates, o.corrections, o.invalid, o.rejected)
            for o in b_outs] == strip
    assert one_counters == b_counters
    assert last_per_point(b_lines) == last_per_point(one_lines)
    assert audits(b_lines) == audits(one_lines)


def test_a_big_batch_of_clean_minutes_is_stored_whole(tmp_path):
    """Two stacks interleaved, a minute a message: every reading and every minute figure, once."""
    msgs = []
    for m in range(5):
        for s in ("a", "b"):
            ts = [T0 + 60 * m + k for k in range(60)]
            body = {"ts": ts, "co2_pct": [12.0 + k / 100 for k in range(60)], "o2_pct": 6.0, "flow_m3h": 1.2e6,
                    "velocity_ms": 14.0, "temp_c": 50.0, "press_kpa": 101.0, "h2o_pct": 9.0}
            msgs.append((f"cems/v1/p/{s}/readings", orjson.dumps(body)))
    outs, lines, counters = run(tmp_path, msgs, [len(msgs)])
    assert [o.accepted for o in outs] == [60] * 10 and counters["accepted"] == 600
    minutes = [ln for ln in lines if ln.startswith("minute,")]
    assert len(minutes) == 10 and all('n=60i' in ln for ln in minutes)
    co2 = {}
    for ln in minutes:
        stack = ln.split("stack=")[1].split(" ")[0]
        co2[(stack, ln.rsplit(" ", 1)[1])] = float(ln.split(",co2_pct=")[1].split(",")[0])
    assert all(math.isclose(v, 12.295) for v in co2.values())
