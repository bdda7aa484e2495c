"""CEMS vs calculation and the reconciled report on real parts (DESIGN §5, §7): readings in over MQTT, fuel data
posted by an operator, the report pulled by a regulator as JSON and CSV, checked against the `/hours` API and
a hand calculation."""

import csv
import datetime as dt
import io
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from cems import localservices as ls
from tests.conftest import close
from tests.integration.conftest import STACKS, TOKENS, Running, publish, write_config

pytestmark = pytest.mark.integration
TZ = dt.timezone(dt.timedelta(hours=8))
OPERATOR_IT = "it-operator-token-it"
# The session's tokens come from conftest; an operator for plant `it` and a tighter band are added here.
PLANTS = f"""
[[api.tokens]]
token = "{OPERATOR_IT}"
role = "operator"
plants = ["it"]
name = "it-operator"
""" + STACKS.replace("settle_s = 2\n", "settle_s = 2\nfuel_tolerance_pct = 5.0\n", 1)
K1 = {"flow_m3h": 1.3e6, "co2_pct": 12.5, "temp_c": 50.0, "press_kpa": 101.1, "h2o_pct": 10.0}
HOUR_KEYS = ("start", "co2_t", "co2_mg_m3", "qsn_m3_h", "valid_minutes", "operating_minutes", "status", "method",
             "revision", "final")
K2 = {"velocity_ms": 14.0, "co2_pct": 13.0, "temp_c": 48.0, "press_kpa": 100.8, "h2o_pct": 9.5}


@pytest.fixture
def svc(backends, tmp_path):
    name = "rp_" + uuid.uuid4().hex[:10]
    port = ls.free_port()
    cfg = write_config(tmp_path / "cems.toml", backends, port, tmp_path / "data", name, f"cems-{name}", PLANTS)
    run = Running(backends, cfg, port, tmp_path / "data", name, tmp_path / "service.log")
    run.start()
    yield run
    run.stop()


def request(svc, method: str, path: str, token: str, body: dict | None = None, **params):
    """(status, headers, raw body) of one API call."""
    q = ("?" + urllib.parse.urlencode(params)) if params else ""
    req = urllib.request.Request(f"http://127.0.0.1:{svc.api_port}/api/v1{path}{q}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def stream(t0: int) -> list[tuple[str, str]]:
    """Three hours per stack, one 60-reading message per minute; the first 15 minutes of hour 1 stopped (F)."""
    msgs = []
    for stack, values in (("k1", K1), ("k2", K2)):
        for h in range(3):
            for m in range(60):
                status = "F" if h == 1 and m < 15 else "N"
                ts = [t0 + h * 3600 + m * 60 + s for s in range(60)]
                msgs.append((f"cems/v1/it/{stack}/readings", json.dumps({"ts": ts, **values, "status": status})))
    return msgs


def final_hours(svc, stack: str, start: dt.datetime) -> list[dict]:
    q = {"start": start.isoformat(), "end": (start + dt.timedelta(hours=3)).isoformat()}

    def ready():
        code, body = svc.get(f"/stacks/it/{stack}/hours", **q)
        items = body.get("items", []) if code == 200 else []
        ok = [i["valid_minutes"] for i in items] == [60, 45, 60] and all(i["final"] for i in items)
        return ok and items

    return svc.wait(ready, 120, f"three final hours of {stack}")


def calculated(fuel_t: float, carbon_frac: float, oxidation: float) -> float:
    return fuel_t * carbon_frac * oxidation * 44 / 12  # DESIGN §5, written out again


def test_fuel_comparison_and_reconciled_report(svc):
    start = dt.datetime.now(TZ).replace(hour=8, minute=0, second=0, microsecond=0) - dt.timedelta(days=2)
    day = start.date()
    publish(svc.backends.mqtt_port, stream(int(start.timestamp())))
    for stack in ("k1", "k2"):
        final_hours(svc, stack, start)
    day_q = {"start": day.isoformat(), "end": (day + dt.timedelta(days=1)).isoformat()}
    # Everything /hours says about the day, as a regulator's own check would add it up.
    all_hours = {s: svc.get(f"/stacks/it/{s}/hours", **day_q)[1]["items"] for s in ("k1", "k2")}
    cems_t = sum(h["co2_t"] for hs in all_hours.values() for h in hs if h["co2_t"] is not None)
    final_t = sum(h["co2_t"] for hs in all_hours.values() for h in hs if h["final"])
    n_final = sum(h["final"] for hs in all_hours.values() for h in hs)
    assert n_final == 6 and close(cems_t, final_t)  # the hours after the stream are missing, without mass

    # An operator of plant `it` submits the day's fuel; the one scoped to another plant may not.
    fuel = {"date": day.isoformat(), "fuel_t": 600.0, "carbon_frac": 0.6, "oxidation": 0.98}
    assert request(svc, "POST", "/fuel/it", TOKENS["operator"], fuel)[0] == 403
    assert request(svc, "POST", "/fuel/it", TOKENS["regulator"], fuel)[0] == 403
    code, _, raw = request(svc, "POST", "/fuel/it", OPERATOR_IT, fuel | {"date": "2999-01-01"})
    assert code == 422 and "in the future" in raw.decode()
    code, _, raw = request(svc, "POST", "/fuel/it", OPERATOR_IT, fuel)
    assert code == 201, raw
    calc = calculated(600.0, 0.6, 0.98)
    assert close(json.loads(raw)["calculated_t"], calc, rel=1e-15)

    code, body = svc.get("/plants/it/comparison", token=OPERATOR_IT, **day_q)
    assert code == 200 and body["tolerance_pct"] == 5.0
    [item] = body["items"]
    dev = (cems_t - calc) / calc * 100
    assert item["date"] == day.isoformat() and close(item["cems_t"], cems_t) and close(item["calculated_t"], calc)
    assert close(item["deviation_pct"], dev, rel=1e-9)
    assert 8 < dev < 14 and item["flagged"] is True  # about 1439 t by CEMS, 1294 t by calculation
    assert item["final"] is False  # the rest of the day has no final figures

    # A corrected submission replaces the record; the first goes to the audit log.
    fuel["fuel_t"] = 650.0
    assert request(svc, "POST", "/fuel/it", OPERATOR_IT, fuel)[0] == 201
    calc = calculated(650.0, 0.6, 0.98)
    rows = svc.influx_query("SELECT * FROM fuel WHERE plant = 'it'")
    assert len(rows) == 1 and rows[0]["fuel_t"] == 650.0 and rows[0]["submitted_by"] == "it-operator"
    assert rows[0]["time"] == int(dt.datetime(day.year, day.month, day.day, tzinfo=TZ).timestamp()) * 1000
    audits = svc.influx_query("SELECT * FROM audit WHERE kind = 'fuel'")
    assert len(audits) == 1 and json.loads(audits[0]["old"])["fuel_t"] == 600.0
    assert json.loads(audits[0]["new"])["fuel_t"] == 650.0

    # The regulator's report, JSON.
    assert request(svc, "GET", "/reports/reconciled", OPERATOR_IT, plant="it", **day_q)[0] == 403
    code, rep = svc.get("/reports/reconciled", plant="it", **day_q)
    assert code == 200
    assert (rep["plant"], rep["regime"]) == ("it", "china")
    assert rep["complete"] is False and rep["not_final"] == 2 * 24 - 6
    assert [s["stack"] for s in rep["stacks"]] == ["k1", "k2"]
    for s in rep["stacks"]:
        assert s["hours"] == [{k: h[k] for k in HOUR_KEYS} for h in all_hours[s["stack"]] if h["final"]]
    assert close(rep["totals"]["cems_t"], final_t) and close(rep["totals"]["calculated_t"], calc)
    [d] = rep["days"]
    dev = (cems_t - calc) / calc * 100
    assert close(d["cems_t"], cems_t) and close(d["deviation_pct"], dev, rel=1e-9)
    assert 2 < dev < 5 and d["flagged"] is False
    assert rep["days"] == svc.get("/plants/it/comparison", **day_q)[1]["items"]

    # Just the three hours: every hour final, so the report is complete.
    code, rep3 = svc.get("/reports/reconciled", plant="it", start=start.isoformat(),
                         end=(start + dt.timedelta(hours=3)).isoformat())
    assert code == 200 and rep3["complete"] is True and "not_final" not in rep3
    assert close(rep3["totals"]["cems_t"], final_t)

    # The same as CSV.
    code, headers, raw = request(svc, "GET", "/reports/reconciled", TOKENS["regulator"], plant="it", format="csv",
                                 **day_q)
    assert code == 200 and headers["Content-Type"].startswith("text/csv")
    assert headers["Content-Disposition"] == (f'attachment; filename="reconciled-it-{day.isoformat()}-'
                                              f'{(day + dt.timedelta(days=1)).isoformat()}.csv"')
    assert headers["X-Report-Complete"] == "false" and headers["X-Not-Final-Hours"] == str(2 * 24 - 6)
    text = raw.decode()
    hour_part, day_part = text.split("\r\n\r\n")
    hour_rows = list(csv.DictReader(io.StringIO(hour_part)))
    want = [(s["stack"], h) for s in rep["stacks"] for h in s["hours"]]
    assert [(r["stack"], r["start"]) for r in hour_rows] == [(s, h["start"]) for s, h in want]
    for r, (_, h) in zip(hour_rows, want, strict=True):
        assert r["co2_t"] == f"{h['co2_t']:.3f}" and r["qsn_m3_h"] == f"{h['qsn_m3_h']:.1f}"
        assert r["co2_mg_m3"] == f"{h['co2_mg_m3']:.1f}" and r["final"] == "true"
        assert (int(r["valid_minutes"]), int(r["operating_minutes"]), r["status"]) == (
            h["valid_minutes"], h["operating_minutes"], h["status"])
    assert abs(sum(float(r["co2_t"]) for r in hour_rows) - final_t) <= len(hour_rows) * 5e-4
    [day_row] = list(csv.DictReader(io.StringIO(day_part)))
    assert (day_row["date"], day_row["flagged"]) == (day.isoformat(), "false")
    assert abs(float(day_row["cems_t"]) - cems_t) <= 5e-4 and abs(float(day_row["calculated_t"]) - calc) <= 5e-4
    assert abs(float(day_row["deviation_pct"]) - dev) <= 5e-3
