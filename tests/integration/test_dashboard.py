"""The operators' dashboard (issue 5) in a real headless Chromium: what an operator would read on the screen.

Two tests. The first loads the dashboard of a real `cems serve` with readings flowing through mosquitto and
checks every figure on the cards against the API, rounded the dashboard's way, and each hour bar against
/hours. The second serves the same static files beside a scripted API, to drive what the real service
may not offer yet or only rarely: the pushed live stream (split chunks, keepalives, a dropped stream, a
404 and the way back), a plant off a whole-hour UTC offset, and the CEMS-vs-calculation panel with a
flagged day. Screenshots go to the test's tmp_path and, when CEMS_SCREENSHOTS names a directory, there too.
"""

import datetime as dt
import json
import os
import queue
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cems import localservices as ls
from tests.integration.browser import Chromium
from tests.integration.conftest import TOKENS, Running, publish, write_config

pytestmark = pytest.mark.integration
STATIC = Path(__file__).resolve().parents[2] / "api" / "static"
DIGITS = {"rate_t_h": 1, "hour_to_date_t": 2, "day_to_date_t": 1, "month_to_date_t": 0, "year_to_date_t": 0}
K1 = {"flow_m3h": 1.3e6, "co2_pct": 12.5, "temp_c": 50.0, "press_kpa": 101.1, "h2o_pct": 10.0, "o2_pct": 6.0}
TZ = dt.timezone(dt.timedelta(hours=8))  # the integration plant's Asia/Shanghai
K2 = {"velocity_ms": 14.0, "co2_pct": 13.0, "temp_c": 48.0, "press_kpa": 100.8, "h2o_pct": 9.5}

# Everything a test reads off the page, in one round trip.
SNAPSHOT = """(() => ({
  connection: document.getElementById("connection").dataset.value,
  chart_note: document.getElementById("chart-note").textContent,
  cards: [...document.querySelectorAll(".card")].map((c) => ({
    stack: c.dataset.stack,
    status: c.querySelector('[data-field="status"]').dataset.value,
    fields: Object.fromEntries([...c.querySelectorAll("[data-field]")].filter((e) => !e.closest("svg"))
                                 .map((e) => [e.dataset.field, e.textContent])),
    hours: [...c.querySelectorAll('svg[data-field="hours_chart"] g.hour')].map((g) => ({
      start: g.dataset.start, status: g.dataset.status, co2_t: g.dataset.co2T ?? null,
      final: g.dataset.final ?? null})),
  })),
  plants: Object.fromEntries([...document.querySelectorAll(".plant")].map((p) => {
    const box = p.querySelector('[data-field="comparison"]');
    return [p.dataset.plant, {value: box.dataset.value, text: box.textContent,
      flagged_bars: box.querySelectorAll("g.day.flagged").length,
      rows: [...box.querySelectorAll("tbody tr")].map((r) => ({
        date: r.dataset.date, flagged: r.classList.contains("flagged"), flag_text: r.querySelector(".flag").textContent,
        cems_t: r.querySelector('[data-field="cems_t"]').textContent,
        calculated_t: r.querySelector('[data-field="calculated_t"]').textContent,
        deviation_pct: r.querySelector('[data-field="deviation_pct"]').textContent}))}];
  })),
}))()"""


def shown(v: float | None, digits: int) -> str:
    """A number as the dashboard shows it: en-US grouping, halves away from zero. Like Intl.NumberFormat (ICU),
    round the shortest decimal that reads back as the same float (Python's repr), not its exact binary value."""
    if v is None:
        return "–"
    q = Decimal(repr(v)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    return f"{q:,.{digits}f}"


def epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def age_s(text: str) -> float:
    """Seconds from the card's "3 min 4 s ago"."""
    units = {"d": 86400, "h": 3600, "min": 60, "s": 1}
    words = text.removesuffix(" ago").split()
    return sum(int(n) * units[u] for n, u in zip(words[::2], words[1::2], strict=True))


def card_mismatches(card: dict, live: dict) -> list[str]:
    out = [f"{f}: shown {card['fields'][f]!r}, API {live[f]!r} -> {shown(live[f], d)!r}"
           for f, d in DIGITS.items() if card["fields"][f] != shown(live[f], d)]
    if card["status"] != live["status"]:
        out.append(f"status: shown {card['status']!r}, API {live['status']!r}")
    return out


def hour_mismatches(card: dict, api_items: list[dict], now: float) -> list[str]:
    """The chart's 24 slots against /hours: every stored hour with its status and mass, the rest missing."""
    slots = card["hours"]
    if len(slots) != 24:
        return [f"{len(slots)} hour slots, not 24"]
    starts = [epoch(s["start"]) for s in slots]
    out = []
    hourly = all(b - a == 3600 for a, b in zip(starts, starts[1:], strict=False))
    if not hourly or not starts[-1] <= now < starts[-1] + 3600:
        out.append(f"slots are not the 24 clock hours up to now: {[s['start'] for s in slots]}")
    by_start = {epoch(i["start"]): i for i in api_items}
    for slot, t in zip(slots, starts, strict=True):
        item = by_start.get(t)
        if item is None:
            want = "in_progress" if t == starts[-1] else "missing"
            if slot["status"] != want:
                out.append(f"{slot['start']}: shown {slot['status']}, API has no hour ({want})")
        elif (slot["status"], slot["co2_t"] and float(slot["co2_t"]), slot["final"]) != (
                item["status"], item["co2_t"], str(item["final"]).lower()):
            out.append(f"{slot['start']}: shown {slot}, API {item}")
    return out


def save_screenshot(browser: Chromium, tmp_path: Path, name: str) -> Path:
    path = browser.screenshot(tmp_path / name)
    if os.environ.get("CEMS_SCREENSHOTS"):
        target = Path(os.environ["CEMS_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / name)
    return path


def check_narrow_screen(browser: Chromium, tmp_path: Path, name: str) -> None:
    browser.viewport(390, 844)
    try:
        browser.wait_for("document.documentElement.scrollWidth <= window.innerWidth", 5,
                         "the dashboard to fit a 390 px wide screen without scrolling sideways")
        save_screenshot(browser, tmp_path, name)
    finally:
        browser.viewport(1280, 800)


def http_status(url: str, token: str) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


# ---- against the real service ---------------------------------------------------------------------------

def minutes(stack: str, start: int, n: int, values: dict, status=lambda m: "N") -> list[tuple[str, str]]:
    """n minutes of 1 Hz readings from `start`, one message per minute; status(m) flags minute m."""
    return [(f"cems/v1/it/{stack}/readings",
             json.dumps({"ts": [start + m * 60 + s for s in range(60)], **values, "status": status(m),
                         "gw": f"gw-{stack}", "seq": start // 60 + m}))
            for m in range(n)]


def past_hours(stack: str, base: int, values: dict) -> list[tuple[str, str]]:
    """Four hours from `base`: measured; unit stopped throughout; measured; the last 16 minutes faulty
    (44 valid of 60 operating minutes, so substituted)."""
    return (minutes(stack, base, 60, values) + minutes(stack, base + 3600, 60, values, lambda m: "F")
            + minutes(stack, base + 7200, 60, values)
            + minutes(stack, base + 10800, 60, values, lambda m: "D" if m >= 44 else "N"))


OPERATOR = "it-dashboard-operator-token"  # an operator of plant `it`: who has this screen open


@pytest.fixture
def operated_service(backends, tmp_path):
    """A `cems serve` like conftest's `service`, with an operator token for plant `it` (to submit fuel)."""
    name = "dash_" + uuid.uuid4().hex[:10]
    port = ls.free_port()
    cfg = write_config(tmp_path / "cems.toml", backends, port, tmp_path / "data", name, f"cems-{name}")
    with open(cfg, "a") as f:
        f.write(f'\n[[api.tokens]]\ntoken = "{OPERATOR}"\nrole = "operator"\nplants = ["it"]\n')
    run = Running(backends, cfg, port, tmp_path / "data", name, tmp_path / "service.log")
    run.start()
    yield run
    run.stop()


def post(service: Running, path: str, body: dict, token: str) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{service.api_port}/api/v1{path}", json.dumps(body).encode(),
                                 {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def comparison_mismatches(panel: dict, items: list[dict]) -> list[str]:
    """The plant panel against /comparison: a row per day with fuel data, its figures and flag."""
    with_fuel = [i for i in items if i["calculated_t"] is not None]
    if not with_fuel:
        return [] if panel["value"] == "no_fuel_data" else [f"panel {panel['value']!r} without fuel data"]
    rows = {r["date"]: r for r in panel["rows"]}
    out = [] if panel["flagged_bars"] == sum(i["flagged"] for i in items) else [f"flagged bars {panel}"]
    for i in items:
        row = rows.get(i["date"])
        want = (shown(i["cems_t"], 1), shown(i["calculated_t"], 1),
                "–" if i["deviation_pct"] is None else ("+" if i["deviation_pct"] > 0 else "") +
                shown(i["deviation_pct"], 1) + " %", i["flagged"])
        got = row and (row["cems_t"], row["calculated_t"], row["deviation_pct"], row["flagged"])
        if got != want or (i["flagged"] and "flagged" not in row["flag_text"]):
            out.append(f"{i['date']}: shown {row}, API {i} -> {want}")
    return out


def test_dashboard_shows_the_api_figures(operated_service, tmp_path):
    service = operated_service
    now = time.time()
    minute = int(now) // 60 * 60
    base = int(now) // 3600 * 3600 - 6 * 3600
    msgs = []
    for stack, values in (("k1", K1), ("k2", K2)):
        msgs += past_hours(stack, base, values) + minutes(stack, minute - 8 * 60, 6, values)
    publish(service.backends.mqtt_port, msgs)
    want_past = ["measured", "stopped", "measured", "substituted"]
    q = {"start": dt.datetime.fromtimestamp(base, dt.UTC).isoformat(),
         "end": dt.datetime.fromtimestamp(base + 4 * 3600, dt.UTC).isoformat()}
    for stack in ("k1", "k2"):
        service.wait(lambda s=stack: [i["status"] for i in service.get(f"/stacks/it/{s}/hours", **q)[1]["items"]]
                     == want_past, 120, f"the four past hours of {stack}")
        service.wait(lambda s=stack: (service.get(f"/stacks/it/{s}/live")[1] or {}).get("last_reading_at")
                     and epoch(service.get(f"/stacks/it/{s}/live")[1]["last_reading_at"]) == minute - 2 * 60 - 1,
                     60, f"the live figures of {stack}")
    stream = http_status(f"http://127.0.0.1:{service.api_port}/api/v1/live/stream", TOKENS["regulator"])
    # Fuel for the day of the past hours, far below what was measured: a flagged day.
    fuel_day = dt.datetime.fromtimestamp(base, TZ).date()
    code, body = post(service, "/fuel/it", {"date": fuel_day.isoformat(), "fuel_t": 100.0, "carbon_frac": 0.6,
                                           "oxidation": 0.98}, OPERATOR)
    assert code in (201, 404), (code, body)  # 404 while the fuel endpoint is not there
    week = {"start": (dt.datetime.fromtimestamp(now, TZ).date() - dt.timedelta(days=6)).isoformat(),
            "end": (dt.datetime.fromtimestamp(now, TZ).date() + dt.timedelta(days=1)).isoformat()}

    with Chromium(tmp_path / "chromium") as browser:
        browser.navigate(f"http://127.0.0.1:{service.api_port}/#token={OPERATOR}")

        def agrees():
            page = browser.evaluate(SNAPSHOT)
            problems = []
            if sorted(c["stack"] for c in page["cards"]) != ["it/k1", "it/k2"]:
                return page, [f"cards {[c['stack'] for c in page['cards']]}"]
            for card in page["cards"]:
                plant, stack = card["stack"].split("/")
                live = service.get(f"/stacks/{plant}/{stack}/live")[1]
                problems += [f"{card['stack']} {p}" for p in card_mismatches(card, live)]
                text = card["fields"]["last_reading_age"]  # to the second below an hour, then to the minute
                if abs(age_s(text) - (time.time() - epoch(live["last_reading_at"]))) > (3 if " h " not in text else 61):
                    problems.append(f"{card['stack']} age {card['fields']['last_reading_age']!r} vs "
                                    f"{live['last_reading_at']}")
                slots = card["hours"]
                if len(slots) == 24:
                    hours = service.get(f"/stacks/{plant}/{stack}/hours", start=slots[0]["start"],
                                        end=dt.datetime.fromtimestamp(epoch(slots[-1]["start"]) + 3600,
                                                                      dt.UTC).isoformat())[1]["items"]
                    problems += [f"{card['stack']} {p}" for p in hour_mismatches(card, hours, time.time())]
                else:
                    problems.append(f"{card['stack']}: {len(slots)} hour slots")
            code, body = service.get("/plants/it/comparison", **week)
            problems += comparison_mismatches(page["plants"]["it"], body["items"] if code == 200 else [])
            return page, problems

        page, problems = wait_agreeing(browser, agrees, 45)
        assert not problems, problems
        assert page["chart_note"] == ""
        for card in page["cards"]:
            counts = {s: sum(h["status"] == s for h in card["hours"]) for s in want_past + ["missing"]}
            assert counts["measured"] >= 2 and counts["stopped"] >= 1 and counts["substituted"] >= 1, counts
            assert counts["missing"] >= 1, counts
            assert "stopped" in card["fields"]["hours_summary"] and "missing" in card["fields"]["hours_summary"]
        # The stream is being built beside this: with it the cards are pushed, without it they are polled.
        assert page["connection"] == ("push" if stream == 200 else "poll"), (stream, page["connection"])
        if code == 201:
            assert [r["flagged"] for r in page["plants"]["it"]["rows"]] == [True], page["plants"]
        else:
            assert "no fuel data" in page["plants"]["it"]["text"].lower(), page["plants"]

        # New minutes with more CO2 reach the same card, in place.
        browser.evaluate('window.__k1 = document.querySelector(\'.card[data-stack="it/k1"]\'); true')
        before = service.get("/stacks/it/k1/live")[1]
        publish(service.backends.mqtt_port, minutes("k1", minute - 2 * 60, 2, {**K1, "co2_pct": 13.5}))
        service.wait(lambda: service.get("/stacks/it/k1/live")[1]["rate_t_h"] != before["rate_t_h"], 60,
                     "a new live rate")
        page, problems = wait_agreeing(browser, agrees, 30)
        assert not problems, problems
        k1 = next(c for c in page["cards"] if c["stack"] == "it/k1")
        assert k1["fields"]["rate_t_h"] != shown(before["rate_t_h"], 1)
        assert browser.evaluate('window.__k1 === document.querySelector(\'.card[data-stack="it/k1"]\')')
        assert browser.exceptions() == []
        shot = save_screenshot(browser, tmp_path, "dashboard.png")
        assert shot.stat().st_size > 10_000
        check_narrow_screen(browser, tmp_path, "dashboard-narrow.png")


def wait_agreeing(browser: Chromium, agrees, timeout: float):
    """Poll until the page and the API agree; the last (page, problems) either way, so the test can fail.

    The charts refresh every minute; to wait less, this runs the page's own refresh every few seconds."""
    end = time.monotonic() + timeout
    refreshed = time.monotonic()
    while True:
        page, problems = agrees()
        if not problems or time.monotonic() > end:
            return page, problems
        if time.monotonic() - refreshed > 3:
            browser.evaluate("refreshCharts().then(() => true)", await_promise=True)
            refreshed = time.monotonic()
        time.sleep(0.5)


# ---- against a scripted API: the push stream, its fallback and the comparison panel ---------------------

TOKEN = "fake-dashboard-token"
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))  # not a whole hour off UTC: bars must align locally


class FakeAPI:
    """The endpoints the dashboard reads, as scripted answers, beside the real static files."""

    def __init__(self):
        self.now = dt.datetime.now(IST)
        self.current_hour = self.now.replace(minute=0, second=0, microsecond=0)
        self.live = {s: self.live_body(s, rate) for s, rate in (("a", 1234.5678), ("b", 250.0))}
        self.live["c"] = self.live_body("c", None, plant="q", status="no_data")
        self.polls = 0
        self.stream_on = True
        self.streams = 0
        self.chunks: queue.Queue = queue.Queue()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def live_body(self, stack: str, rate: float | None, plant: str = "p", status: str = "valid", **kw) -> dict:
        at = self.now - dt.timedelta(seconds=20)
        return {"plant": plant, "stack": stack, "at": at.isoformat(), "rate_t_h": rate,
                "hour_to_date_t": 123.455, "day_to_date_t": 4567.25, "month_to_date_t": 98765.5,
                "year_to_date_t": 1234567.5, "status": status,
                "last_reading_at": None if status == "no_data" else at.isoformat(), **kw}

    def hour_items(self) -> list[dict]:
        """Hours -23..-1 before the current one: 3 stopped, 1 substituted, 2 absent (missing), measured else."""
        items = []
        for k in range(23, 0, -1):
            start = self.current_hour - dt.timedelta(hours=k)
            if k in (5, 6):
                continue
            status = {10: "stopped", 11: "stopped", 12: "stopped", 2: "substituted"}.get(k, "measured")
            items.append({"start": start.isoformat(), "co2_t": 0.0 if status == "stopped" else 250.0 + k,
                          "status": status, "final": k > 4, "valid_minutes": 60, "operating_minutes": 60,
                          "revision": 0, "method": None})
        return items

    def comparison(self) -> list[dict]:
        today = self.now.date()
        return [{"date": (today - dt.timedelta(days=k)).isoformat(), "cems_t": 6000.0 + 10 * k,
                 "calculated_t": 5900.0 if k != 3 else 5000.0, "deviation_pct": 1.7 if k != 3 else 20.25,
                 "flagged": k == 3, "final": k > 1}
                for k in range(6, -1, -1)]

    def handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the stream ends when the connection closes

            def log_message(self, *args):
                pass

            def send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                path = urllib.parse.urlsplit(self.path).path
                if path == "/" or path.startswith("/static/"):
                    f = STATIC / ("index.html" if path == "/" else path.removeprefix("/static/"))
                    ctype = {".js": "text/javascript", ".css": "text/css"}.get(f.suffix, "text/html")
                    return self.send(200, f.read_bytes(), ctype) if f.is_file() else self.send(404, b"{}")
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self.send(401, b'{"detail": "token"}')
                parts = path.removeprefix("/api/v1/").split("/")
                if parts == ["stacks"]:
                    items = [{"plant": b["plant"], "stack": s, "name": f"Unit {s.upper()}",
                              "last_reading_at": b["last_reading_at"], "rate_t_h": b["rate_t_h"]}
                             for s, b in api.live.items()]
                    return self.send(200, json.dumps({"items": items}).encode())
                if len(parts) == 4 and parts[0] == "stacks" and parts[3] == "live":
                    api.polls += 1
                    return self.send(200, json.dumps(api.live[parts[2]]).encode())
                if len(parts) == 4 and parts[0] == "stacks" and parts[3] == "hours":
                    return self.send(200, json.dumps({"items": api.hour_items() if parts[1] == "p" else []}).encode())
                if parts == ["plants", "p", "comparison"]:
                    return self.send(200, json.dumps({"items": api.comparison()}).encode())
                if parts == ["live", "stream"] and api.stream_on:
                    return self.stream()
                return self.send(404, b'{"detail": "Not Found"}')

            def stream(self):
                api.streams += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                self.wfile.flush()
                while True:
                    try:
                        chunk = api.chunks.get(timeout=0.5)
                    except queue.Empty:
                        continue
                    if chunk is None:
                        return
                    self.wfile.write(chunk.encode())
                    self.wfile.flush()

        return Handler

    def push(self, body: dict, split_at: int = 9, crlf: bool = False) -> None:
        """One `live` event, sent in two chunks cut mid-line, after a keepalive comment."""
        nl = "\r\n" if crlf else "\n"
        text = f": keepalive{nl}{nl}event: live{nl}data: {json.dumps(body)}{nl}{nl}"
        cut = text.index("data:") + split_at
        self.chunks.put(text[:cut])
        time.sleep(0.05)
        self.chunks.put(text[cut:])

    def close(self) -> None:
        self.chunks.put(None)
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_api():
    api = FakeAPI()
    yield api
    api.close()


def card(page: dict, key: str) -> dict:
    return next(c for c in page["cards"] if c["stack"] == key)


def test_pushed_updates_fallback_and_comparison(fake_api, tmp_path):
    api = fake_api
    with Chromium(tmp_path / "chromium") as browser:
        browser.navigate(f"{api.url}/#token={TOKEN}")
        browser.wait_for('document.getElementById("connection").dataset.value === "push"', 15, "the live stream")
        page = browser.wait_for(f"(() => {{ const p = {SNAPSHOT}; return p.cards.length === 3 && "
                                "p.cards.every((c) => c.hours.length === 24) && p.plants.p.value === 'ok' && p; })()",
                                15, "three filled cards and the comparison")
        assert browser.evaluate("location.hash") == ""  # the token left the address bar
        assert page["chart_note"] == ""
        a = card(page, "p/a")
        # 123.455 is 123.45499... in binary but shows as 123.46 (ICU rounds the shortest decimal); halves go up.
        want = {"status": "valid", "rate_t_h": "1,234.6", "hour_to_date_t": "123.46", "day_to_date_t": "4,567.3",
                "month_to_date_t": "98,766", "year_to_date_t": "1,234,568"}
        assert {k: a["fields"][k] for k in want} == want
        assert all(shown(api.live["a"][f], d) == want[f] for f, d in DIGITS.items())
        assert 18 <= age_s(a["fields"]["last_reading_age"]) <= 30
        assert card(page, "q/c")["fields"]["rate_t_h"] == "–" and card(page, "q/c")["status"] == "no_data"
        assert card(page, "q/c")["fields"]["status"] == "no data"  # the word, not only a colour
        assert hour_mismatches(a, api.hour_items(), time.time()) == []
        assert {epoch(h["start"]) % 3600 for h in a["hours"]} == {1800}  # local whole hours at UTC+05:30
        assert a["fields"]["hours_summary"] == "17 measured · 1 substituted · 3 stopped · 2 missing"
        plant = page["plants"]["p"]
        assert len(plant["rows"]) == 7 and plant["flagged_bars"] == 1
        flagged = [r for r in plant["rows"] if r["flagged"]]
        assert [(r["cems_t"], r["calculated_t"], r["deviation_pct"]) for r in flagged] == [("6,030.0", "5,000.0",
                                                                                               "+20.3 %")]
        assert "flagged" in flagged[0]["flag_text"]
        assert page["plants"]["q"]["value"] == "no_fuel_data" and "No fuel data" in page["plants"]["q"]["text"]

        # A pushed event updates its card in place, with no polling while the stream is up.
        browser.evaluate('window.__a = document.querySelector(\'.card[data-stack="p/a"]\'); true')
        polls = api.polls
        api.push(api.live_body("a", 987.65, status="invalid"))
        browser.wait_for('document.querySelector(\'.card[data-stack="p/a"] [data-field="rate_t_h"]\')'
                         '.textContent === "987.7"', 10, "the pushed rate")
        api.push(api.live_body("b", 3210.0, status="stale"), split_at=30, crlf=True)
        page = browser.wait_for(f"(() => {{ const p = {SNAPSHOT}; return p.cards.find((c) => c.stack === 'p/b')"
                                ".fields.rate_t_h === '3,210.0' && p; })()", 10, "the second pushed event (CRLF)")
        assert card(page, "p/a")["status"] == "invalid" and card(page, "p/b")["fields"]["status"] == "stale"
        assert browser.evaluate('window.__a === document.querySelector(\'.card[data-stack="p/a"]\')')
        assert api.polls == polls
        age_js = 'document.querySelector(\'[data-stack="p/a"] [data-field="last_reading_age"]\').textContent'
        first = browser.evaluate(age_js)
        browser.wait_for(f"{age_js} !== {json.dumps(first)}", 3, "the age to count up by itself")
        save_screenshot(browser, tmp_path, "dashboard-scripted.png")

        # The stream drops and is gone (404): polling takes over, then the stream comes back.
        api.stream_on = False
        api.live["b"] = api.live_body("b", 42.0)
        api.chunks.put(None)
        browser.wait_for('document.getElementById("connection").dataset.value === "poll"', 10, "polling")
        browser.wait_for('document.querySelector(\'.card[data-stack="p/b"] [data-field="rate_t_h"]\')'
                         '.textContent === "42.0"', 12, "a polled rate")
        streams = api.streams
        api.stream_on = True
        browser.wait_for('document.getElementById("connection").dataset.value === "push"', 20, "the stream again")
        assert api.streams == streams + 1
        check_narrow_screen(browser, tmp_path, "dashboard-scripted-narrow.png")
        assert browser.exceptions() == []
