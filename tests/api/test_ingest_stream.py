"""HTTP ingest and the live event stream, with in-process fakes (the real service: tests/integration)."""

import pytest
from fastapi.testclient import TestClient

from cems.api.app import create_app
from cems.api.routes.ingest import IngestBusy
from cems.config import parse_config
from cems.ingest.pipeline import Outcome
from tests.api.test_api import CFG, FakeDb, auth


class FakeIngest:
    def __init__(self):
        self.calls: list[tuple[str, bytes]] = []
        self.answer = Outcome(accepted=2)

    def __call__(self, topic: str, payload: bytes):
        self.calls.append((topic, payload))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture
def ingest():
    return FakeIngest()


@pytest.fixture
def client(ingest):
    app = create_app(parse_config(CFG), FakeDb(), lambda p, s: None, lambda: {}, ingest)
    return TestClient(app)


BODY = b'{"ts": [1764000000, 1764000001], "flow_m3h": 1.4e6, "co2_pct": 13, "temp_c": 50}'


def test_readings_reach_the_pipeline_as_sent(client, ingest):
    r = client.post("/api/v1/ingest/a/s1", content=BODY, headers=auth("gateway-token"))
    assert r.status_code == 202
    assert r.json() == {"accepted": 2, "duplicates": 0, "corrections": 0, "invalid": 0, "queued": False}
    assert ingest.calls == [("cems/v1/a/s1/readings", BODY)]


def test_a_refused_message_is_422_with_the_pipelines_reason(client, ingest):
    ingest.answer = Outcome(rejected="ts: missing")
    r = client.post("/api/v1/ingest/a/s1", content=b'{"co2_pct": 1}', headers=auth("gateway-token"))
    assert r.status_code == 422 and r.json() == {"detail": "ts: missing"}


def test_not_json_still_goes_to_the_pipeline(client, ingest):
    """The pipeline judges it (and keeps it in the dead-letter store), as it would on MQTT."""
    ingest.answer = Outcome(rejected="payload is not JSON")
    r = client.post("/api/v1/ingest/a/s1", content=b"\xff garbage", headers=auth("gateway-token"))
    assert r.status_code == 422 and ingest.calls == [("cems/v1/a/s1/readings", b"\xff garbage")]


def test_busy_is_503_with_retry_after(client, ingest):
    ingest.answer = IngestBusy("intake queue full")
    r = client.post("/api/v1/ingest/a/s1", content=BODY, headers=auth("gateway-token"))
    assert r.status_code == 503 and r.headers["retry-after"] == "10"


def test_not_handled_in_time_is_202_queued(client, ingest):
    ingest.answer = None
    r = client.post("/api/v1/ingest/a/s1", content=BODY, headers=auth("gateway-token"))
    assert r.status_code == 202 and r.json()["queued"] is True and r.json()["accepted"] is None


@pytest.mark.parametrize("token, code", [(None, 401), ("regulator-token", 403), ("operator-token-b", 403)])
def test_only_gateways_and_admins_may_send(client, ingest, token, code):
    r = client.post("/api/v1/ingest/a/s1", content=BODY, headers=auth(token) if token else {})
    assert r.status_code == code and ingest.calls == []


def test_a_gateway_token_is_held_to_its_plants(ingest):
    cfg = parse_config(CFG.replace('token = "gateway-token"\nrole = "gateway"',
                                   'token = "gateway-token"\nrole = "gateway"\nplants = ["b"]'))
    c = TestClient(create_app(cfg, FakeDb(), lambda p, s: None, lambda: {}, ingest))
    assert c.post("/api/v1/ingest/a/s1", content=BODY, headers=auth("gateway-token")).status_code == 403
    assert c.post("/api/v1/ingest/b/s1", content=BODY, headers=auth("gateway-token")).status_code == 202


def test_oversized_body_is_413_and_never_reaches_the_pipeline(client, ingest):
    r = client.post("/api/v1/ingest/a/s1", content=b"x" * (256 * 1024 + 1), headers=auth("gateway-token"))
    assert r.status_code == 413 and ingest.calls == []


def test_without_an_ingest_handler_it_is_503():
    c = TestClient(create_app(parse_config(CFG), FakeDb(), lambda p, s: None, lambda: {}))
    assert c.post("/api/v1/ingest/a/s1", content=BODY, headers=auth("gateway-token")).status_code == 503


@pytest.mark.parametrize("params, token, code", [({}, None, 401), ({}, "gateway-token", 403),
                                                 ({"plant": "a"}, "operator-token-b", 403),
                                                 ({"plant": "zz"}, "regulator-token", 404)])
def test_live_stream_refuses_before_streaming(client, params, token, code):
    r = client.get("/api/v1/live/stream", params=params, headers=auth(token) if token else {})
    assert r.status_code == code


def test_metrics_exposition_format():
    from cems.api.routes.metrics import exposition

    text = exposition([("m_total", "counter", "things", 3, {}), ("g", "gauge", "a gauge", None, {"k": 'a"b\\c\nd'}),
                       ("g", "gauge", "a gauge", 1.5, {"k": "x"})])
    assert text == ('# HELP m_total things\n# TYPE m_total counter\nm_total 3.0\n# HELP g a gauge\n# TYPE g gauge\n'
                    'g{k="a\\"b\\\\c\\nd"} NaN\ng{k="x"} 1.5\n')
    c = TestClient(create_app(parse_config(CFG), FakeDb(), lambda p, s: None, lambda: {}))
    assert c.get("/metrics").status_code == 404  # no metrics source in this process


def test_a_histogram_has_one_help_and_type_for_its_family():
    from cems.api.routes.metrics import exposition

    h = "write time"
    text = exposition([("w_seconds_bucket", "histogram", h, 1, {"le": "0.1"}),
                       ("w_seconds_bucket", "histogram", h, 3, {"le": "+Inf"}),
                       ("w_seconds_sum", "histogram", h, 0.75, {}), ("w_seconds_count", "histogram", h, 3, {})])
    assert text == ('# HELP w_seconds write time\n# TYPE w_seconds histogram\nw_seconds_bucket{le="0.1"} 1.0\n'
                    'w_seconds_bucket{le="+Inf"} 3.0\nw_seconds_sum 0.75\nw_seconds_count 3.0\n')
