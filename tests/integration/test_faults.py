"""Issue 4's guarantees under faults, on a real mosquitto and a real InfluxDB (DESIGN §1 principle 2, §3, §5, §6).

A known stream (two stacks of plant `it`, three hours each, one 60-reading message per stack-minute, ending two
days ago; calibration, an analyser fault long enough to substitute an hour, and a stop) is sent once cleanly.
Every fault run sends the same stream through a fault (the service killed, InfluxDB or the broker down,
everything delivered twice and shuffled) and must end with the very same hour figures and every reading
stored once. Then late data for a final hour must revise it with an audit record, and data for a locked
period must be rejected.

Each run has a broker and a database of its own (started here, never the session's), so stopping them
disturbs no other test.
"""

import datetime as dt
import json
import random
import time
from dataclasses import dataclass

import pytest

from tests.conftest import close
from tests.integration.conftest import STACKS, Running, publish, start_service, wait_for
from tests.integration.faultkit import (
    EXPECTED,
    HOURS,
    STACK_IDS,
    PrivateBackends,
    Publisher,
    Subscriber,
    all_settled,
    flag_of,
    health,
    hour_diffs,
    minute_body,
    pipeline_counter,
    private_backends,
    publish_chunks,
    reading_stats,
    readings_in,
    settled_hours,
    stats_diffs,
    stream,
    stream_start,
    topic,
)

pytestmark = pytest.mark.integration


@dataclass
class Clean:
    """The clean run: its service (still running, used by the late-data test), stream and figures."""

    run: Running
    start: dt.datetime
    t0: int
    msgs: list[tuple[str, str]]
    hours: dict[str, list[dict]]
    stats: dict[str, tuple[int, float]]


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Clean:
    b = private_backends("cems-faults-clean-")
    run = None
    try:
        run = start_service(b, tmp_path_factory.mktemp("clean"))
        start = stream_start()
        t0 = int(start.timestamp())
        msgs = stream(t0)
        publish_chunks(b.mqtt_port, msgs)
        hours = all_settled(run, start)
        yield Clean(run, start, t0, msgs, hours, reading_stats(run))
    finally:
        if run is not None:
            run.stop()
        b.close()


@pytest.fixture
def private() -> PrivateBackends:
    b = private_backends()
    yield b
    b.close()


@pytest.fixture
def fault_service(private, tmp_path) -> Running:
    run = start_service(private, tmp_path)
    yield run
    run.stop()


def assert_same_as_clean(run: Running, clean: Clean, what: str) -> None:
    hours = all_settled(run, clean.start)
    for s in STACK_IDS:
        diffs = hour_diffs(hours[s], clean.hours[s])
        assert not diffs, f"after {what}, the hours of it/{s} should equal the clean run's:\n" + "\n".join(diffs)
    diffs = stats_diffs(reading_stats(run), clean.stats)
    assert not diffs, f"after {what}, every reading should be stored once, as sent:\n" + "\n".join(diffs)


def test_clean_run_is_the_expected_baseline(clean):
    """The figures every fault run is held to are themselves right: statuses, minutes, HBHA, all final."""
    for s in STACK_IDS:
        items = clean.hours[s]
        for key, want in EXPECTED[s].items():
            assert [i[key] for i in items] == want, f"it/{s} {key}: expected {want}, got {[i[key] for i in items]}"
        assert [i["start"] for i in items] == [(clean.start + dt.timedelta(hours=h)).isoformat()
                                               for h in range(HOURS)], f"it/{s}: expected hours from {clean.start}"
        assert all(i["revision"] == 0 and i["final"] is True for i in items), f"it/{s}: expected final, revision 0"
        assert all(i["co2_t"] > 0 for i in items), f"it/{s}: expected a positive mass every hour"
    h0, h1, h2 = clean.hours["k1"]
    assert close(h1["co2_mg_m3"], (h0["co2_mg_m3"] + h2["co2_mg_m3"]) / 2), \
        "k1 hour 1: expected the mean CQ of the hours before and after (HBHA)"
    assert close(h1["qsn_m3_h"], (h0["qsn_m3_h"] + h2["qsn_m3_h"]) / 2), \
        "k1 hour 1: expected the mean Qsn of the hours before and after (HBHA)"
    assert {s: n for s, (n, _) in clean.stats.items()} == {"k1": HOURS * 3600, "k2": HOURS * 3600}, \
        f"expected {HOURS * 3600} stored readings per stack, got {clean.stats}"


def test_kill_9_mid_stream_loses_and_doubles_nothing(clean, private, fault_service):
    """(a) kill -9 three times while the gateways go on publishing; the broker holds what arrives meanwhile for
    the service's persistent session and delivers again what was taken but not acknowledged."""
    run = fault_service
    n = len(clean.msgs)
    pub = Publisher(private.mqtt_port, clean.msgs, chunk=12, pause_s=0.4)
    pub.start()
    for share in (0.2, 0.45, 0.7):
        wait_for(lambda s=share: pub.sent >= s * n or not pub.is_alive(), 60, f"{share:.0%} of the stream published")
        run.wait(lambda: pipeline_counter(run, "messages") > 0, 30, "messages taken since the (re)start")
        run.stop(kill=True)
        sent = pub.sent
        wait_for(lambda s=sent: pub.sent >= min(n, s + 24) or not pub.is_alive(), 30,
                 "messages published while the service is down")
        run.start()
    pub.finish()
    assert_same_as_clean(run, clean, "three kill -9 mid-stream")


def test_influx_outage_is_spooled_then_drained(clean, private, fault_service):
    """(b) InfluxDB down for 15 s mid-stream: the service goes on taking messages, says so on /health (degraded,
    data waiting in the spool), and once InfluxDB is back the spool drains to the clean run's figures."""
    run = fault_service
    port = private.mqtt_port
    half = len(clean.msgs) // 2
    publish_chunks(port, clean.msgs[:half])
    first = readings_in(clean.msgs[:half])
    run.wait(lambda: pipeline_counter(run, "accepted") >= first, 60, f"the first half's {first} readings accepted")
    accepted_before = pipeline_counter(run, "accepted")
    down_at = time.monotonic()
    private.stop_influx()
    publish_chunks(port, clean.msgs[half:])  # QoS 1: returns once the broker has every message

    seen = {}

    def spooling():
        code, body = run.get("/health", token=None)
        seen["health"] = (code, body)
        checks = (body or {}).get("checks", {})
        spool = checks.get("spool") or {}
        return (code == 200 and (spool.get("lines") or 0) > 0 and (spool.get("oldest_age_s") or 0) > 0
                and checks.get("pipeline", {}).get("accepted", 0) > accepted_before)

    try:
        run.wait(spooling, 15, "data waiting in the spool")
    except AssertionError as e:
        raise AssertionError(f"expected /health during the InfluxDB outage to show data waiting in checks.spool "
                             f"(lines, bytes, oldest_age_s > 0) and checks.pipeline.accepted above "
                             f"{accepted_before}; last answer: {seen.get('health')}") from e
    code, body = seen["health"]
    spool = body["checks"]["spool"]
    assert code == 200, f"expected /health to answer 200 while InfluxDB is down, got {code}"
    assert body["status"] == "degraded", f"expected status degraded while InfluxDB is down, got {body}"
    assert spool["ok"] is False, f"expected checks.spool.ok false while data waits, got {spool}"
    assert spool["lines"] > 0 and spool["bytes"] > 0, f"expected spooled lines and bytes, got {spool}"
    assert spool["oldest_age_s"] > 0, f"expected the age of the oldest spooled data, got {spool}"
    assert body["checks"]["pipeline"]["accepted"] > accepted_before, \
        f"expected readings accepted during the outage (more than {accepted_before}), got {body['checks']}"

    time.sleep(max(0.0, 15 - (time.monotonic() - down_at)))  # the outage itself
    private.start_influx()

    def drained():
        code, body = run.get("/health", token=None)
        seen["health"] = (code, body)
        spool = ((body or {}).get("checks") or {}).get("spool") or {}
        return code == 200 and spool.get("lines") == 0 and body.get("status") == "ok"

    try:
        run.wait(drained, 90, "the spool to drain")
    except AssertionError as e:
        raise AssertionError(f"expected the spool to drain (checks.spool.lines 0, status ok) once InfluxDB is back; "
                             f"last answer: {seen.get('health')}") from e
    assert_same_as_clean(run, clean, "a 15 s InfluxDB outage")


def test_late_data_waiting_for_influxdb_holds_up_only_its_own_stack(private, fault_service):
    """(b') During an InfluxDB outage, a message for an hour outside memory (its raw record must be read back
    from the database first) waits, and so does the rest of its stack's stream; the other stack's readings
    go on being handled. Once InfluxDB is back (and the spool drained) the waiting ones are handled, in
    order, and every reading is stored once."""
    run = fault_service
    port = private.mqtt_port
    recent = int(time.time()) // 60 * 60 - 30 * 60
    old = int(stream_start().timestamp())  # two days ago: outside the in-memory window

    def msg(stack: str, t0: int, minute: int) -> tuple[str, str]:
        return topic(stack), json.dumps(minute_body(stack, t0, minute))

    publish(port, [msg("k1", recent, 0), msg("k2", recent, 0)])
    run.wait(lambda: pipeline_counter(run, "accepted") >= 120, 30, "the first minute of both stacks accepted")
    time.sleep(2)  # a tick: memory now starts at the window, older hours live in the database only
    private.stop_influx()
    publish(port, [msg("k1", old, 0), msg("k1", recent, 1), msg("k2", recent, 1), msg("k2", recent, 2)])
    run.wait(lambda: pipeline_counter(run, "accepted") >= 240 and pipeline_counter(run, "waiting_for_store") == 2,
             30, "k2's minutes accepted while k1's late minute and the one after it wait for InfluxDB")
    time.sleep(2)
    assert pipeline_counter(run, "accepted") == 240, "expected nothing of k1 handled while its late minute waits"
    private.start_influx()
    run.wait(lambda: pipeline_counter(run, "waiting_for_store") == 0 and pipeline_counter(run, "accepted") == 360
             and health(run).get("status") == "ok", 90, "the waiting messages handled once InfluxDB is back")
    seen = {}

    def stored():
        seen["stats"] = {s: n for s, (n, _) in reading_stats(run).items()}
        return seen["stats"] == {"k1": 180, "k2": 180}

    try:
        run.wait(stored, 30, "every reading stored")
    except AssertionError as e:
        raise AssertionError(f"expected every reading stored once (180 a stack), got {seen.get('stats')}") from e


def test_broker_restarts_lose_nothing(clean, private, fault_service):
    """(c) The broker restarted under a running service (it reconnects with backoff and subscribes again), then
    again while the service is stopped with messages queued for its session (mosquitto persistence keeps them)."""
    run = fault_service
    port = private.mqtt_port
    third = len(clean.msgs) // 3
    first, second, last = clean.msgs[:third], clean.msgs[third:2 * third], clean.msgs[2 * third:]

    def mqtt_ok():
        return health(run).get("checks", {}).get("mqtt", {}).get("ok")

    publish_chunks(port, first)
    run.wait(lambda: pipeline_counter(run, "accepted") > 0, 30, "some readings accepted")
    private.stop_broker()
    run.wait(lambda: mqtt_ok() is False, 15, "checks.mqtt.ok false once the broker is gone")
    time.sleep(2)  # down long enough for the collector to fail a reconnection attempt or two
    private.start_broker()
    run.wait(lambda: mqtt_ok() is True, 60, "checks.mqtt.ok true again: reconnected and subscribed")
    publish_chunks(port, second)
    want = readings_in(first + second)
    run.wait(lambda: pipeline_counter(run, "accepted") >= want, 60,
             f"all {want} readings of the first two thirds accepted after the broker's restart")
    assert pipeline_counter(run, "accepted") == want, f"expected exactly {want} readings accepted"

    run.stop()
    publish_chunks(port, last)  # held for the stopped service's persistent session
    private.stop_broker()
    private.start_broker()
    run.start()
    assert_same_as_clean(run, clean, "two broker restarts")


def test_doubled_and_shuffled_delivery_gives_the_same_figures(clean, private, fault_service):
    """(d) Every message twice, in random order: duplicates are dropped and counted, the figures do not move."""
    run = fault_service
    twice = clean.msgs * 2
    random.Random(20240604).shuffle(twice)
    publish_chunks(private.mqtt_port, twice)
    assert_same_as_clean(run, clean, "doubled and shuffled delivery")
    counters = health(run)["checks"]["pipeline"]
    n = readings_in(clean.msgs)
    assert (counters["accepted"], counters["duplicates"], counters["corrections"]) == (n, n, 0), \
        f"expected {n} readings accepted, {n} duplicates and no corrections, got {counters}"


def test_late_correction_of_a_final_hour_is_a_revision(clean):
    """(e) A gateway's correction of a few readings of a final hour: the hour is recomputed from raw, its
    revision becomes 1, its mass follows, and the audit log keeps old and new. Nothing else changes."""
    run = clean.run
    stack, hour, minute, k, delta_pct = "k2", 1, 50, 5, 0.5
    m = hour * 60 + minute
    assert flag_of(stack, m) == "N", "the corrected minute must be a valid one"
    orig = minute_body(stack, clean.t0, m)
    fix = {key: v[:k] if isinstance(v, list) else v for key, v in orig.items()}
    fix["co2_pct"] = [round(c + delta_pct, 4) for c in fix["co2_pct"]]
    fix["seq"] = 10_000
    added_pct = sum(fix["co2_pct"]) - sum(orig["co2_pct"][:k])

    before = clean.hours[stack][hour]
    # k2 measures CO2 dry and has no calibration: the minute's mean CO2 moves by added/60 readings, the hour's
    # CQ by that over its valid minutes; Qsn does not move, so the mass scales with CQ (DESIGN §4).
    cq = before["co2_mg_m3"] + added_pct / 60 / before["valid_minutes"] * 1e4 * 44.01 / 22.4
    mass_t = before["co2_t"] * cq / before["co2_mg_m3"]
    publish(clean.run.backends.mqtt_port, [(topic(stack), json.dumps(fix))])

    got = settled_hours(run, stack, clean.start, cond=lambda items: items[hour]["revision"] == 1)
    revised = got[hour]
    assert close(revised["co2_mg_m3"], cq), f"expected CQ {cq} mg/m3 after the correction, got {revised}"
    assert close(revised["co2_t"], mass_t), f"expected {mass_t} t after the correction, got {revised}"
    assert revised["final"] is True, f"expected the revised hour final, got {revised}"
    unchanged = hour_diffs([{**revised, "co2_t": 0.0, "co2_mg_m3": 0.0, "revision": 0}],
                           [{**before, "co2_t": 0.0, "co2_mg_m3": 0.0}])
    assert not unchanged, "expected only the mass, CQ and revision of the corrected hour to change:\n" + \
        "\n".join(unchanged)
    others = hour_diffs(got[:hour] + got[hour + 1:], clean.hours[stack][:hour] + clean.hours[stack][hour + 1:])
    others += hour_diffs(settled_hours(run, "k1", clean.start), clean.hours["k1"])
    assert not others, "expected every other hour unchanged:\n" + "\n".join(others)

    audits = run.influx_query("SELECT * FROM audit WHERE kind = 'revision'")
    assert len(audits) == 1, f"expected one revision record in the audit log, got {audits}"
    [a] = audits
    target = (clean.start + dt.timedelta(hours=hour)).astimezone(dt.UTC).isoformat()
    assert (a["plant"], a["stack"], a["target"]) == ("it", stack, target), f"expected it/{stack} {target}, got {a}"
    old, new = json.loads(a["old"]), json.loads(a["new"])
    assert (old["revision"], new["revision"]) == (0, 1), f"expected revision 0 -> 1 in the audit record, got {a}"
    assert close(old["mass_t"], before["co2_t"]) and close(new["mass_t"], mass_t), \
        f"expected mass {before['co2_t']} -> {mass_t} t in the audit record, got {a}"
    assert a["cause"], f"expected a cause in the audit record, got {a}"
    corrections = run.influx_query("SELECT count(cause) FROM audit WHERE kind = 'correction'")
    assert corrections and corrections[0]["count"] == k, f"expected {k} correction records, got {corrections}"

    stats = reading_stats(run)
    want = {**clean.stats, stack: (clean.stats[stack][0], clean.stats[stack][1] + added_pct)}
    diffs = stats_diffs(stats, want)
    assert not diffs, "expected the corrected readings replaced in place, no reading added:\n" + "\n".join(diffs)


def test_data_for_a_locked_period_is_rejected(private, tmp_path):
    """(f) Readings older than `lock_after_days` reject their whole message: a notice with the reason, a
    `rejected` point, a dead letter, and no reading stored. A message of unlocked readings still goes in."""
    plants = STACKS.replace("settle_s = 2\n", "settle_s = 2\nlock_after_days = 1\n", 1)
    assert "lock_after_days = 1" in plants, "the plant config should carry lock_after_days = 1"
    run = start_service(private, tmp_path, plants)
    sub = Subscriber(private.mqtt_port, "cems/v1/it/+/rejected")
    try:
        now = int(time.time())
        old = now - 3 * 86400 - now % 60
        recent = now - 12 * 3600 - now % 60
        locked = {**minute_body("k1", old, 0), "gw": "gw-lock", "seq": 1}
        mixed = {**minute_body("k1", recent + 120, 0), "gw": "gw-lock", "seq": 2}
        mixed["ts"] = [old, *mixed["ts"][1:]]  # one locked reading rejects all 60
        fine = {**minute_body("k1", recent, 0), "gw": "gw-lock", "seq": 3}
        sent = [json.dumps(b) for b in (locked, mixed, fine)]
        publish(private.mqtt_port, [(topic("k1"), p) for p in sent])
        run.wait(lambda: len(sub.messages) >= 2 and pipeline_counter(run, "accepted") >= 60, 30,
                 "two rejection notices and the unlocked message accepted")
        counters = health(run)["checks"]["pipeline"]
        assert (counters["rejected"], counters["accepted"]) == (2, 60), \
            f"expected 2 messages rejected and 60 readings accepted, got {counters}"
    finally:
        sub.close()
        run.stop()

    notices = [(t, json.loads(p)) for t, p in sub.messages]
    assert [t for t, _ in notices] == ["cems/v1/it/k1/rejected"] * 2, f"expected two notices for k1, got {notices}"
    assert sorted(n["seq"] for _, n in notices) == [1, 2] and {n["gw"] for _, n in notices} == {"gw-lock"}, \
        f"expected the notices to name gw-lock and seq 1 and 2, got {notices}"
    assert all(n["reason"].startswith("period locked") for _, n in notices), \
        f"expected the reason to say the period is locked, got {notices}"

    rows = run.influx_query("SELECT reason, seq FROM rejected WHERE plant = 'it' AND stack = 'k1'")
    assert sorted(r["seq"] for r in rows) == [1, 2] and all("locked" in r["reason"] for r in rows), \
        f"expected two `rejected` points with the lock as reason, got {rows}"

    letters = [json.loads(x) for f in sorted((run.data_dir / "deadletter").glob("*.jsonl"))
               for x in f.read_text().splitlines()]
    assert sorted(r["payload"] for r in letters) == sorted(sent[:2]), \
        f"expected the two locked messages, whole, in the dead-letter store, got {letters}"
    assert all(r["reason"].startswith("period locked") for r in letters), f"expected the lock as reason: {letters}"

    stored = run.influx_query("SELECT count(co2_pct) FROM reading GROUP BY stack")
    assert [(r["stack"], r["count"]) for r in stored] == [("k1", 60)], \
        f"expected only the 60 unlocked readings stored, got {stored}"
    window = run.influx_query(f"SELECT count(co2_pct) FROM reading WHERE time >= {recent}s AND time < {recent + 60}s")
    assert window and window[0]["count"] == 60, f"expected the stored readings to be the unlocked message's: {window}"
