"""HTTP ingest and the live event stream on the real service (mosquitto, InfluxDB, `cems serve`)."""

import datetime as dt
import json
import time

import httpx
import pytest

from tests.conftest import close, rate_kg_h_closed_form
from tests.integration.conftest import TOKENS

pytestmark = pytest.mark.integration
K1 = {"flow_m3h": 1.3e6, "co2_pct": 12.5, "temp_c": 50.0, "press_kpa": 101.1, "h2o_pct": 10.0}


def post(service, path: str, body: bytes, token: str = TOKENS["gateway"]) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{service.api_port}/api/v1{path}", content=body,
                      headers={"Authorization": f"Bearer {token}"}, timeout=60)


def test_http_ingest_takes_the_same_path_as_mqtt(service):
    t0 = int(time.time()) - 3 * 3600
    t0 -= t0 % 60
    body = json.dumps({"ts": [t0 + s for s in range(60)], **K1, "gw": "http-gw", "seq": 1}).encode()
    r = post(service, "/ingest/it/k1", body)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 60, "duplicates": 0, "corrections": 0, "invalid": 0, "queued": False}
    r = post(service, "/ingest/it/k1", body)  # a gateway resending after a lost answer
    assert r.status_code == 202 and r.json()["accepted"] == 0 and r.json()["duplicates"] == 60

    r = post(service, "/ingest/it/k1", b'{"flow_m3h": 1.3e6, "gw": "http-gw", "seq": 2}')
    assert r.status_code == 422 and "ts" in r.json()["detail"]
    r = post(service, "/ingest/it/nope", body)
    assert r.status_code == 422 and "unknown plant/stack it/nope" in r.json()["detail"]
    assert post(service, "/ingest/it/k1", body, TOKENS["regulator"]).status_code == 403

    start = dt.datetime.fromtimestamp(t0, dt.UTC)
    q = {"start": start.isoformat(), "end": (start + dt.timedelta(minutes=1)).isoformat()}
    items = service.wait(lambda: service.get("/stacks/it/k1/minutes", **q)[1]["items"], 30, "the minute figure")
    assert items[0]["readings"] == 60 and close(items[0]["co2_kg"], rate_kg_h_closed_form(K1) / 60)
    rows = service.influx_query("SELECT count(co2_pct) FROM reading WHERE gw = 'http-gw'")
    assert rows[0]["count"] == 60
    rej = service.influx_query("SELECT reason, seq FROM rejected WHERE stack = 'k1'")
    assert [r["seq"] for r in rej] == [2]
    dead = "".join(p.read_text() for p in (service.data_dir / "deadletter").glob("*.jsonl"))
    assert '"source":"http:cems/v1/it/k1/readings"' in dead and '"seq":2' in dead


def test_live_figures_are_pushed_as_server_sent_events(service):
    t = int(time.time()) - 120
    t -= t % 60
    body = json.dumps({"ts": [t + s for s in range(60)], **K1}).encode()
    events: list[dict] = []
    with httpx.stream("GET", f"http://127.0.0.1:{service.api_port}/api/v1/live/stream",
                      headers={"Authorization": f"Bearer {TOKENS['regulator']}"}, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        posted = False
        end = time.monotonic() + 30
        event = None
        for line in lines:
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "live":
                events.append(json.loads(line[6:]))
                if not posted and {(e["plant"], e["stack"]) for e in events} == {("it", "k1"), ("it", "k2")}:
                    assert post(service, "/ingest/it/k1", body).status_code == 202  # one at connect each, then
                    posted = True
                elif posted and events[-1]["stack"] == "k1" and events[-1]["rate_t_h"] is not None:
                    break  # ... a push when k1's figures change
            assert time.monotonic() < end, f"no pushed update for k1; events: {events}"
    last = events[-1]
    assert close(last["rate_t_h"], rate_kg_h_closed_form(K1) / 1000)
    code, live = service.get("/stacks/it/k1/live")
    assert code == 200 and live["rate_t_h"] == last["rate_t_h"]


def test_prometheus_metrics(service):
    t = int(time.time()) - 300
    body = json.dumps({"ts": [t + s for s in range(10)], **K1}).encode()
    assert post(service, "/ingest/it/k1", body).status_code == 202

    def scrape() -> tuple[httpx.Response, dict[str, float]]:
        r = httpx.get(f"http://127.0.0.1:{service.api_port}/metrics", timeout=10)
        values = {}
        for line in r.text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return r, values

    # The readings are journaled when the POST returns, handled and written a moment later.
    r, values = service.wait(lambda: (lambda rv: rv[1].get("cems_influx_writes_total") and rv)(scrape()), 30,
                             "a write to InfluxDB in the metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert values['cems_readings_total{outcome="accepted"}'] >= 10
    assert values["cems_journaled_messages_total"] >= 1 and values["cems_mqtt_connected"] == 1.0
    assert values["cems_spool_points"] == 0.0 and values["cems_journal_unprocessed_messages"] >= 0
    assert "# TYPE cems_readings_total counter" in r.text
    # Write latency as a histogram: cumulative buckets, +Inf equal to the count, a sum of seconds.
    assert "# TYPE cems_influx_write_duration_seconds histogram" in r.text
    buckets = [v for k, v in values.items() if k.startswith("cems_influx_write_duration_seconds_bucket")]
    assert len(buckets) == 12 and buckets == sorted(buckets)
    assert values['cems_influx_write_duration_seconds_bucket{le="+Inf"}'] == \
        values["cems_influx_write_duration_seconds_count"] >= 1
    assert values["cems_influx_write_duration_seconds_sum"] > 0
