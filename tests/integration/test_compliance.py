"""Compliance and the annual report on real parts (issue 11): a plant simulated over three days through mosquitto
into a real `cems serve` and InfluxDB, with fuel data, allowances, a substituted gap, a calibration and a late
correction; the compliance figures, the annual report as JSON, CSV and PDF, and the dashboard's compliance card
are checked against sums computed here from the hourly API.

One service for the module: the data takes a while to settle, and every test only reads it (the last one adds
recent hours, to see the card move; the others recompute their expectations from `/hours` each time).
"""

import csv
import datetime as dt
import io
import json
import re
import uuid

import pytest

from cems import localservices as ls
from tests.conftest import close
from tests.integration.browser import Chromium
from tests.integration.conftest import STACKS, TOKENS, Running, publish, write_config
from tests.integration.pdf import number, pdf_pages, pdf_text, section
from tests.integration.test_dashboard import save_screenshot, shown, wait_agreeing
from tests.integration.test_reports import request

pytestmark = pytest.mark.integration
TZ = dt.timezone(dt.timedelta(hours=8))  # the plant's Asia/Shanghai (no DST)
OPERATOR = "it-compliance-operator"
REGULATOR = TOKENS["regulator"]
SAMPLE_S = 5  # HJ 75's 5 s sampling: 12 readings make a valid minute
K1 = {"flow_m3h": 1.3e6, "temp_c": 50.0, "press_kpa": 101.1, "h2o_pct": 10.0}
K2 = {"velocity_ms": 14.0, "temp_c": 48.0, "press_kpa": 100.8, "h2o_pct": 9.5}
BLOCK_H = 6  # each day: 08:00 stopped, 09:00-12:59 operating, 13:00 stopped
STATUS_KEYS = ("measured", "substituted", "stopped")


def topic(stack: str) -> str:
    return f"cems/v1/it/{stack}/readings"


def operating_hour(stack: str, start: int, co2: float, minutes=range(60), flag=lambda m: "N") -> list[tuple]:
    """One message per (run of) minutes: 12 readings a minute; flag(m) flags minute m."""
    values = K1 if stack == "k1" else K2
    msgs, run = [], []
    for m in list(minutes) + [None]:
        if m is not None and (not run or (m == run[-1] + 1 and flag(m) == flag(run[0]))):
            run.append(m)
            continue
        if run:
            ts = [start + mm * 60 + s for mm in run for s in range(0, 60, SAMPLE_S)]
            msgs.append((topic(stack), json.dumps({"ts": ts, **values, "co2_pct": co2, "status": flag(run[0])})))
        run = [m] if m is not None else []
    return msgs


def stopped_hour(stack: str, start: int) -> list[tuple]:
    """The unit stopped all hour: a reading a minute flagged F (a minute with more than half stopped is stopped)."""
    values = K1 if stack == "k1" else K2
    return [(topic(stack), json.dumps({"ts": [start + 60 * m for m in range(60)], **values, "co2_pct": 0.04,
                                       "status": "F"}))]


def day_block(stack: str, day_start: int, day: int) -> list[tuple]:
    """Day `day` (0..2) from `day_start` (08:00 local). Day 1: k1 has no reading at all at 10:00 (a gap inside a run
    of operation: substituted) and k2 only half of 11:00 (too few valid minutes: substituted). Day 0: k2
    calibrates from 10:10 to 10:20 (readings flagged C, so 50 valid minutes: still measured)."""
    msgs = stopped_hour(stack, day_start)
    for h in range(1, 5):
        start = day_start + 3600 * h
        co2 = 12.0 + 0.4 * day + 0.15 * h + (0.5 if stack == "k2" else 0.0)
        if day == 1 and stack == "k1" and h == 2:
            continue
        minutes = range(30) if day == 1 and stack == "k2" and h == 3 else range(60)
        flag = (lambda m: "C" if 10 <= m < 20 else "N") if day == 0 and stack == "k2" and h == 2 else (lambda m: "N")
        msgs += operating_hour(stack, start, co2, minutes, flag)
    return msgs + stopped_hour(stack, day_start + 3600 * 5)


class Plant:
    """The running service with its simulated days and what was submitted."""

    def __init__(self, run: Running, days: list[dt.datetime]):
        self.run = run
        self.days = days
        self.fuel: dict[dt.date, float] = {}
        self.revised: dict = {}

    def get(self, path: str, token: str = REGULATOR, **params):
        return self.run.get(path, token=token, **params)

    def hours(self, stack: str, start: dt.datetime, end: dt.datetime) -> list[dict]:
        code, body = self.get(f"/stacks/it/{stack}/hours", start=start.isoformat(), end=end.isoformat())
        assert code == 200, body
        return body["items"]

    def year_hours(self, year: int, as_of: str) -> dict[str, list[dict]]:
        """Every hour figure of the year up to `as_of`, per stack, as the hourly API serves them."""
        start = dt.datetime(year, 1, 1, tzinfo=TZ)
        end = min(dt.datetime.fromisoformat(as_of), dt.datetime(year + 1, 1, 1, tzinfo=TZ))
        return {s: self.hours(s, start, end) if end > start else [] for s in ("k1", "k2")}


def settled(plant: Plant, stack: str, day_start: dt.datetime) -> list[dict] | None:
    items = plant.hours(stack, day_start, day_start + dt.timedelta(hours=BLOCK_H))
    if len(items) != BLOCK_H or not all(i["final"] for i in items) or any(i["co2_t"] is None for i in items):
        return None
    return items


@pytest.fixture(scope="module")
def plant(backends, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compliance")
    today = dt.datetime.now(TZ).replace(hour=8, minute=0, second=0, microsecond=0)
    days = [today - dt.timedelta(days=k) for k in (3, 2, 1)]
    year = days[-1].year
    plants = (f'[[api.tokens]]\ntoken = "{OPERATOR}"\nrole = "operator"\nplants = ["it"]\nname = "it-operator"\n'
              + STACKS.replace("settle_s = 2\n", f"settle_s = 2\nallowances = {{ {year} = 2.0e4 }}\n", 1))
    name = "cy_" + uuid.uuid4().hex[:10]
    port = ls.free_port()
    cfg = write_config(tmp / "cems.toml", backends, port, tmp / "data", name, f"cems-{name}", plants)
    run = Running(backends, cfg, port, tmp / "data", name, tmp / "service.log")
    run.start()
    try:
        p = Plant(run, days)
        msgs = []
        for d, day_start in enumerate(days):
            for stack in ("k1", "k2"):
                msgs += day_block(stack, int(day_start.timestamp()), d)
        publish(backends.mqtt_port, msgs)
        for day_start in days:
            for stack in ("k1", "k2"):
                run.wait(lambda s=stack, d=day_start: settled(p, s, d), 120, f"final hours of {stack} on {d}")
        gap = settled(p, "k1", days[1])[2]
        assert (gap["status"], gap["method"], gap["valid_minutes"]) == ("substituted", "HBHA", 0), gap

        # A late correction of a final hour: five minutes of k1 on day 0 at 10:00 again, 0.5 % CO2 higher.
        target = days[0] + dt.timedelta(hours=2)
        before = settled(p, "k1", days[0])[2]
        publish(backends.mqtt_port, operating_hour("k1", int(target.timestamp()), 12.0 + 0.15 * 2 + 0.5, range(5)))
        after = run.wait(lambda: [i for i in (settled(p, "k1", days[0]) or [])[2:3] if i["revision"] == 1], 120,
                         "the corrected hour revised")[0]
        p.revised = {"hour": target.isoformat(), "old": before["co2_t"], "new": after["co2_t"]}

        for d, day_start in enumerate(days):
            body = {"date": day_start.date().isoformat(), "fuel_t": 880.0 + 25 * d, "carbon_frac": 0.61,
                    "oxidation": 0.98}
            code, _, raw = request(run, "POST", "/fuel/it", OPERATOR, body)
            assert code == 201, raw
            p.fuel[day_start.date()] = json.loads(raw)["calculated_t"]
        for allowances, note in ((2.5e4, "free allocation"), (3.0e4, "free allocation + 5 kt bought")):
            code, _, raw = request(run, "POST", "/allowances/it", OPERATOR,
                                   {"year": year, "allowances_t": allowances, "note": note})
            assert code == 201, raw
        yield p
    finally:
        run.stop()


def expected(plant: Plant, year: int, as_of: str) -> dict:
    """The year's figures added up here from `/hours` (DESIGN §4: stopped hours carry 0 t, missing ones none)."""
    items = [i for hs in plant.year_hours(year, as_of).values() for i in hs]
    return {"emissions_t": sum(i["co2_t"] for i in items if i["co2_t"] is not None),
            "substituted_t": sum(i["co2_t"] for i in items if i["status"] == "substituted" and i["co2_t"] is not None),
            **{k: sum(i["status"] == k for i in items) for k in STATUS_KEYS}}


def test_compliance_equals_the_hourly_sums(plant):
    year = plant.days[-1].year
    code, body = plant.get("/plants/it/compliance", token=OPERATOR, year=year)
    assert code == 200, body
    want = expected(plant, year, body["as_of"])
    if plant.days[0].year == year:  # all three days in the year (not run on 1-3 January)
        assert want["substituted"] == 2 and want["measured"] == 2 * 12 - 2  # the gap and the half hour
    assert close(body["emissions_t"], want["emissions_t"]) and close(body["substituted_t"], want["substituted_t"])
    assert body["emissions_t"] > 3000  # about 270 t/h per stack over 24 operating stack-hours
    as_of = dt.datetime.fromisoformat(body["as_of"])
    now = dt.datetime.now(TZ)
    assert now - dt.timedelta(hours=1, minutes=1) < as_of <= now and as_of.minute == as_of.second == 0
    start = dt.datetime(year, 1, 1, tzinfo=TZ)
    elapsed = int((as_of - start).total_seconds()) // 3600
    year_h = int((dt.datetime(year + 1, 1, 1, tzinfo=TZ) - start).total_seconds()) // 3600
    assert (body["elapsed_hours"], body["year_hours"]) == (elapsed, year_h)
    have = sum(want[k] for k in STATUS_KEYS)
    assert body["hours"] == {**{k: want[k] for k in STATUS_KEYS}, "missing": 2 * elapsed - have}
    assert close(body["substituted_share"], want["substituted_t"] / want["emissions_t"])
    assert (body["allowances_t"], body["allowances_source"], body["allowances_note"]) == (
        3.0e4, "api", "free allocation + 5 kt bought")
    assert close(body["surplus_t"], 3.0e4 - want["emissions_t"])
    assert body["projection_method"] == "run_rate"
    assert close(body["projection_t"], want["emissions_t"] / elapsed * year_h)
    assert body["projections"][1]["method"] == "previous_year" and body["projections"][1]["projection_t"] is None
    fuel = sum(c for d, c in plant.fuel.items() if d.year == year)
    assert close(body["calculated_t"], fuel) and body["calculation"]["days"] == len(
        [d for d in plant.fuel if d.year == year])
    assert body["final"] is False

    # The allowances: the latest submission counts, the earlier one is in the audit log, the config's is overridden.
    [audit] = plant.run.influx_query("SELECT * FROM audit WHERE kind = 'allowance'")
    assert json.loads(audit["old"])["allowances_t"] == 2.5e4 and json.loads(audit["new"])["allowances_t"] == 3.0e4
    assert audit["plant"] == "it" and "resubmitted by it-operator" in audit["cause"]
    rows = plant.run.influx_query("SELECT * FROM allowance WHERE plant = 'it'")
    assert len(rows) == 1 and rows[0]["allowances_t"] == 3.0e4 and rows[0]["year"] == year
    assert request(plant.run, "POST", "/allowances/it", REGULATOR, {"year": year, "allowances_t": 1.0})[0] == 403


def annual_json(plant: Plant, year: int) -> dict:
    code, rep = plant.get("/reports/annual", plant="it", year=year)
    assert code == 200, rep
    return rep


def month_of(item: dict) -> str:
    return item["start"][:7]  # the local month: starts are ISO in the plant's zone


def test_annual_report_json_equals_the_hourly_sums(plant):
    year = plant.days[-1].year
    rep = annual_json(plant, year)
    hours = plant.year_hours(year, rep["as_of"])
    want = expected(plant, year, rep["as_of"])
    assert (rep["plant"], rep["year"], rep["regime"]) == ("it", year, "china")
    assert close(rep["total_t"], want["emissions_t"]) and rep["complete"] is False
    for s in rep["stacks"]:
        items = hours[s["stack"]]
        assert close(s["total_t"], sum(i["co2_t"] for i in items if i["co2_t"] is not None))
        assert [m["month"] for m in s["months"]] == [f"{year}-{m:02d}" for m in range(1, len(s["months"]) + 1)]
        for m in s["months"]:
            mine = [i for i in items if month_of(i) == m["month"]]
            assert close(m["co2_t"], sum(i["co2_t"] for i in mine if i["co2_t"] is not None)), m
            assert [m[f"{k}_hours"] for k in STATUS_KEYS] == [sum(i["status"] == k for i in mine) for k in STATUS_KEYS]
            methods = {}
            for i in mine:
                if i["status"] == "substituted":
                    methods[i["method"]] = methods.get(i["method"], 0) + 1
            assert m["methods"] == methods
            calc = [c for d, c in plant.fuel.items() if f"{d:%Y-%m}" == m["month"]]
            assert (m["calculated_t"] is None) == (not calc) and (not calc or close(m["calculated_t"], sum(calc)))
    for m in rep["months"]:
        assert close(m["co2_t"], sum(s["months"][int(m["month"][5:]) - 1]["co2_t"] for s in rep["stacks"]))

    # The late correction, with its cause and the masses before and after.
    revs = [r for r in rep["revisions"] if r["stack"] == "k1" and r["hour"] == plant.revised["hour"]]
    if plant.days[0].year == year:
        [r] = revs
        assert r["revision"] == 1 and r["cause"] == "late or corrected data"
        assert close(r["old_co2_t"], plant.revised["old"]) and close(r["new_co2_t"], plant.revised["new"])
        [cal] = [c for c in rep["calibrations"] if c["stack"] == "k2"]
        start = plant.days[0] + dt.timedelta(hours=2, minutes=10)
        assert (cal["start"], cal["end"]) == (start.isoformat(), (start + dt.timedelta(minutes=10)).isoformat())
        assert (cal["minutes"], cal["readings"]) == (10, 10 * 60 // SAMPLE_S)
    assert [(c["stack"], c["regime"], c["t0_k"], c["p0_kpa"]) for c in rep["constants"]] == [
        ("k1", "china", 273.0, 101.325), ("k2", "china", 273.0, 101.325)]
    assert sum(c["hours"] for c in rep["constants"]) == sum(len(h) for h in hours.values())


def test_annual_report_csv_and_pdf_totals_equal_the_hourly_sums(plant, tmp_path):
    year = plant.days[-1].year
    rep = annual_json(plant, year)
    want = expected(plant, year, rep["as_of"])["emissions_t"]

    code, headers, raw = request(plant.run, "GET", "/reports/annual", REGULATOR, plant="it", year=year, format="csv")
    assert code == 200 and headers["Content-Type"].startswith("text/csv")
    assert headers["Content-Disposition"] == f'attachment; filename="annual-it-{year}.csv"'
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    assert [(r["stack"], r["month"]) for r in rows] == [(s["stack"], m["month"]) for s in rep["stacks"]
                                                        for m in s["months"]]
    assert abs(sum(float(r["co2_t"]) for r in rows) - want) <= len(rows) * 5e-4

    code, headers, pdf = request(plant.run, "GET", "/reports/annual", OPERATOR, plant="it", year=year, format="pdf")
    assert code == 200 and headers["Content-Type"] == "application/pdf" and pdf.startswith(b"%PDF-")
    pages = pdf_pages(pdf, tmp_path / "pages", dpi=80)
    assert len(pages) >= 2 and all(p.stat().st_size > 5000 for p in pages)
    text = pdf_text(pdf, tmp_path)
    total = re.search(r"Total CO2 \(CEMS\), t\s+([\d,.]+)", text)
    assert total and abs(number(total.group(1)) - want) <= 5e-4, (total, want)
    table = section(text, "The chart's figures", "Hours by status and method")
    year_row = [ln.split() for ln in table.splitlines() if ln.strip().startswith("Year")][0]
    for k, s in enumerate(rep["stacks"]):
        assert abs(number(year_row[1 + k]) - s["total_t"]) <= 5e-4
    assert abs(number(year_row[3]) - want) <= 5e-4
    hours = plant.year_hours(year, rep["as_of"])
    for m in rep["months"]:
        lines = [ln.split() for ln in table.splitlines() if ln.strip().startswith(m["month"])]
        assert len(lines) == 1, (m["month"], table)
        for k, stack in enumerate(("k1", "k2")):
            mine = sum(i["co2_t"] for i in hours[stack] if month_of(i) == m["month"] and i["co2_t"] is not None)
            assert abs(number(lines[0][1 + k]) - mine) <= 5e-4, (m["month"], stack, lines[0], mine)
    if plant.days[0].year == year:
        assert "late or corrected data" in text


COMPLIANCE_CARD = """(() => [...document.querySelectorAll(".compliance")].map((c) => ({
  plant: c.dataset.plant, value: c.dataset.value,
  bar: c.querySelector('svg[data-field="compliance_bar"]')?.getAttribute("aria-label") ?? null,
  marks: c.querySelectorAll("svg .mark-allowances, svg .mark-projection").length,
  fields: Object.fromEntries([...c.querySelectorAll("[data-field]")].filter((e) => !e.closest("svg"))
                               .map((e) => [e.dataset.field, e.textContent]))})))()"""


def card_problems(card: dict, api: dict) -> list[str]:
    want = {"year": str(api["year"]), "emissions_t": shown(api["emissions_t"], 0),
            "allowances_t": shown(api["allowances_t"], 0), "surplus_t": shown(abs(api["surplus_t"]), 0),
            "surplus_label": "Deficit" if api["surplus_t"] < 0 else "Surplus",
            "projection_t": shown(api["projection_t"], 0), "calculated_t": shown(api["calculated_t"], 0),
            "substituted_share": shown(100 * api["substituted_share"], 1) + " %"}
    return [f"{k}: shown {card['fields'].get(k)!r}, API {v!r}" for k, v in want.items() if card["fields"].get(k) != v]


def test_dashboard_card_shows_the_apis_figures_and_moves(plant, tmp_path):
    run = plant.run
    with Chromium(tmp_path / "chromium") as browser:
        browser.navigate(f"http://127.0.0.1:{run.api_port}/#token={OPERATOR}")

        def agrees():
            cards = browser.evaluate(COMPLIANCE_CARD)
            api = plant.get("/plants/it/compliance", token=OPERATOR)[1]
            if len(cards) != 1:
                return cards, [f"{len(cards)} compliance cards"]
            return (cards[0], api), card_problems(cards[0], api)

        (card, api), problems = wait_agreeing(browser, agrees, 45)
        assert not problems, problems
        assert card["value"] == ("deficit" if api["surplus_t"] < 0 else "surplus") and card["marks"] == 2
        assert f"Emitted {shown(api['emissions_t'], 0)} t of 30,000 t allowances" in card["bar"]
        assert "measured" in card["fields"]["hours"] and "missing" in card["fields"]["hours"]
        save_screenshot(browser, tmp_path, "dashboard-compliance.png")

        # Two more recent hours (stopped, then running): the year to date grows, and the card with it.
        hour = dt.datetime.now(TZ).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=2)
        publish(run.backends.mqtt_port, stopped_hour("k1", int(hour.timestamp()))
                + operating_hour("k1", int(hour.timestamp()) + 3600, 13.0))
        run.wait(lambda: plant.get("/plants/it/compliance")[1]["emissions_t"] > api["emissions_t"] + 100, 120,
                 "the new hour in the year to date")
        (card2, api2), problems = wait_agreeing(browser, agrees, 45)
        assert not problems, problems
        assert card2["fields"]["emissions_t"] != card["fields"]["emissions_t"]
        assert browser.exceptions() == []
