"""API unit tests: the FastAPI app with an in-process fake store (integration tests use the real one)."""

import math

import pytest
from fastapi.testclient import TestClient

from cems.api.app import create_app
from cems.config import parse_config

CFG = """
[[api.tokens]]
token = "regulator-token"
role = "regulator"

[[api.tokens]]
token = "operator-token-b"
role = "operator"
plants = ["b"]

[[api.tokens]]
token = "gateway-token"
role = "gateway"

[[plants]]
id = "a"
timezone = "Asia/Shanghai"
[[plants.stacks]]
id = "s1"
name = "Stack one"

[[plants]]
id = "b"
timezone = "Europe/Berlin"
regime = "eu"
[[plants.stacks]]
id = "s1"
"""
H0 = 1_763_942_400  # 2025-11-24T00:00:00Z = 08:00 in Shanghai


class FakeDb:
    """Answers the hour and minute queries the routes make, from rows the test sets."""

    def __init__(self):
        self.rows: dict[str, list[dict]] = {"hour": [], "minute": []}
        self.queries: list[str] = []

    def query(self, q: str) -> list[dict]:
        self.queries.append(q)
        measurement = q.split(" FROM ")[1].split()[0]
        return [dict(r) for r in self.rows.get(measurement, [])]


def hour_row(h: int, status="measured", mass=250.0, final=True, valid=60, op=60, method=""):
    return {"time": (H0 + h * 3600) * 1000, "status": status, "method": method, "valid_min": valid,
            "op_min": op, "co2_mg_m3": 240000.0, "qsn_m3_h": 1.0e6, "mass_t": mass, "revision": 0,
            "final": final, "rate_kg_h": mass * 1000}


@pytest.fixture
def client():
    cfg = parse_config(CFG)
    db = FakeDb()
    live = {("a", "s1"): {"plant": "a", "stack": "s1", "at": "2025-11-24T08:30:00+08:00", "rate_t_h": 280.0,
                          "hour_to_date_t": 140.0, "day_to_date_t": 140.0, "month_to_date_t": 140.0,
                          "year_to_date_t": 140.0, "status": "valid", "last_reading_at": "2025-11-24T08:30:00+08:00",
                          "latest_valid_minute": "2025-11-24T08:29:00+08:00"}}
    app = create_app(cfg, db, lambda p, s: live.get((p, s)), lambda: {"pipeline": {"ok": True, "ready": True}})
    c = TestClient(app)
    c.db = db
    return c


def auth(token="regulator-token"):
    return {"Authorization": f"Bearer {token}"}


def test_health_needs_no_token(client):
    r = client.get("/api/v1/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_health_degraded_when_a_check_fails():
    cfg = parse_config(CFG)
    app = create_app(cfg, FakeDb(), lambda p, s: None, lambda: {"influx": {"ok": False, "error": "down"}})
    assert TestClient(app).get("/api/v1/health").json()["status"] == "degraded"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope-nope"}, {"Authorization": "Basic x"}])
def test_401_without_a_valid_bearer_token(client, headers):
    r = client.get("/api/v1/stacks", headers=headers)
    assert r.status_code == 401
    assert "token" in r.json()["detail"]


def test_stacks_are_scoped(client):
    items = client.get("/api/v1/stacks", headers=auth()).json()["items"]
    assert [(i["plant"], i["stack"]) for i in items] == [("a", "s1"), ("b", "s1")]
    assert items[0]["name"] == "Stack one" and items[0]["rate_t_h"] == 280.0
    assert items[1]["name"] == "s1" and items[1]["rate_t_h"] is None
    items = client.get("/api/v1/stacks", headers=auth("operator-token-b")).json()["items"]
    assert [(i["plant"], i["stack"]) for i in items] == [("b", "s1")]


def test_403_outside_scope_and_for_gateways(client):
    assert client.get("/api/v1/stacks/a/s1/live", headers=auth("operator-token-b")).status_code == 403
    assert client.get("/api/v1/stacks/a/s1/live", headers=auth("gateway-token")).status_code == 403


def test_404_for_unknown_stack(client):
    assert client.get("/api/v1/stacks/a/zz/live", headers=auth()).status_code == 404
    assert client.get("/api/v1/stacks/zz/s1/live", headers=auth()).status_code == 404


def test_live_shape(client):
    body = client.get("/api/v1/stacks/a/s1/live", headers=auth()).json()
    for k in ("at", "rate_t_h", "hour_to_date_t", "day_to_date_t", "month_to_date_t", "year_to_date_t", "status"):
        assert k in body
    assert client.get("/api/v1/stacks/b/s1/live", headers=auth()).status_code == 503  # not started yet


def test_hours_shape_times_and_nan(client):
    client.db.rows["hour"] = [hour_row(0), hour_row(1, status="substituted", mass=math.nan, valid=30, final=False)]
    r = client.get("/api/v1/stacks/a/s1/hours", params={"start": "2025-11-24", "end": "2025-11-25"}, headers=auth())
    assert r.status_code == 200
    items = r.json()["items"]
    assert items[0] == {"start": "2025-11-24T08:00:00+08:00", "co2_t": 250.0, "co2_mg_m3": 240000.0,
                        "qsn_m3_h": 1.0e6, "valid_minutes": 60, "operating_minutes": 60, "status": "measured",
                        "method": None, "revision": 0, "final": True, "part75_reported": None,
                        "reported_co2_t": None, "reported_diff_t": None}
    assert items[1]["co2_t"] is None and items[1]["status"] == "substituted" and items[1]["final"] is False
    # A bare date is local midnight: 2025-11-24 in Shanghai is 2025-11-23T16:00Z.
    assert "time >= 1763913600000ms" in client.db.queries[-1]


@pytest.mark.parametrize("params, fragment", [
    ({"start": "2025-11-25", "end": "2025-11-24"}, "must be after start"),
    ({"start": "2025-11-24T00:00:00", "end": "2025-11-25"}, "no UTC offset"),
    ({"start": "yesterday", "end": "2025-11-25"}, "not an ISO 8601 time"),
    ({"start": "0001-01-01", "end": "0001-01-02"}, "outside the years 1970..2199"),
    ({"start": "2025-11-24", "end": "9999-12-31T00:00:00+00:00"}, "outside the years 1970..2199"),
    ({"start": "2020-01-01", "end": "2025-11-25"}, "longer than"),
])
def test_bad_ranges_are_422_with_a_reason(client, params, fragment):
    r = client.get("/api/v1/stacks/a/s1/hours", params=params, headers=auth())
    assert r.status_code == 422
    assert fragment in r.json()["detail"]


def test_days_aggregate_local_days(client):
    # Hours 0..23 from 08:00 local: 16 hours on the 24th, 8 on the 25th (Shanghai).
    client.db.rows["hour"] = [hour_row(h) for h in range(24)]
    r = client.get("/api/v1/stacks/a/s1/days", params={"start": "2025-11-24", "end": "2025-11-26"}, headers=auth())
    items = r.json()["items"]
    assert [i["date"] for i in items] == ["2025-11-24", "2025-11-25"]
    assert [i["measured_hours"] for i in items] == [16, 8]
    assert items[0]["co2_t"] == pytest.approx(16 * 250.0, rel=1e-12)
    assert items[0]["valid"] is True and items[0]["final"] is True


def test_dashboard_and_openapi_are_served(client):
    r = client.get("/")
    assert r.status_code == 200 and "carbon-cems" in r.text
    assert client.get("/static/dashboard.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/api/v1/stacks/{plant}/{stack}/hours" in spec["paths"]


def test_database_down_is_503_with_a_reason():
    from cems.store.influx import InfluxError

    class DownDb:
        def query(self, q):
            raise InfluxError("InfluxDB at http://x unreachable")

    app = create_app(parse_config(CFG), DownDb(), lambda p, s: None, lambda: {})
    r = TestClient(app).get("/api/v1/stacks/a/s1/hours", params={"start": "2025-11-24", "end": "2025-11-25"},
                            headers=auth())
    assert r.status_code == 503 and "unavailable" in r.json()["detail"]
