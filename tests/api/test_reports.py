"""Fuel data, the CEMS-vs-calculation comparison and the reconciled report (DESIGN §5, §7), on an in-process
fake store that keeps what is written and answers the InfluxQL the routes send."""

import csv
import datetime as dt
import io
import json
import math
import re
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from cems.api.app import create_app
from cems.config import parse_config
from cems.store.influx import InfluxError
from cems.store.lineproto import apply_nulls

CFG = """
[[api.tokens]]
token = "regulator-token"
role = "regulator"
name = "reg"

[[api.tokens]]
token = "regulator-token-b"
role = "regulator"
plants = ["b"]

[[api.tokens]]
token = "operator-token-a"
role = "operator"
plants = ["a"]
name = "op-a"

[[api.tokens]]
token = "operator-token-b"
role = "operator"
plants = ["b"]

[[api.tokens]]
token = "admin-token"
role = "admin"
name = "admin"

[[api.tokens]]
token = "gateway-token"
role = "gateway"

[[plants]]
id = "a"
timezone = "Asia/Shanghai"
fuel_tolerance_pct = 5.0
[[plants.stacks]]
id = "s1"
[[plants.stacks]]
id = "s2"

[[plants]]
id = "b"
timezone = "Europe/Berlin"
regime = "eu"
[[plants.stacks]]
id = "s1"
"""
DAY = dt.date(2025, 11, 24)
D0 = 1_763_913_600  # 2025-11-24T00:00:00+08:00, local midnight in Shanghai
TZ = ZoneInfo("Asia/Shanghai")
CO2_PER_C = 44 / 12


class FakeDb:
    """A small stand-in for InfluxDB: points by (measurement, tags, time), merged as InfluxDB merges them.

    It answers the statements the routes send: ``SELECT * | f | count(f) FROM m WHERE tag = '..' AND time >= Nms
    AND time < Nms [AND final = true] [GROUP BY stack]``; anything else fails the test.
    """

    def __init__(self):
        self.points: dict[tuple, dict] = {}
        self.writes: list[tuple[list[str], str]] = []
        self.queries: list[str] = []
        self.fail_writes = False

    # -- writing ------------------------------------------------------------------------------------------
    def put(self, measurement: str, tags: dict, time_ms: int, fields: dict) -> None:
        key = (measurement, tuple(sorted(tags.items())), time_ms * 1_000_000)
        self.points.setdefault(key, {}).update(fields)

    def write(self, lines: list[str], precision: str = "ms") -> None:
        if self.fail_writes:
            raise InfluxError("InfluxDB at http://x unreachable")
        self.writes.append((list(lines), precision))
        scale = {"ns": 1, "ms": 1_000_000, "s": 1_000_000_000}[precision]
        for ln in lines:
            measurement, tags, fields, t = parse_line(ln)
            key = (measurement, tuple(sorted(tags.items())), t * scale)
            self.points.setdefault(key, {}).update(fields)

    # -- reading ------------------------------------------------------------------------------------------
    def query(self, q: str) -> list[dict]:
        self.queries.append(q)
        m = re.fullmatch(r"SELECT (\*|\w+|count\((\w+)\)) FROM (\w+) WHERE (.+?)( GROUP BY stack)?", q)
        assert m, f"FakeDb does not understand {q!r}"
        count_field, measurement, where = m.group(2), m.group(3), m.group(4)
        conds = []
        for c in where.split(" AND "):
            cm = re.fullmatch(r"(\w+) (>=|<|=) (?:'(.*)'|(\d+)ms|(true))", c)
            assert cm, f"FakeDb does not understand the condition {c!r}"
            conds.append(cm.groups())
        rows = []
        for (meas, tags, t_ns), fields in sorted(self.points.items(), key=lambda kv: kv[0][2]):
            if meas != measurement:
                continue
            row = {**dict(tags), **fields, "time": t_ns // 1_000_000}
            if all(_holds(row, *c) for c in conds):
                rows.append(apply_nulls(dict(row)))
        if count_field is None:
            return rows
        counts: dict[str, int] = {}
        for r in rows:
            if r.get(count_field) is not None:
                counts[r["stack"]] = counts.get(r["stack"], 0) + 1
        return [{"time": 0, "count": n, "stack": s} for s, n in counts.items()]

    def of(self, measurement: str) -> list[dict]:
        """Stored points of a measurement, with their time [ns]."""
        return [{**dict(tags), **fields, "time_ns": t} for (m, tags, t), fields in sorted(self.points.items())
                if m == measurement]


def _holds(row: dict, name: str, op: str, text: str | None, ms: str | None, true: str | None) -> bool:
    if ms is not None:
        t, v = row["time"], int(ms)
        return t >= v if op == ">=" else t < v if op == "<" else t == v
    if true is not None:
        return row.get(name) is True
    return row.get(name) == text


def parse_line(ln: str) -> tuple[str, dict, dict, int]:
    """Line protocol written by `cems.store.lineproto.line` (tags without escapes in these tests)."""
    head, rest = ln.split(" ", 1)
    body, t = rest.rsplit(" ", 1)
    measurement, *tagparts = head.split(",")
    tags = dict(p.split("=", 1) for p in tagparts)
    fields = {}
    for k, v in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|[^,]+)', body):
        if v.startswith('"'):
            fields[k] = re.sub(r"\\(.)", r"\1", v[1:-1])
        elif v in ("true", "false"):
            fields[k] = v == "true"
        elif v.endswith("i"):
            fields[k] = int(v[:-1])
        else:
            fields[k] = float(v)
    return measurement, tags, fields, int(t)


def hour(db: FakeDb, stack: str, h: int, mass: float = 250.0, final: bool = True, status: str = "measured",
         plant: str = "a", day0: int = D0, method: str = "") -> None:
    """Hour `h` after local midnight of the test day, as the pipeline stores it."""
    db.put("hour", {"plant": plant, "stack": stack}, (day0 + h * 3600) * 1000, {
        "status": status, "method": method, "valid_min": 60 if status == "measured" else 30,
        "op_min": 0 if status == "stopped" else 60, "co2_mg_m3": 240000.0 + h + 0.04, "qsn_m3_h": 1.0e6 + h + 0.06,
        "mass_t": mass, "revision": 1 if h == 5 else 0, "final": final, "rate_kg_h": mass * 1000,
        "nulls": "mass_t" if math.isnan(mass) else ""})


def full_day(db: FakeDb, masses: dict[str, float], final: bool = True) -> None:
    for stack, m in masses.items():
        for h in range(24):
            hour(db, stack, h, mass=m, final=final)


def fuel(db: FakeDb, day: dt.date, calculated_t: float, plant: str = "a", tz: ZoneInfo = TZ) -> None:
    t = int(dt.datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()) * 1000
    db.put("fuel", {"plant": plant}, t, {"fuel_t": 1.0, "carbon_frac": 1.0, "oxidation": 1.0,
                                         "calculated_t": calculated_t, "submitted_by": "x", "submitted_at": "x",
                                         "nulls": ""})


@pytest.fixture
def client():
    db = FakeDb()
    app = create_app(parse_config(CFG), db, lambda p, s: None, lambda: {})
    c = TestClient(app)
    c.db = db
    return c


def auth(token="regulator-token"):
    return {"Authorization": f"Bearer {token}"}


def post_fuel(client, body, plant="a", token="operator-token-a"):
    return client.post(f"/api/v1/fuel/{plant}", json=body, headers=auth(token))


def report(client, token="regulator-token", **params):
    q = {"plant": "a", "start": "2025-11-24", "end": "2025-11-25"} | params
    return client.get("/api/v1/reports/reconciled", params=q, headers=auth(token))


def comparison(client, token="regulator-token", plant="a", **params):
    q = {"start": "2025-11-24", "end": "2025-11-25"} | params
    return client.get(f"/api/v1/plants/{plant}/comparison", params=q, headers=auth(token))


FUEL = {"date": "2025-11-24", "fuel_t": 3100.0, "carbon_frac": 0.62, "oxidation": 0.98}


# ---- roles and scopes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope-nope"}, {"Authorization": "Basic x"}])
def test_401_without_a_valid_token(client, headers):
    assert client.post("/api/v1/fuel/a", json=FUEL, headers=headers).status_code == 401
    assert client.get("/api/v1/plants/a/comparison", params={"start": "2025-11-24", "end": "2025-11-25"},
                      headers=headers).status_code == 401
    r = client.get("/api/v1/reports/reconciled", params={"plant": "a", "start": "2025-11-24", "end": "2025-11-25"},
                   headers=headers)
    assert r.status_code == 401 and "token" in r.json()["detail"]


def test_fuel_is_for_operators_and_admins_in_scope(client):
    for token in ("gateway-token", "regulator-token"):
        r = post_fuel(client, FUEL, token=token)
        assert r.status_code == 403 and "may not submit fuel data" in r.json()["detail"]
    r = post_fuel(client, FUEL, token="operator-token-b")
    assert r.status_code == 403 and r.json()["detail"] == "token may not see plant 'a'"
    assert post_fuel(client, FUEL, plant="zz", token="admin-token").status_code == 404
    assert post_fuel(client, FUEL, token="admin-token").status_code == 201
    assert post_fuel(client, FUEL).status_code == 201
    assert client.db.writes and all(p == "ms" for _, p in client.db.writes[:1])


def test_comparison_is_for_readers_in_scope(client):
    assert comparison(client, token="gateway-token").status_code == 403
    assert comparison(client, token="operator-token-b").status_code == 403
    assert comparison(client, token="regulator-token-b").status_code == 403
    assert comparison(client, plant="zz").status_code == 404
    for token in ("operator-token-a", "regulator-token", "admin-token"):
        assert comparison(client, token=token).status_code == 200


def test_report_is_for_regulators_and_admins_in_scope(client):
    for token in ("gateway-token", "operator-token-a"):
        r = report(client, token=token)
        assert r.status_code == 403 and "may not pull reconciled reports" in r.json()["detail"]
    r = report(client, token="regulator-token-b")
    assert r.status_code == 403 and r.json()["detail"] == "token may not see plant 'a'"
    assert report(client, plant="zz").status_code == 404
    assert report(client, token="admin-token").status_code == 200
    assert report(client, token="regulator-token-b", plant="b").status_code == 200


# ---- fuel: validation, storage, audit ---------------------------------------------------------------------

@pytest.mark.parametrize("change, field, fragment", [
    ({"date": "2025-13-01"}, "date", "not a calendar date"),
    ({"date": "24/11/2025"}, "date", "YYYY-MM-DD"),
    ({"date": "2025-11-24T00:00:00+08:00"}, "date", "YYYY-MM-DD"),
    ({"date": 20251124}, "date", "YYYY-MM-DD"),
    ({"fuel_t": 0}, "fuel_t", "greater than 0"),
    ({"fuel_t": -5.0}, "fuel_t", "greater than 0"),
    ({"fuel_t": "lots"}, "fuel_t", "valid number"),
    ({"fuel_t": "3100"}, "fuel_t", "valid number"),  # a number, not a string that looks like one
    ({"oxidation": True}, "oxidation", "valid number"),
    ({"fuel_t": None}, "fuel_t", "valid number"),
    ({"carbon_frac": 1.2}, "carbon_frac", "less than or equal to 1"),
    ({"carbon_frac": 0}, "carbon_frac", "greater than 0"),
    ({"oxidation": 0.0}, "oxidation", "greater than 0"),
    ({"oxidation": 1.01}, "oxidation", "less than or equal to 1"),
    ({"carbon_fraction": 0.6}, "carbon_fraction", "Extra inputs are not permitted"),
    ({"date": "0165-10-15"}, "date", "before 2000-01-01"),  # found by schemathesis: InfluxDB refused the time
    ({"fuel_t": 7.4e307}, "fuel_t", "less than or equal to 10000000"),
])
def test_fuel_validation_is_422_naming_the_field(client, change, field, fragment):
    r = post_fuel(client, FUEL | change)
    assert r.status_code == 422, r.text
    [err] = r.json()["detail"]
    assert err["loc"] == ["body", field] and fragment in err["msg"]
    assert client.db.writes == []


def test_fuel_missing_field_is_422(client):
    r = post_fuel(client, {k: v for k, v in FUEL.items() if k != "oxidation"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "oxidation"]


def test_fuel_for_a_future_local_date_is_refused_and_today_is_taken(client):
    today = dt.datetime.now(TZ).date()
    r = post_fuel(client, FUEL | {"date": (today + dt.timedelta(days=1)).isoformat()})
    assert r.status_code == 422
    [err] = r.json()["detail"]
    assert err["loc"] == ["body", "date"] and "in the future" in err["msg"] and "Asia/Shanghai" in err["msg"]
    assert client.db.writes == []
    assert post_fuel(client, FUEL | {"date": today.isoformat()}).status_code == 201


def test_fuel_is_stored_at_local_midnight_with_the_calculation(client):
    r = post_fuel(client, FUEL | {"fuel_t": 3100})
    assert r.status_code == 201
    body = r.json()
    want = 3100.0 * 0.62 * 0.98 * 44 / 12  # DESIGN §5, 44/12 exactly
    assert body["calculated_t"] == pytest.approx(want, rel=1e-15)
    assert {k: body[k] for k in ("plant", "date", "fuel_t", "carbon_frac", "oxidation", "submitted_by")} == {
        "plant": "a", "date": "2025-11-24", "fuel_t": 3100.0, "carbon_frac": 0.62, "oxidation": 0.98,
        "submitted_by": "op-a"}
    assert body["submitted_at"].endswith("+08:00")
    [(lines, precision)] = client.db.writes
    assert precision == "ms" and lines[0].startswith("fuel,plant=a ") and lines[0].endswith(f" {D0 * 1000}")
    assert "fuel_t=3100.0," in lines[0]  # a float field, never an integer one
    [stored] = client.db.of("fuel")
    assert stored["time_ns"] == D0 * 1_000_000_000
    assert {k: stored[k] for k in body if k in stored} == {k: body[k] for k in body if k in stored}
    assert client.db.of("audit") == []


def test_resubmission_replaces_and_audits_the_old_values(client):
    first = post_fuel(client, FUEL).json()
    second = post_fuel(client, FUEL | {"fuel_t": 3000.0}, token="admin-token").json()
    third = post_fuel(client, FUEL | {"fuel_t": 2900.0}, token="admin-token").json()
    [stored] = client.db.of("fuel")
    assert stored["fuel_t"] == 2900.0 and stored["calculated_t"] == third["calculated_t"]
    assert stored["submitted_by"] == "admin"
    audits = client.db.of("audit")
    assert len(audits) == 2 and len({a["time_ns"] for a in audits}) == 2
    assert [p for _, p in client.db.writes] == ["ms", "ns", "ms", "ns", "ms"]
    a = audits[0]
    assert (a["plant"], a["kind"]) == ("a", "fuel") and "stack" not in a
    assert a["target"] == "2025-11-23T16:00:00+00:00"  # local midnight in UTC, as the pipeline's audits
    old, new = json.loads(a["old"]), json.loads(a["new"])
    assert old["date"] == new["date"] == "2025-11-24"
    assert old["fuel_t"] == 3100.0 and old["calculated_t"] == first["calculated_t"] and old["submitted_by"] == "op-a"
    assert new["fuel_t"] == 3000.0 and new["calculated_t"] == second["calculated_t"] and new["submitted_by"] == "admin"
    assert "resubmitted by admin" in a["cause"]
    assert json.loads(audits[1]["old"])["fuel_t"] == 3000.0


def test_fuel_on_a_database_down_is_503(client):
    client.db.fail_writes = True
    r = post_fuel(client, FUEL)
    assert r.status_code == 503 and "unavailable" in r.json()["detail"]


# ---- the comparison ---------------------------------------------------------------------------------------

def test_comparison_sums_stacks_and_computes_the_deviation(client):
    full_day(client.db, {"s1": 250.0, "s2": 100.0})
    r = post_fuel(client, FUEL)
    calc = r.json()["calculated_t"]
    body = comparison(client).json()
    assert body["plant"] == "a" and body["tolerance_pct"] == 5.0
    [day] = body["items"]
    cems = 24 * 250.0 + 24 * 100.0
    assert day["date"] == "2025-11-24"
    assert day["cems_t"] == pytest.approx(cems, rel=1e-12)
    assert day["calculated_t"] == pytest.approx(3100 * 0.62 * 0.98 * 44 / 12, rel=1e-15)
    assert day["deviation_pct"] == pytest.approx((cems - calc) / calc * 100, rel=1e-12)
    assert day["deviation_pct"] == pytest.approx(21.6266, abs=1e-4)  # 8400 t against 6906.39 t
    assert day["flagged"] is True and day["final"] is True


@pytest.mark.parametrize("calc, dev, flagged", [
    (8000.0, 5.0, False),  # exactly on the band: not beyond it
    (8400 / 1.0501, 5.01, True),
    (8400 / 0.9499, -5.01, True),
    (8400 / 0.96, -4.0, False),
])
def test_flagged_only_beyond_the_plants_tolerance(client, calc, dev, flagged):
    full_day(client.db, {"s1": 250.0, "s2": 100.0})
    fuel(client.db, DAY, calc)
    [day] = comparison(client).json()["items"]
    assert day["deviation_pct"] == pytest.approx(dev, abs=1e-9)
    assert day["flagged"] is flagged


def test_default_tolerance_is_10_percent(client):
    berlin = ZoneInfo("Europe/Berlin")
    d0 = int(dt.datetime(2025, 11, 24, tzinfo=berlin).timestamp())
    for h in range(24):
        hour(client.db, "s1", h, mass=10.0, plant="b", day0=d0)
    fuel(client.db, DAY, 240 / 1.09, plant="b", tz=berlin)
    body = comparison(client, plant="b").json()
    assert body["tolerance_pct"] == 10.0
    [day] = body["items"]
    assert day["deviation_pct"] == pytest.approx(9.0) and day["flagged"] is False


def test_no_fuel_or_zero_fuel_means_no_deviation(client):
    full_day(client.db, {"s1": 250.0, "s2": 100.0})
    [day] = comparison(client).json()["items"]
    assert day["calculated_t"] is None and day["deviation_pct"] is None and day["flagged"] is False
    fuel(client.db, DAY, 0.0)
    [day] = comparison(client).json()["items"]
    assert day["calculated_t"] == 0.0 and day["deviation_pct"] is None and day["flagged"] is False


def test_a_fuel_day_without_hours_is_listed_and_flagged(client):
    fuel(client.db, DAY + dt.timedelta(days=1), 500.0)
    full_day(client.db, {"s1": 1.0, "s2": 1.0})
    items = comparison(client, end="2025-11-27").json()["items"]
    assert [i["date"] for i in items] == ["2025-11-24", "2025-11-25"]
    assert items[1] == {"date": "2025-11-25", "cems_t": 0.0, "calculated_t": 500.0, "deviation_pct": -100.0,
                        "flagged": True, "final": False}


def test_days_follow_the_local_calendar_and_count_as_days_does(client):
    # 2025-11-24 08:00 .. 2025-11-25 07:00 local, the last 8 hours fall on the 25th; stopped hours add 0,
    # a pending substitute (no mass yet) adds nothing, as in /days.
    for h in range(8, 32):
        hour(client.db, "s1", h, mass=10.0)
    hour(client.db, "s2", 8, mass=0.0, status="stopped")
    hour(client.db, "s2", 9, mass=math.nan, status="substituted", final=False, method="HBHA")
    items = comparison(client, end="2025-11-26").json()["items"]
    assert [(i["date"], i["cems_t"]) for i in items] == [("2025-11-24", 160.0), ("2025-11-25", 80.0)]
    assert [i["final"] for i in items] == [False, False]  # hours without figures are not final
    days = client.get("/api/v1/stacks/a/s1/days", params={"start": "2025-11-24", "end": "2025-11-26"},
                      headers=auth()).json()["items"]
    assert [d["co2_t"] for d in days] == [i["cems_t"] for i in items]


def test_final_needs_every_hour_of_every_stack(client):
    full_day(client.db, {"s1": 250.0, "s2": 100.0})
    assert comparison(client).json()["items"][0]["final"] is True
    hour(client.db, "s2", 23, final=False)
    assert comparison(client).json()["items"][0]["final"] is False


@pytest.mark.parametrize("params, fragment", [
    ({"start": "2025-11-25", "end": "2025-11-24"}, "must be after start"),
    ({"start": "2025-11-24", "end": "2025-11-24"}, "must be after start"),
    ({"start": "24.11.2025", "end": "2025-11-25"}, "not an ISO 8601 time"),
    ({"start": "2025-11-24T00:00:00", "end": "2025-11-25"}, "no UTC offset"),
    ({"start": "2010-01-01", "end": "2025-11-25"}, "longer than 3660 days"),
])
def test_comparison_bad_ranges_are_422(client, params, fragment):
    r = comparison(client, **params)
    assert r.status_code == 422 and fragment in r.json()["detail"]


# ---- the reconciled report --------------------------------------------------------------------------------

def test_report_json_shape_and_only_final_hours(client):
    full_day(client.db, {"s1": 250.0, "s2": 100.0})
    hour(client.db, "s2", 23, mass=120.0, final=False)
    hour(client.db, "s1", 4, mass=math.nan, status="substituted", final=False, method="HBHA")
    calc = post_fuel(client, FUEL).json()["calculated_t"]
    r = report(client)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"plant", "regime", "start", "end", "stacks", "days", "totals", "complete", "not_final"}
    assert (body["plant"], body["regime"]) == ("a", "china")
    assert (body["start"], body["end"]) == ("2025-11-24T00:00:00+08:00", "2025-11-25T00:00:00+08:00")
    assert [s["stack"] for s in body["stacks"]] == ["s1", "s2"]
    s1, s2 = (s["hours"] for s in body["stacks"])
    assert len(s1) == 23 and len(s2) == 23
    assert all(h["final"] for h in s1 + s2)
    assert s1[0] == {"start": "2025-11-24T00:00:00+08:00", "co2_t": 250.0, "co2_mg_m3": 240000.04,
                     "qsn_m3_h": 1000000.06, "valid_minutes": 60, "operating_minutes": 60, "status": "measured",
                     "method": None, "revision": 0, "final": True}
    assert "2025-11-24T04:00:00+08:00" not in [h["start"] for h in s1]
    assert body["complete"] is False and body["not_final"] == 2
    assert body["totals"]["cems_t"] == pytest.approx(23 * 250.0 + 23 * 100.0, rel=1e-12)
    assert body["totals"]["calculated_t"] == calc
    # Days compare all hours (provisional ones too, marked final: false), as the comparison endpoint does.
    assert body["days"] == comparison(client).json()["items"]
    assert body["days"][0]["cems_t"] == pytest.approx(23 * 250.0 + 23 * 100.0 + 120.0, rel=1e-12)
    assert body["days"][0]["final"] is False


def test_report_complete_has_no_not_final(client):
    full_day(client.db, {"s1": 250.0, "s2": 100.0})
    body = report(client).json()
    assert body["complete"] is True and "not_final" not in body
    assert body["totals"] == {"cems_t": 8400.0, "calculated_t": None}
    assert body["days"][0]["final"] is True


def test_report_hours_without_any_figure_are_not_final(client):
    full_day(client.db, {"s1": 250.0})  # s2 has no figures at all
    body = report(client, end="2025-11-26").json()
    assert body["complete"] is False and body["not_final"] == 2 * 48 - 24
    assert body["stacks"][1] == {"stack": "s2", "hours": []}


def test_report_hours_are_those_of_the_hours_endpoint(client):
    full_day(client.db, {"s1": 250.0, "s2": 100.0})
    body = report(client).json()
    hours = client.get("/api/v1/stacks/a/s1/hours", params={"start": "2025-11-24", "end": "2025-11-25"},
                       headers=auth()).json()["items"]
    keys = set(body["stacks"][0]["hours"][0])
    assert [{k: h[k] for k in keys} for h in hours] == body["stacks"][0]["hours"]


@pytest.mark.parametrize("params, fragment", [
    ({"start": "2025-11-25", "end": "2025-11-24"}, "must be after start"),
    ({"start": "2025-11-24T00:00:00", "end": "2025-11-25"}, "no UTC offset"),
    ({"start": "2024-01-01", "end": "2025-01-02"}, "range of 367.0 days is longer than 366 days; ask in parts"),
    ({"format": "pdf"}, "format: 'pdf' is not one of json, csv"),
    ({"format": "JSON"}, "is not one of json, csv"),
])
def test_report_bad_requests_are_422(client, params, fragment):
    r = report(client, **params)
    assert r.status_code == 422 and fragment in r.json()["detail"]


def test_report_a_leap_year_and_a_month_are_within_range(client):
    assert report(client, start="2024-01-01", end="2025-01-01").status_code == 200  # 366 days
    assert report(client, start="2025-11-01", end="2025-12-01").status_code == 200
    assert report(client, start="2024-01-01", end="2025-01-01", format="csv").status_code == 200


def test_report_missing_plant_is_422(client):
    r = client.get("/api/v1/reports/reconciled", params={"start": "2025-11-24", "end": "2025-11-25"},
                   headers=auth())
    assert r.status_code == 422


def _csv(r):
    text = r.text
    blank = text.index("\r\n\r\n")
    hours = list(csv.DictReader(io.StringIO(text[:blank + 2])))
    days = list(csv.DictReader(io.StringIO(text[blank + 4:])))
    return hours, days


def test_csv_rows_equal_the_json(client):
    full_day(client.db, {"s1": 250.123456, "s2": 100.0})
    hour(client.db, "s2", 23, mass=120.0, final=False)
    hour(client.db, "s1", 3, mass=250.0, status="substituted", method="HBHA")
    post_fuel(client, FUEL)
    fuel(client.db, DAY + dt.timedelta(days=1), 900.0)
    want = report(client, end="2025-11-26").json()
    r = report(client, end="2025-11-26", format="csv")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="reconciled-a-2025-11-24-2025-11-26.csv"'
    assert r.headers["x-report-complete"] == "false" and int(r.headers["x-not-final-hours"]) == want["not_final"]
    assert r.text.splitlines()[0] == ("plant,stack,start,co2_t,co2_mg_m3,qsn_m3_h,valid_minutes,operating_minutes,"
                                      "status,method,revision,final")
    hours, days = _csv(r)
    flat = [(s["stack"], h) for s in want["stacks"] for h in s["hours"]]
    assert len(hours) == len(flat) == 47
    for row, (stack, h) in zip(hours, flat, strict=True):
        assert row == {"plant": "a", "stack": stack, "start": h["start"], "co2_t": f"{h['co2_t']:.3f}",
                       "co2_mg_m3": f"{h['co2_mg_m3']:.1f}", "qsn_m3_h": f"{h['qsn_m3_h']:.1f}",
                       "valid_minutes": str(h["valid_minutes"]), "operating_minutes": str(h["operating_minutes"]),
                       "status": h["status"], "method": h["method"] or "", "revision": str(h["revision"]),
                       "final": "true"}
    assert hours[0]["co2_t"] == "250.123" and hours[0]["co2_mg_m3"] == "240000.0"
    assert hours[3]["method"] == "HBHA" and hours[5]["revision"] == "1"
    assert list(days[0]) == ["date", "cems_t", "calculated_t", "deviation_pct", "flagged"]
    assert len(days) == len(want["days"]) == 2
    for row, d in zip(days, want["days"], strict=True):
        assert row == {"date": d["date"], "cems_t": f"{d['cems_t']:.3f}", "calculated_t": f"{d['calculated_t']:.3f}",
                       "deviation_pct": f"{d['deviation_pct']:.2f}", "flagged": "true" if d["flagged"] else "false"}
    # Totals from the CSV's own rows, as a regulator's spreadsheet would add them up.
    assert sum(float(h["co2_t"]) for h in hours) == pytest.approx(want["totals"]["cems_t"], abs=47 * 5e-4)


def test_csv_of_an_empty_range_and_of_a_complete_one(client):
    r = report(client, format="csv")
    assert r.text == ("plant,stack,start,co2_t,co2_mg_m3,qsn_m3_h,valid_minutes,operating_minutes,status,method,"
                      "revision,final\r\n\r\ndate,cems_t,calculated_t,deviation_pct,flagged\r\n")
    assert r.headers["x-report-complete"] == "false" and r.headers["x-not-final-hours"] == "48"
    full_day(client.db, {"s1": 250.0, "s2": 100.0})
    r = report(client, format="csv")
    assert r.headers["x-report-complete"] == "true" and r.headers["x-not-final-hours"] == "0"
    hours, days = _csv(r)
    assert len(hours) == 48 and days == [{"date": "2025-11-24", "cems_t": "8400.000", "calculated_t": "",
                                          "deviation_pct": "", "flagged": "false"}]


def test_stacks_no_longer_configured_are_left_out(client):
    full_day(client.db, {"s1": 250.0, "s2": 100.0, "old": 50.0})
    body = report(client).json()
    assert [s["stack"] for s in body["stacks"]] == ["s1", "s2"] and body["complete"] is True
    r = report(client, format="csv")
    assert r.headers["x-report-complete"] == "true" and "old" not in r.text


def test_csv_filename_of_a_range_given_in_times(client):
    r = report(client, start="2025-11-24T08:00:00+08:00", end="2025-11-24T10:30:00+08:00", format="csv")
    assert r.headers["content-disposition"] == 'attachment; filename="reconciled-a-2025-11-24T0800-2025-11-24T1030.csv"'


def test_csv_is_streamed_one_stack_at_a_time(client):
    full_day(client.db, {"s1": 250.0, "s2": 100.0})
    with client.stream("GET", "/api/v1/reports/reconciled", headers=auth(),
                       params={"plant": "a", "start": "2025-11-24", "end": "2025-11-25", "format": "csv"}) as r:
        chunks = list(r.iter_raw())
    assert len(chunks) >= 3  # s1, s2, then the daily comparison
    assert b"\r\n\r\ndate," not in chunks[0]


def test_report_on_a_database_down_is_503():
    class DownDb:
        def query(self, q):
            raise InfluxError("InfluxDB at http://x unreachable")

    c = TestClient(create_app(parse_config(CFG), DownDb(), lambda p, s: None, lambda: {}))
    for fmt in ("json", "csv"):
        r = report(c, format=fmt)
        assert r.status_code == 503 and "unavailable" in r.json()["detail"]


# ---- OpenAPI ----------------------------------------------------------------------------------------------

def test_openapi_documents_the_new_endpoints(client):
    spec = client.get("/openapi.json").json()
    rep = spec["paths"]["/api/v1/reports/reconciled"]["get"]
    assert rep["summary"] and "text/csv" in rep["responses"]["200"]["content"]
    assert "application/json" in rep["responses"]["200"]["content"]
    assert {p["name"] for p in rep["parameters"]} == {"plant", "start", "end", "format"}
    post = spec["paths"]["/api/v1/fuel/{plant}"]["post"]
    assert post["summary"] and "201" in post["responses"]
    assert spec["paths"]["/api/v1/plants/{plant}/comparison"]["get"]["summary"]
    schemas = spec["components"]["schemas"]
    for name in ("FuelIn", "FuelRecord", "Comparison", "ComparisonDay", "ReconciledReport"):
        assert schemas[name].get("examples"), name
    assert schemas["FuelIn"]["properties"]["fuel_t"]["exclusiveMinimum"] == 0
    assert schemas["ComparisonDay"]["properties"]["deviation_pct"]["description"]
