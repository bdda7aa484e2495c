"""The whole pipeline on real parts: MQTT in (mosquitto), figures out of the API, read from InfluxDB."""

import datetime as dt
import json
import random
import time

import pytest

from tests.conftest import close, rate_kg_h_closed_form
from tests.integration.conftest import TOKENS, Subscriber, publish

pytestmark = pytest.mark.integration
TZ = dt.timezone(dt.timedelta(hours=8))
K1 = {"flow_m3h": 1.3e6, "co2_pct": 12.5, "temp_c": 50.0, "press_kpa": 101.1, "h2o_pct": 10.0, "o2_pct": 6.0}
K2 = {"velocity_ms": 14.0, "co2_pct": 13.0, "temp_c": 48.0, "press_kpa": 100.8, "h2o_pct": 9.5}


def day_start() -> dt.datetime:
    """Local midnight two days ago, plus 8 h: three hours that sit inside one local day."""
    return dt.datetime.now(TZ).replace(hour=8, minute=0, second=0, microsecond=0) - dt.timedelta(days=2)


def stream(t0: int) -> list[tuple[str, str]]:
    """Three hours per stack, one 60-reading batch per minute.

    Hour 0: all valid. Hour 1: the first 15 minutes flagged F (unit stopped), the rest valid.
    Hour 2: minutes 44..59 flagged D (analyser fault): 44 valid of 60 operating minutes.
    """
    msgs = []
    for stack, values in (("k1", K1), ("k2", K2)):
        for h in range(3):
            for m in range(60):
                status = "N"
                if h == 1 and m < 15:
                    status = "F"
                if h == 2 and m >= 44:
                    status = "D"
                ts = [t0 + h * 3600 + m * 60 + s for s in range(60)]
                body = {"ts": ts, **values, "status": status, "gw": f"gw-{stack}", "seq": h * 60 + m}
                msgs.append((f"cems/v1/it/{stack}/readings", json.dumps(body)))
    return msgs


def expected_hours(stack: str) -> list[dict]:
    rate = rate_kg_h_closed_form(K1) if stack == "k1" else rate_kg_h_closed_form(K2, area_m2=30.0, kv=0.95)
    return [
        {"status": "measured", "valid_minutes": 60, "operating_minutes": 60, "co2_t": rate / 1000},
        {"status": "measured", "valid_minutes": 45, "operating_minutes": 45, "co2_t": rate * 45 / 60 / 1000},
        # Substituted (Part 75 initial procedure): the gap has not ended (no hour after it yet), so the
        # hour before stands in, provisionally, for the average of the hours before and after.
        {"status": "substituted", "valid_minutes": 44, "operating_minutes": 60, "co2_t": rate / 1000,
         "method": "HBHA", "final": False},
    ]


def wait_hours(service, stack: str, start: dt.datetime, n: int = 3, want_valid=(60, 45, 44),
               want_final=(True, True, False)) -> list[dict]:
    q = {"start": start.isoformat(), "end": (start + dt.timedelta(hours=n)).isoformat()}

    last = []

    def ready():
        code, body = service.get(f"/stacks/it/{stack}/hours", **q)
        last[:] = [(code, body)]
        items = body.get("items", []) if code == 200 else []
        if [i["valid_minutes"] for i in items] == list(want_valid) and [i["final"] for i in items] == list(want_final):
            return items
        return None

    try:
        return service.wait(ready, 120, f"{n} hours of {stack}")
    except AssertionError as e:
        raise AssertionError(f"last answer: {last}") from e


def check_hours(items: list[dict], stack: str) -> None:
    for got, want in zip(items, expected_hours(stack), strict=True):
        assert got["status"] == want["status"]
        assert got["valid_minutes"] == want["valid_minutes"]
        assert got["operating_minutes"] == want["operating_minutes"]
        assert close(got["co2_t"], want["co2_t"]), (got, want)
        assert got["revision"] == 0
        assert got["method"] == want.get("method")
        assert got["final"] is want.get("final", True)


def test_stream_to_hours_days_minutes(service):
    start = day_start()
    t0 = int(start.timestamp())
    publish(service.backends.mqtt_port, stream(t0))
    for stack in ("k1", "k2"):
        items = wait_hours(service, stack, start)
        check_hours(items, stack)
        assert items[0]["start"] == start.isoformat()

    rate = rate_kg_h_closed_form(K1)
    code, body = service.get("/stacks/it/k1/minutes", start=start.isoformat(),
                             end=(start + dt.timedelta(minutes=2)).isoformat())
    assert code == 200
    assert [m["status"] for m in body["items"]] == ["valid", "valid"]
    assert close(body["items"][0]["co2_kg"], rate / 60)
    assert body["items"][0]["readings"] == 60

    code, body = service.get("/stacks/it/k1/days", start=start.date().isoformat(),
                             end=(start + dt.timedelta(days=1)).date().isoformat())
    assert code == 200
    [day] = body["items"]
    assert day["date"] == start.date().isoformat()
    assert (day["measured_hours"], day["substituted_hours"], day["stopped_hours"]) == (2, 1, 0)
    assert close(day["co2_t"], rate / 1000 * (1 + 45 / 60 + 1))
    assert day["valid"] is False  # 2 measured of 3 operating hours is below 20/24

    # Every reading is stored once, as sent, with its validity.
    rows = service.influx_query("SELECT count(co2_pct) FROM reading WHERE plant = 'it' GROUP BY stack")
    assert {r["stack"]: r["count"] for r in rows} == {"k1": 3 * 3600, "k2": 3 * 3600}
    rows = service.influx_query("SELECT count(co2_pct) FROM reading WHERE validity = 'stopped'")
    assert rows[0]["count"] == 2 * 15 * 60


def test_duplicates_and_shuffled_redelivery_change_nothing(service):
    start = day_start()
    t0 = int(start.timestamp())
    msgs = stream(t0)
    publish(service.backends.mqtt_port, msgs)
    first = {s: wait_hours(service, s, start) for s in ("k1", "k2")}
    again = msgs[:]
    random.Random(7).shuffle(again)
    publish(service.backends.mqtt_port, again)
    service.wait(lambda: service.get("/health")[1]["checks"]["pipeline"]["duplicates"] >= 2 * 3 * 3600, 120,
                 "all duplicates counted")
    time.sleep(2)  # one more tick: nothing may have changed
    for s in ("k1", "k2"):
        assert wait_hours(service, s, start) == first[s]
    rows = service.influx_query("SELECT count(co2_pct) FROM reading WHERE plant = 'it' GROUP BY stack")
    assert {r["stack"]: r["count"] for r in rows} == {"k1": 3 * 3600, "k2": 3 * 3600}


def test_gateway_correction_replaces_and_is_audited(service):
    start = day_start()
    t0 = int(start.timestamp())
    topic = "cems/v1/it/k1/readings"
    ts = [t0 + s for s in range(60)]
    publish(service.backends.mqtt_port, [(topic, json.dumps({"ts": ts, **K1}))])
    fixed = {**K1, "co2_pct": 13.0}
    publish(service.backends.mqtt_port, [(topic, json.dumps({"ts": ts, **fixed, "gw": "g", "seq": 2}))])

    def minute_rate():
        code, body = service.get("/stacks/it/k1/minutes", start=start.isoformat(),
                                 end=(start + dt.timedelta(minutes=1)).isoformat())
        items = body.get("items", []) if code == 200 else []
        return items and close(items[0]["co2_kg"], rate_kg_h_closed_form(fixed) / 60) and items

    service.wait(minute_rate, 60, "the corrected minute")
    audits = service.influx_query("SELECT count(cause) FROM audit WHERE kind = 'correction'")
    assert audits[0]["count"] == 60


def test_bad_messages_are_rejected_with_a_reason_and_kept(service):
    sub = Subscriber(service.backends.mqtt_port, "cems/v1/+/+/rejected")
    now = time.time()
    try:
        publish(service.backends.mqtt_port, [
            ("cems/v1/it/k1/readings", b"{not json"),
            ("cems/v1/it/nope/readings", json.dumps({"ts": now, **K1, "gw": "g9", "seq": 4})),
            ("cems/v1/it/k1/readings", json.dumps({"ts": [now, now + 1], "co2_pct": [12.0]})),
            ("cems/v1/it/k1/readings", json.dumps({"ts": now + 3600, **K1})),
        ])
        service.wait(lambda: len(sub.messages) >= 4, 30, "four rejection notices")
    finally:
        sub.close()
    notices = {t: json.loads(p) for t, p, _ in sub.messages}
    reasons = sorted(json.loads(p)["reason"] for _, p, _ in sub.messages)
    assert any(r.startswith("not JSON") for r in reasons)
    assert "unknown plant/stack it/nope" in reasons
    assert any(r.startswith("unequal array lengths") for r in reasons)
    assert any("in the future" in r for r in reasons)
    assert notices["cems/v1/it/nope/rejected"]["gw"] == "g9" and notices["cems/v1/it/nope/rejected"]["seq"] == 4
    assert set(notices["cems/v1/it/nope/rejected"]) == {"reason", "gw", "seq", "received_at"}
    # Always in the dead-letter store, whole; also in InfluxDB.
    files = list((service.data_dir / "deadletter").glob("*.jsonl"))
    records = [json.loads(x) for f in files for x in f.read_text().splitlines()]
    assert len(records) == 4 and any(r["payload"] == "{not json" for r in records)
    assert service.influx_query("SELECT count(reason) FROM rejected")[0]["count"] == 4
    # The pipeline carries on.
    code, health = service.get("/health")
    assert health["checks"]["pipeline"]["rejected"] == 4 and health["status"] == "ok"


def test_invalid_readings_are_kept_with_their_reason(service):
    start = day_start()
    t0 = int(start.timestamp())
    bad = {**K1, "co2_pct": [99.0] + [12.5] * 59, "temp_c": [None] + [50.0] * 59}
    publish(service.backends.mqtt_port, [("cems/v1/it/k1/readings", json.dumps({"ts": [t0 + s for s in range(60)],
                                                                                 **bad}))])
    service.wait(lambda: service.influx_query("SELECT count(co2_pct) FROM reading"), 30, "readings stored")
    rows = service.influx_query("SELECT validity, reason, co2_pct FROM reading WHERE validity = 'invalid'")
    assert len(rows) == 1
    assert rows[0]["co2_pct"] == 99.0
    assert "co2_pct out of range" in rows[0]["reason"] and "temp_c missing" in rows[0]["reason"]


def test_live_totals_follow_the_latest_minutes(service):
    now = time.time()
    values = dict(K1)
    ts = [now - 179 + i for i in range(180)]
    publish(service.backends.mqtt_port, [("cems/v1/it/k1/readings", json.dumps({"ts": ts, **values}))])
    want = rate_kg_h_closed_form(values) / 1000

    def live():
        code, body = service.get("/stacks/it/k1/live")
        return code == 200 and body["rate_t_h"] is not None and body

    body = service.wait(live, 90, "a live rate")
    assert close(body["rate_t_h"], want)
    assert body["status"] in ("valid", "invalid")  # the newest closed minute may be a partial one
    assert body["day_to_date_t"] >= body["hour_to_date_t"] > 0 or body["hour_to_date_t"] == 0
    code, body = service.get("/stacks")
    assert {(s["plant"], s["stack"]) for s in body["items"]} == {("it", "k1"), ("it", "k2")}
    assert close([s for s in body["items"] if s["stack"] == "k1"][0]["rate_t_h"], want)
    # The live body is also retained on MQTT for dashboards and other consumers.
    sub = Subscriber(service.backends.mqtt_port, "cems/v1/it/k1/live")
    try:
        service.wait(lambda: sub.messages, 30, "the retained live message")
    finally:
        sub.close()
    assert sub.messages[0][2] is True and "rate_t_h" in json.loads(sub.messages[0][1])


def test_auth_and_scopes(service):
    assert service.get("/stacks", token=None)[0] == 401
    assert service.get("/stacks", token="wrong-token-123")[0] == 401
    assert service.get("/stacks/it/k1/live", token=TOKENS["operator"])[0] == 403  # scoped to another plant
    assert service.get("/stacks/it/k1/live", token=TOKENS["gateway"])[0] == 403  # gateways only send
    assert service.get("/stacks", token=TOKENS["operator"]) == (200, {"items": []})
    assert service.get("/stacks/it/zz/live")[0] == 404
    code, body = service.get("/stacks/it/k1/hours", start="2026-01-02", end="2026-01-01")
    assert code == 422 and "end" in body["detail"]
    code, body = service.get("/stacks/it/k1/hours", start="2026-01-01T00:00:00", end="2026-01-02")
    assert code == 422 and "offset" in body["detail"]


def test_nothing_lost_across_a_kill_and_restart(service):
    """kill -9 mid-stream; the broker holds what arrives meanwhile (persistent session, QoS 1)."""
    start = day_start()
    t0 = int(start.timestamp())
    msgs = stream(t0)
    half = len(msgs) // 2
    publish(service.backends.mqtt_port, msgs[:half])
    service.wait(lambda: service.get("/health")[1]["checks"]["pipeline"]["accepted"] > 0, 30, "some accepted")
    service.stop(kill=True)
    publish(service.backends.mqtt_port, msgs[half:])
    service.start()
    for stack in ("k1", "k2"):
        check_hours(wait_hours(service, stack, start), stack)
    rows = service.influx_query("SELECT count(co2_pct) FROM reading WHERE plant = 'it' GROUP BY stack")
    assert {r["stack"]: r["count"] for r in rows} == {"k1": 3 * 3600, "k2": 3 * 3600}


def test_reported_hour_figures_sit_beside_the_computed_ones(service):
    """DESIGN §5: a gateway's own hourly figure (the HJ 212 bridge's CN 2061) is kept with the difference."""
    start = day_start()
    t0 = int(start.timestamp())
    topic = "cems/v1/it/k1/readings"
    publish(service.backends.mqtt_port, [(topic, json.dumps({"ts": [t0 + m * 60 + s for s in range(60)], **K1}))
                                         for m in range(60)])
    logger_kg = 240_000.0
    reported = {"interval": "hour", "start": t0, "gw": "88888880000001",
                "values": {"a05001": {"Avg": 12.4, "Cou": logger_kg, "Min": 12.1, "Max": 12.9, "Flag": "N"}}}
    publish(service.backends.mqtt_port, [("cems/v1/it/k1/reported", json.dumps(reported)),
                                         ("cems/v1/it/k1/reported", json.dumps({"interval": "week", "start": t0}))])

    def ready():
        code, body = service.get("/stacks/it/k1/hours", start=start.isoformat(),
                                 end=(start + dt.timedelta(hours=1)).isoformat())
        items = body.get("items", []) if code == 200 else []
        return items and items[0]["reported_co2_t"] is not None and items[0]["valid_minutes"] == 60 and items[0]

    item = service.wait(ready, 60, "the reported figure beside the hour")
    assert close(item["reported_co2_t"], logger_kg / 1000)
    assert close(item["reported_diff_t"], item["co2_t"] - logger_kg / 1000)
    assert close(item["co2_t"], rate_kg_h_closed_form(K1) / 1000)
    code, health = service.get("/health")
    assert health["checks"]["pipeline"]["reported"] == 1 and health["checks"]["pipeline"]["rejected"] == 1
