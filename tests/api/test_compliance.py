"""Allowances, the compliance position and the annual report (issue 11, DESIGN §7), on the in-process fake store of
test_reports.py, extended to answer the grouped statements these routes send."""

import csv
import datetime as dt
import io
import json
import math
import re
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from cems.api.app import create_app
from cems.api.routes import annual as annual_route
from cems.api.routes import compliance as compliance_route
from cems.config import ConfigError, parse_config
from tests.api.test_reports import CFG as REPORTS_CFG
from tests.api.test_reports import FakeDb, auth, fuel
from tests.integration.pdf import number, pdf_pages, pdf_text, section

SH = ZoneInfo("Asia/Shanghai")
CFG = REPORTS_CFG.replace("fuel_tolerance_pct = 5.0\n",
                          'fuel_tolerance_pct = 5.0\nname = "Plant A"\nallowances = { 2025 = 50000.0, "2026" = 6e4 }\n')
DENSITY = 44.01 / 22.4


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, tz: ZoneInfo = SH) -> int:
    """Epoch seconds of a local time."""
    return int(dt.datetime(y, mo, d, h, mi, s, tzinfo=tz).timestamp())


class Db(FakeDb):
    """FakeDb that also answers ``SELECT "f",.. FROM m WHERE .. GROUP BY stack`` and the calibration count
    ``SELECT count(status) FROM reading WHERE .. GROUP BY time(1m), stack fill(none)``."""

    def __init__(self):
        super().__init__()
        self.sent: list[str] = []

    def query(self, q: str) -> list[dict]:
        self.sent.append(q)
        m = re.fullmatch(r'SELECT ((?:"\w+",?)+) FROM (\w+) WHERE (.+) GROUP BY stack', q)
        if m:
            fields = re.findall(r'"(\w+)"', m.group(1))
            assert fields[-1] == "nulls", "NaN fields must be read with their `nulls` list"
            rows = super().query(f"SELECT * FROM {m.group(2)} WHERE {m.group(3)}")
            return [{"time": r["time"], "stack": r["stack"], **{f: r.get(f) for f in fields if f != "nulls"}}
                    for r in rows]
        m = re.fullmatch(r"SELECT count\(status\) FROM (\w+) WHERE (.+) GROUP BY time\(1m\), stack fill\(none\)", q)
        if m:
            counts: dict[tuple[str, int], int] = {}
            for r in super().query(f"SELECT * FROM {m.group(1)} WHERE {m.group(2)}"):
                key = (r["stack"], r["time"] // 60_000 * 60_000)
                counts[key] = counts.get(key, 0) + 1
            return [{"time": t, "stack": s, "count": n} for (s, t), n in sorted(counts.items())]
        return super().query(q)


def put_hour(db: Db, stack: str, start_s: int, mass: float = 100.0, status: str = "measured", method: str = "",
             final: bool = True, plant: str = "a", regime: str = "china", t0_k: float = 273.0,
             min_valid: int = 75) -> None:
    db.put("hour", {"plant": plant, "stack": stack}, start_s * 1000, {
        "status": status, "method": method, "valid_min": 60, "op_min": 0 if status == "stopped" else 60,
        "mass_t": mass, "final": final, "revision": 0, "regime": regime, "t0_k": t0_k, "co2_density_kg_m3": DENSITY,
        "min_valid_pct": min_valid, "co2_mg_m3": 240000.0, "qsn_m3_h": 1e6,
        "nulls": "mass_t" if math.isnan(mass) else ""})


def hours(db: Db, stack: str, first_s: int, n: int, **kw) -> None:
    for k in range(n):
        put_hour(db, stack, first_s + 3600 * k, **kw)


@pytest.fixture
def client(monkeypatch):
    db = Db()
    app = create_app(parse_config(CFG), db, lambda p, s: None, lambda: {})
    c = TestClient(app)
    c.db = db
    c.now = at(2026, 2, 1, 9, 30)  # the service's clock: 2025 is over

    clock = SimpleNamespace(time=lambda: c.now)
    monkeypatch.setattr(compliance_route, "time", clock)
    monkeypatch.setattr(annual_route, "time", clock)
    return c


def get_compliance(client, year=2025, token="operator-token-a", plant="a"):
    params = {} if year is None else {"year": year}
    return client.get(f"/api/v1/plants/{plant}/compliance", params=params, headers=auth(token))


def post_allowances(client, body, token="operator-token-a", plant="a"):
    return client.post(f"/api/v1/allowances/{plant}", json=body, headers=auth(token))


def get_annual(client, year=2025, fmt=None, token="regulator-token", plant="a"):
    params = {"plant": plant, "year": year} | ({} if fmt is None else {"format": fmt})
    return client.get("/api/v1/reports/annual", params=params, headers=auth(token))


# ---- config ---------------------------------------------------------------------------------------------

def test_config_allowances_are_years_of_tonnes():
    p = parse_config(CFG).plant("a")
    assert p.allowances == {2025: 50000.0, 2026: 60000.0}
    assert parse_config(CFG).plant("b").allowances == {}


@pytest.mark.parametrize("table, fragment", [
    ("{ 20x6 = 1.0 }", "plants[0].allowances: key '20x6' is not a year 2000..2199"),
    ("{ 1999 = 1.0 }", "key '1999' is not a year"),
    ("{ 12026 = 1.0 }", "key '12026' is not a year"),
    ("{ 2026 = -1.0 }", "2026: -1.0 is not a number of t CO2"),
    ("{ 2026 = \"1e6\" }", "2026: '1e6' is not a number of t CO2"),
    ("{ 2026 = true }", "2026: True is not a number of t CO2"),
    ("{ 2026 = nan }", "2026: nan is not a number"),
    ("1.2e6", "must be a table of year = t CO2"),
])
def test_config_allowances_refused_naming_the_key(table, fragment):
    with pytest.raises(ConfigError) as e:
        parse_config(REPORTS_CFG.replace("fuel_tolerance_pct = 5.0\n", f"allowances = {table}\n"))
    assert fragment in str(e.value)


# ---- roles and scopes -----------------------------------------------------------------------------------

def test_compliance_is_for_readers_in_scope(client):
    for token in ("operator-token-a", "regulator-token", "admin-token"):
        assert get_compliance(client, token=token).status_code == 200
    r = get_compliance(client, token="gateway-token")
    assert r.status_code == 403 and "may not read figures" in r.json()["detail"]
    assert get_compliance(client, token="operator-token-b").json()["detail"] == "token may not see plant 'a'"
    assert get_compliance(client, plant="zz", token="admin-token").status_code == 404
    assert client.get("/api/v1/plants/a/compliance").status_code == 401


def test_allowances_are_set_by_operators_and_admins_in_scope(client):
    body = {"year": 2025, "allowances_t": 1000.0}
    for token in ("regulator-token", "gateway-token"):
        r = post_allowances(client, body, token=token)
        assert r.status_code == 403 and "may not set allowances (admin or operator only)" in r.json()["detail"]
    assert post_allowances(client, body, token="operator-token-b").status_code == 403
    assert post_allowances(client, body, plant="zz", token="admin-token").status_code == 404
    assert post_allowances(client, body, token="admin-token").status_code == 201
    assert post_allowances(client, body).status_code == 201


def test_annual_report_is_for_regulators_operators_and_admins_in_scope(client):
    for token in ("regulator-token", "operator-token-a", "admin-token"):
        for fmt in ("json", "csv"):
            assert get_annual(client, fmt=fmt, token=token).status_code == 200
    assert get_annual(client, token="gateway-token").status_code == 403
    assert get_annual(client, token="regulator-token-b").status_code == 403
    assert get_annual(client, plant="zz").status_code == 404
    assert get_annual(client, token="regulator-token-b", plant="b").status_code == 200


# ---- allowances -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, field, fragment", [
    ({"year": "2025"}, "year", "valid integer"),
    ({"year": 2025.5}, "year", "valid integer"),
    ({"year": 1999}, "year", "greater than or equal to 2000"),
    ({"year": 2200}, "year", "less than or equal to 2199"),
    ({"allowances_t": -1.0}, "allowances_t", "greater than or equal to 0"),
    ({"allowances_t": "5"}, "allowances_t", "valid number"),
    ({"allowances_t": True}, "allowances_t", "valid number"),
    ({"allowances_t": 1e11}, "allowances_t", "less than or equal to"),
    ({"note": "x" * 501}, "note", "at most 500 characters"),
    ({"allowance_t": 5.0}, "allowance_t", "Extra inputs are not permitted"),
])
def test_allowance_validation_is_422_naming_the_field(client, change, field, fragment):
    r = post_allowances(client, {"year": 2025, "allowances_t": 1000.0} | change)
    assert r.status_code == 422, r.text
    errs = r.json()["detail"]
    assert any(e["loc"] == ["body", field] and fragment in e["msg"] for e in errs), errs
    assert client.db.writes == []


def test_allowances_stored_at_the_years_local_start_latest_counts_earlier_audited(client):
    r = post_allowances(client, {"year": 2025, "allowances_t": 70000, "note": "free allocation"})
    assert r.status_code == 201
    body = r.json()
    assert {k: body[k] for k in ("plant", "year", "allowances_t", "note", "submitted_by", "replaced")} == {
        "plant": "a", "year": 2025, "allowances_t": 70000.0, "note": "free allocation", "submitted_by": "op-a",
        "replaced": False}
    assert body["submitted_at"].endswith("+08:00")
    [(lines, precision)] = client.db.writes
    assert precision == "ms" and lines[0].startswith("allowance,plant=a ")
    assert lines[0].endswith(f" {at(2025, 1, 1) * 1000}") and "allowances_t=70000.0," in lines[0]
    assert client.db.of("audit") == []

    r = post_allowances(client, {"year": 2025, "allowances_t": 72500.5, "note": "bought 2,500.5 t"},
                        token="admin-token")
    assert r.json()["replaced"] is True
    [stored] = client.db.of("allowance")
    assert stored["allowances_t"] == 72500.5 and stored["submitted_by"] == "admin" and stored["year"] == 2025
    [a] = client.db.of("audit")
    assert (a["plant"], a["kind"]) == ("a", "allowance") and "stack" not in a
    assert a["target"] == "2024-12-31T16:00:00+00:00" and "resubmitted by admin" in a["cause"]
    assert json.loads(a["old"])["allowances_t"] == 70000.0 and json.loads(a["new"])["allowances_t"] == 72500.5
    assert [p for _, p in client.db.writes] == ["ms", "ns", "ms"]
    body = get_compliance(client).json()
    assert (body["allowances_t"], body["allowances_source"], body["allowances_note"]) == (72500.5, "api",
                                                                                          "bought 2,500.5 t")


def test_allowances_from_config_then_overridden_and_none_elsewhere(client):
    body = get_compliance(client).json()
    assert (body["allowances_t"], body["allowances_source"], body["surplus_t"]) == (50000.0, "config", 50000.0)
    body = get_compliance(client, year=2024).json()
    assert body["allowances_t"] is None and body["surplus_t"] is None and body["allowances_source"] is None
    assert body["projected_surplus_t"] is None
    post_allowances(client, {"year": 2024, "allowances_t": 10.0})
    assert get_compliance(client, year=2024).json()["allowances_t"] == 10.0
    assert get_compliance(client).json()["allowances_t"] == 50000.0  # other years keep theirs


# ---- the compliance position ------------------------------------------------------------------------------

def in_year_data(db: Db) -> None:
    """2024: 1,000 t by 15 March, 3,000 t after. 2025 up to 15 March 12:00: 850 t, 50 t of it substituted."""
    hours(db, "s1", at(2024, 1, 10), 10)
    hours(db, "s1", at(2024, 7, 1), 30)
    hours(db, "s1", at(2025, 1, 10), 5)
    hours(db, "s2", at(2025, 2, 1), 5, mass=60.0)
    put_hour(db, "s2", at(2025, 2, 1, 5), 50.0, "substituted", "HBHA")
    put_hour(db, "s2", at(2025, 2, 1, 6), 0.0, "stopped")
    put_hour(db, "s2", at(2025, 2, 1, 7), math.nan, "substituted", "HBHA", final=False)  # pending: adds nothing
    put_hour(db, "old", at(2025, 2, 1), 1e6)  # a stack no longer configured


def test_position_in_the_year(client):
    client.now = at(2025, 3, 15, 12, 30)
    in_year_data(client.db)
    fuel(client.db, dt.date(2025, 1, 10), 480.0)
    fuel(client.db, dt.date(2025, 2, 1), 400.0)
    r = get_compliance(client)
    assert r.status_code == 200
    body = r.json()
    contract = {"plant", "year", "emissions_t", "calculated_t", "allowances_t", "surplus_t", "projection_t",
                "projection_method", "hours", "substituted_share"}
    assert contract <= set(body) and set(body["hours"]) == {"measured", "substituted", "stopped", "missing"}
    elapsed = (31 + 28 + 14) * 24 + 12
    assert (body["plant"], body["year"], body["elapsed_hours"], body["year_hours"]) == ("a", 2025, elapsed, 8760)
    assert (body["start"], body["as_of"]) == ("2025-01-01T00:00:00+08:00", "2025-03-15T12:00:00+08:00")
    assert body["emissions_t"] == 850.0 and body["substituted_t"] == 50.0
    assert body["substituted_share"] == pytest.approx(50 / 850, rel=1e-15)
    assert body["hours"] == {"measured": 10, "substituted": 2, "stopped": 1, "missing": 2 * elapsed - 13}
    assert body["allowances_t"] == 50000.0 and body["surplus_t"] == 49150.0
    run_rate = 850 / elapsed * 8760
    assert body["projection_method"] == "run_rate" and body["projection_t"] == pytest.approx(run_rate, rel=1e-15)
    assert body["projected_surplus_t"] == pytest.approx(50000 - run_rate, rel=1e-15)
    rr, prev = body["projections"]
    assert rr["method"] == "run_rate" and rr["projection_t"] == body["projection_t"]
    assert "850.0 t in 1,764 elapsed hours x 8,760 hours" in rr["basis"]
    assert prev["method"] == "previous_year" and prev["projection_t"] == pytest.approx(850 * 4000 / 1000, rel=1e-15)
    assert "4,000.0 t (2024)" in prev["basis"] and "1,000.0 t (2024 to 2024-03-15T12:00)" in prev["basis"]
    assert body["calculated_t"] == 880.0
    assert body["calculation"] == {"days": 2, "calculated_t": 880.0, "cems_t": 850.0,
                                   "deviation_pct": pytest.approx((850 - 880) / 880 * 100, rel=1e-12)}
    assert body["final"] is False


def test_position_of_a_past_year_and_of_one_without_data(client):
    in_year_data(client.db)
    body = get_compliance(client).json()
    assert body["elapsed_hours"] == body["year_hours"] == 8760 and body["as_of"] == "2026-01-01T00:00:00+08:00"
    assert body["projection_t"] == 850.0  # the year is over: the projection is the total
    assert body["projections"][1]["projection_t"] == 850.0  # the whole previous year against itself
    assert body["hours"]["missing"] == 2 * 8760 - 13
    assert body["final"] is False  # a pending substitute
    body = get_compliance(client, year=2023).json()
    assert body["emissions_t"] == 0.0 and body["substituted_share"] is None and body["calculated_t"] is None
    assert body["projections"][1]["projection_t"] is None and "cannot scale" in body["projections"][1]["basis"]
    assert body["calculation"] == {"days": 0, "calculated_t": None, "cems_t": 0.0, "deviation_pct": None}


def test_position_before_the_first_hour_closes_and_in_a_future_year(client):
    client.now = at(2026, 1, 1, 0, 40)
    body = get_compliance(client, year=None).json()
    assert body["year"] == 2026 and body["elapsed_hours"] == 0 and body["projection_t"] is None
    assert body["projection_method"] == "run_rate" and "no hour" in body["projections"][0]["basis"]
    assert body["allowances_t"] == 60000.0 and body["surplus_t"] == 60000.0
    body = get_compliance(client, year=2027).json()
    assert body["elapsed_hours"] == 0 and body["hours"]["missing"] == 0


def test_a_final_past_year(client):
    for st in ("s1", "s2"):
        hours(client.db, st, at(2023, 1, 1), 8760, mass=1.0)
    body = get_compliance(client, year=2023).json()
    assert body["final"] is True and body["hours"]["missing"] == 0 and body["emissions_t"] == 2 * 8760.0


def test_year_is_the_plants_local_year(client):
    """Hours by their UTC start: 2024-12-31T16:00Z is 2025 in Shanghai; in Berlin 2025 starts 2024-12-31T23:00Z."""
    put_hour(client.db, "s1", at(2025, 1, 1), 7.0)
    put_hour(client.db, "s1", at(2025, 1, 1) - 3600, 1000.0)
    berlin = ZoneInfo("Europe/Berlin")
    put_hour(client.db, "s1", at(2025, 1, 1, tz=berlin), 3.0, plant="b")
    put_hour(client.db, "s1", at(2025, 1, 1, tz=berlin) - 3600, 500.0, plant="b")
    assert get_compliance(client).json()["emissions_t"] == 7.0
    body = get_compliance(client, plant="b", token="regulator-token").json()
    assert body["emissions_t"] == 3.0 and body["start"] == "2025-01-01T00:00:00+01:00"


@pytest.mark.parametrize("year", ["1999", "2200", "twenty", "2025.5"])
def test_compliance_bad_year_is_422(client, year):
    assert client.get("/api/v1/plants/a/compliance", params={"year": year},
                      headers=auth("operator-token-a")).status_code == 422


def test_compliance_reads_a_year_in_a_few_queries(client):
    in_year_data(client.db)
    get_compliance(client)
    hour_queries = [q for q in client.db.sent if " FROM hour " in q]
    # The year and the year before, each in one query for all stacks; then fuel and allowances.
    assert len(hour_queries) == 2 and all(q.endswith("GROUP BY stack") for q in hour_queries)
    assert len(client.db.sent) == 4


# ---- the annual report ------------------------------------------------------------------------------------

def annual_data(db: Db) -> None:
    hours(db, "s1", at(2025, 1, 10), 6)  # 600 t measured
    put_hour(db, "s1", at(2025, 1, 10, 6), 80.0, "substituted", "HBHA")
    put_hour(db, "s1", at(2025, 1, 10, 7), 0.0, "stopped")
    hours(db, "s1", at(2025, 3, 15, 10), 2, mass=50.0)
    put_hour(db, "s1", at(2025, 12, 31, 23), 10.0)
    put_hour(db, "s1", at(2026, 1, 1), 999.0)  # next year
    put_hour(db, "s1", at(2024, 12, 31, 23), 999.0)  # previous year
    hours(db, "s2", at(2025, 1, 10), 3, mass=30.0)
    put_hour(db, "s2", at(2025, 1, 10, 3), 40.0, "substituted", "P90")
    put_hour(db, "s2", at(2025, 1, 10, 4), math.nan, "substituted", "HBHA", final=False)
    put_hour(db, "s2", at(2025, 6, 1), 20.0, regime="eu", t0_k=273.15, min_valid=80)  # constants changed
    put_hour(db, "old", at(2025, 1, 10), 1e6)
    fuel(db, dt.date(2025, 1, 10), 700.0)
    fuel(db, dt.date(2025, 3, 15), 100.0)

    def audit(stack: str, target_s: int, revised_s: int, kind: str = "revision", old=95.0, new=100.0) -> None:
        db.put("audit", {"plant": "a", "stack": stack, "kind": kind}, revised_s * 1000, {
            "target": dt.datetime.fromtimestamp(target_s, dt.UTC).isoformat(),
            "old": json.dumps({"mass_t": old, "revision": 0}), "new": json.dumps({"mass_t": new, "revision": 1}),
            "cause": "late or corrected data", "nulls": ""})

    audit("s1", at(2025, 1, 10, 2), at(2025, 1, 11, 9))
    audit("s2", at(2025, 3, 15, 10), at(2025, 3, 16, 8), old=None, new=20.5)
    audit("s1", at(2024, 12, 31, 23), at(2025, 1, 2))  # an hour of 2024
    audit("s1", at(2025, 1, 10, 3), at(2025, 1, 11), kind="correction")
    audit("old", at(2025, 1, 10), at(2025, 1, 11))
    for k in range(60):  # 5 minutes of calibration at 5 s, then one more flagged minute, and a normal reading
        db.put("reading", {"plant": "a", "stack": "s2"}, (at(2025, 3, 15, 10, 10) + 5 * k) * 1000,
               {"status": "C", "nulls": ""})
    db.put("reading", {"plant": "a", "stack": "s2"}, at(2025, 3, 15, 10, 30, 7) * 1000, {"status": "C", "nulls": ""})
    db.put("reading", {"plant": "a", "stack": "s2"}, at(2025, 3, 15, 10, 20) * 1000, {"status": "N", "nulls": ""})


MONTH_HOURS = [744, 672, 744, 720, 744, 720, 744, 744, 720, 744, 720, 744]


def test_annual_json(client):
    annual_data(client.db)
    r = get_annual(client)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["x-report-complete"] == "false"
    rep = r.json()
    assert (rep["plant"], rep["year"], rep["regime"], rep["name"]) == ("a", 2025, "china", "Plant A")
    assert rep["total_t"] == 940.0 and rep["calculated_t"] == 800.0 and rep["substituted_t"] == 120.0
    assert rep["as_of"] == rep["end"] == "2026-01-01T00:00:00+08:00" and rep["complete"] is False
    assert rep["not_final"] == 2 * 8760 - (11 + 5)  # 16 hours with a final figure (s2 has a pending one)
    s1, s2 = rep["stacks"]
    assert (s1["stack"], s1["total_t"], s2["stack"], s2["total_t"]) == ("s1", 790.0, "s2", 150.0)
    assert [m["month"] for m in s1["months"]] == [f"2025-{m:02d}" for m in range(1, 13)]
    jan = s1["months"][0]
    assert {k: jan[k] for k in ("co2_t", "measured_hours", "substituted_hours", "stopped_hours", "missing_hours",
                                "substituted_t", "methods", "calculated_t")} == {
        "co2_t": 680.0, "measured_hours": 6, "substituted_hours": 1, "stopped_hours": 1, "missing_hours": 744 - 8,
        "substituted_t": 80.0, "methods": {"HBHA": 1}, "calculated_t": 700.0}
    assert [m["co2_t"] for m in s1["months"]] == [680.0, 0, 100.0, 0, 0, 0, 0, 0, 0, 0, 0, 10.0]
    assert [m["calculated_t"] for m in s2["months"]][:4] == [700.0, None, 100.0, None]  # the plant's figure
    assert s2["months"][0]["methods"] == {"HBHA": 1, "P90": 1} and s2["methods"] == {"HBHA": 1, "P90": 1}
    assert s2["months"][0]["co2_t"] == 130.0 and s2["months"][5]["co2_t"] == 20.0
    assert s1["hours"] == {"measured": 9, "substituted": 1, "stopped": 1, "missing": 8760 - 11}
    assert [sum(m["missing_hours"] + m["measured_hours"] + m["substituted_hours"] + m["stopped_hours"]
                for m in s["months"]) for s in (s1, s2)] == [8760, 8760]
    assert [m["missing_hours"] for m in s2["months"]] == [h - {0: 5, 5: 1}.get(i, 0)
                                                         for i, h in enumerate(MONTH_HOURS)]
    jan, _, mar = rep["months"][:3]
    assert (jan["co2_t"], jan["calculated_t"], jan["fuel_days"], jan["cems_on_fuel_days_t"]) == (810.0, 700.0, 1, 810.0)
    assert jan["deviation_pct"] == pytest.approx((810 - 700) / 700 * 100) and jan["flagged"] is True
    assert (mar["co2_t"], mar["deviation_pct"], mar["flagged"]) == (100.0, 0.0, False)
    assert rep["months"][1]["calculated_t"] is None and rep["months"][1]["deviation_pct"] is None
    assert rep["hours"] == {"measured": 13, "substituted": 3, "stopped": 1, "missing": 2 * 8760 - 17}


def test_annual_revisions_constants_and_calibrations(client):
    annual_data(client.db)
    rep = get_annual(client).json()
    assert rep["revisions"] == [
        {"stack": "s1", "hour": "2025-01-10T02:00:00+08:00", "revised_at": "2025-01-11T09:00:00+08:00", "revision": 1,
         "old_co2_t": 95.0, "new_co2_t": 100.0, "cause": "late or corrected data"},
        {"stack": "s2", "hour": "2025-03-15T10:00:00+08:00", "revised_at": "2025-03-16T08:00:00+08:00", "revision": 1,
         "old_co2_t": None, "new_co2_t": 20.5, "cause": "late or corrected data"}]
    c = rep["constants"]
    assert [(x["stack"], x["regime"], x["t0_k"], x["min_valid_pct"], x["hours"]) for x in c] == [
        ("s1", "china", 273.0, 75, 11), ("s2", "china", 273.0, 75, 5), ("s2", "eu", 273.15, 80, 1)]
    assert c[0]["p0_kpa"] == 101.325 and c[0]["co2_density_kg_m3"] == DENSITY
    assert (c[0]["first_hour"], c[0]["last_hour"]) == ("2025-01-10T00:00:00+08:00", "2025-12-31T23:00:00+08:00")
    assert c[0]["flow_basis"] == "actual_wet" and c[0]["calibration"] == {}
    assert rep["calibrations"] == [
        {"stack": "s2", "start": "2025-03-15T10:10:00+08:00", "end": "2025-03-15T10:15:00+08:00", "minutes": 5,
         "readings": 60},
        {"stack": "s2", "start": "2025-03-15T10:30:00+08:00", "end": "2025-03-15T10:31:00+08:00", "minutes": 1,
         "readings": 1}]


def test_annual_of_the_current_year_runs_to_the_last_closed_hour(client):
    client.now = at(2025, 3, 15, 12, 30)
    annual_data(client.db)
    rep = get_annual(client).json()
    assert rep["as_of"] == "2025-03-15T12:00:00+08:00" and rep["complete"] is False
    s1 = rep["stacks"][0]
    assert [m["month"] for m in s1["months"]] == ["2025-01", "2025-02", "2025-03"]
    assert [m["missing_hours"] for m in s1["months"]] == [744 - 8, 672, 14 * 24 + 12 - 2]
    assert get_annual(client, year=2026).status_code == 422  # not begun


def test_annual_csv_is_one_row_per_stack_and_month(client):
    annual_data(client.db)
    rep = get_annual(client).json()
    r = get_annual(client, fmt="csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="annual-a-2025.csv"'
    assert r.headers["x-not-final-hours"] == str(rep["not_final"])
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == ["plant", "stack", "month", "co2_t", "measured_hours", "substituted_hours",
                             "stopped_hours", "missing_hours", "substituted_t", "hours_HBHA", "hours_P90", "hours_P95",
                             "hours_MAX", "hours_MPV", "hours_MRR", "calculated_t"]
    want = [(s, m) for s in rep["stacks"] for m in s["months"]]
    assert len(rows) == len(want) == 24
    for row, (s, m) in zip(rows, want, strict=True):
        assert (row["plant"], row["stack"], row["month"]) == ("a", s["stack"], m["month"])
        assert row["co2_t"] == f"{m['co2_t']:.3f}" and row["substituted_t"] == f"{m['substituted_t']:.3f}"
        assert [int(row[f"{k}_hours"]) for k in ("measured", "substituted", "stopped", "missing")] == [
            m[f"{k}_hours"] for k in ("measured", "substituted", "stopped", "missing")]
        assert row["calculated_t"] == ("" if m["calculated_t"] is None else f"{m['calculated_t']:.3f}")
        codes = ("HBHA", "P90", "P95", "MAX", "MPV", "MRR")
        assert sum(int(row[f"hours_{c}"]) for c in codes) == m["substituted_hours"]
    assert sum(float(r["co2_t"]) for r in rows) == pytest.approx(rep["total_t"], abs=24 * 5e-4)


def test_annual_pdf_prints_the_figures(client, tmp_path):
    annual_data(client.db)
    rep = get_annual(client).json()
    r = get_annual(client, fmt="pdf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"] == 'attachment; filename="annual-a-2025.pdf"'
    assert r.content.startswith(b"%PDF-")
    text = pdf_text(r.content, tmp_path)
    assert "Annual CO" in text and "Plant A (a), 2025" in text
    total = re.search(r"Total CO2 \(CEMS\), t\s+([\d,.]+)", text)
    assert total and number(total.group(1)) == round(rep["total_t"], 3)
    table = section(text, "The chart's figures", "Hours by status and method")
    for m in rep["months"]:
        [line] = [ln for ln in table.splitlines() if ln.strip().startswith(m["month"])]
        cells = line.split()
        stacks = [number(c) for c in cells[1:3]]
        assert stacks == [round(s["months"][int(m["month"][5:]) - 1]["co2_t"], 3) for s in rep["stacks"]]
        assert number(cells[3]) == round(m["co2_t"], 3)
    year = [ln for ln in table.splitlines() if ln.strip().startswith("Year")][0].split()
    assert [number(c) for c in year[1:5]] == [790.0, 150.0, 940.0, 800.0]
    assert "late or corrected data" in text and "2025-03-15T10:10:00+08:00" in text and "HBHA 1, P90 1" in text
    pages = pdf_pages(r.content, tmp_path / "pages")
    assert 1 <= len(pages) <= 6 and all(p.stat().st_size > 2000 for p in pages)


@pytest.mark.parametrize("params, fragment", [
    ({"format": "xlsx"}, "format: 'xlsx' is not one of json, csv, pdf"),
    ({"year": "1999"}, "greater than or equal to 2000"),
    ({"year": "x"}, "valid integer"),
])
def test_annual_bad_requests_are_422(client, params, fragment):
    r = client.get("/api/v1/reports/annual", params={"plant": "a", "year": 2025} | params, headers=auth())
    assert r.status_code == 422 and fragment in json.dumps(r.json()["detail"])


def test_annual_needs_plant_and_year(client):
    assert client.get("/api/v1/reports/annual", params={"year": 2025}, headers=auth()).status_code == 422
    assert client.get("/api/v1/reports/annual", params={"plant": "a"}, headers=auth()).status_code == 422


def test_openapi_documents_the_new_endpoints(client):
    spec = client.get("/openapi.json").json()
    rep = spec["paths"]["/api/v1/reports/annual"]["get"]
    assert {"text/csv", "application/pdf", "application/json"} <= set(rep["responses"]["200"]["content"])
    assert {p["name"] for p in rep["parameters"]} == {"plant", "year", "format"}
    assert spec["paths"]["/api/v1/plants/{plant}/compliance"]["get"]["summary"]
    assert "201" in spec["paths"]["/api/v1/allowances/{plant}"]["post"]["responses"]
    schemas = spec["components"]["schemas"]
    for name in ("AllowanceIn", "AllowanceRecord", "Compliance"):
        assert schemas[name].get("examples"), name
