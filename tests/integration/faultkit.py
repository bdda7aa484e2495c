"""Helpers for the fault-injection tests (`test_faults.py`): private brokers and databases that can be stopped
and started again on the same port and data, a known multi-hour stream, and ways to compare two runs' figures.
"""

import datetime as dt
import json
import math
import threading
import time
import uuid
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from cems import localservices as ls
from tests.integration.conftest import Backends, Running, publish

TZ = dt.timezone(dt.timedelta(hours=8))  # the plant `it` is in Asia/Shanghai
STACK_IDS = ("k1", "k2")
HOURS = 3
READINGS_PER_MESSAGE = 60

# Where each stack's stream departs from plain valid readings: hour -> [(first minute, last minute + 1, flag)].
# k1: calibration in hour 0 (50 valid minutes); an analyser fault in hour 1 (40 valid of 60: substituted, HBHA
# from hours 0 and 2); the unit stopped for the first 15 minutes of hour 2 (45 valid of 45 operating).
# k2: a start-up (stopped) in hour 0, calibration in hour 1 (48 valid), hour 2 plain; no substitution, so a
# correction of k2's hour 1 changes that hour alone.
FLAGS = {
    "k1": {0: [(10, 20, "C")], 1: [(20, 40, "D")], 2: [(0, 15, "F")]},
    "k2": {0: [(0, 15, "F")], 1: [(30, 42, "C")], 2: []},
}
# What a clean run must show (the baseline is checked against this before anything is compared with it).
EXPECTED = {
    "k1": {"status": ["measured", "substituted", "measured"], "valid_minutes": [50, 40, 45],
           "operating_minutes": [60, 60, 45], "method": [None, "HBHA", None]},
    "k2": {"status": ["measured", "measured", "measured"], "valid_minutes": [45, 48, 60],
           "operating_minutes": [45, 60, 60], "method": [None, None, None]},
}


@dataclass
class PrivateBackends(Backends):
    """A mosquitto and an InfluxDB of one test's own, which it may stop and start again on the same port and
    data. The directory is world-writable because mosquitto drops root for its own user and must still write
    its persistence file there."""

    def stop_broker(self) -> None:
        self.mosquitto.stop()  # SIGTERM: mosquitto saves its sessions and queued messages on the way out

    def start_broker(self) -> None:
        self.mosquitto = ls.start_mosquitto(self.workdir, self.mosquitto.port)

    def stop_influx(self) -> None:
        self.influxd.stop()

    def start_influx(self) -> None:
        self.influxd = ls.start_influxd(self.workdir, self.influxd.port)

    def close(self) -> None:
        self.stop()


def private_backends(prefix: str = "cems-faults-") -> PrivateBackends:
    return PrivateBackends.start_private(prefix)


# ---- the stream -----------------------------------------------------------------------------------------
def stream_start() -> dt.datetime:
    """The first hour of a stream that ends at the top of the hour two days ago (local time, +08:00)."""
    now = dt.datetime.now(TZ).replace(minute=0, second=0, microsecond=0)
    return now - dt.timedelta(days=2, hours=HOURS)


def flag_of(stack: str, minute: int) -> str:
    h, m = divmod(minute, 60)
    return next((f for a, b, f in FLAGS[stack].get(h, []) if a <= m < b), "N")


def reading_values(stack: str, j: int) -> dict[str, float]:
    """Channel values of the reading `j` seconds into the stream: every reading differs a little, so a
    reading lost, doubled or altered shows in the means."""
    s = math.sin
    if stack == "k1":
        return {"flow_m3h": round(1.30e6 + 4.0e4 * s(j / 613), 1), "co2_pct": round(12.5 + 0.4 * s(j / 97), 4),
                "temp_c": round(50.0 + 1.5 * s(j / 1777), 3), "press_kpa": round(101.1 + 0.2 * s(j / 851), 4),
                "h2o_pct": round(10.0 + 0.5 * s(j / 1301), 4), "o2_pct": round(6.0 + 0.3 * s(j / 211), 4)}
    return {"velocity_ms": round(14.0 + 0.6 * s(j / 433), 4), "co2_pct": round(13.0 + 0.3 * s(j / 131), 4),
            "temp_c": round(48.0 + 1.0 * s(j / 1511), 3), "press_kpa": round(100.8 + 0.15 * s(j / 977), 4),
            "h2o_pct": round(9.5 + 0.4 * s(j / 1123), 4)}


def minute_body(stack: str, t0: int, minute: int) -> dict:
    """The batch a gateway sends for one stack-minute: 60 readings, one a second (DESIGN §3)."""
    rows = [reading_values(stack, minute * 60 + s) for s in range(READINGS_PER_MESSAGE)]
    body: dict = {"ts": [t0 + minute * 60 + s for s in range(READINGS_PER_MESSAGE)]}
    body.update({k: [r[k] for r in rows] for k in rows[0]})
    body.update(status=flag_of(stack, minute), gw=f"gw-{stack}", seq=minute)
    return body


def topic(stack: str) -> str:
    return f"cems/v1/it/{stack}/readings"


def stream(t0: int) -> list[tuple[str, str]]:
    """Every stack-minute of the stream in time order, the stacks interleaved as two gateways would send."""
    return [(topic(s), json.dumps(minute_body(s, t0, m))) for m in range(HOURS * 60) for s in STACK_IDS]


def readings_in(msgs: list[tuple[str, str]]) -> int:
    return sum(len(json.loads(p)["ts"]) for _, p in msgs)


# ---- waiting and looking ----------------------------------------------------------------------------------
def health(run: Running) -> dict:
    code, body = run.get("/health", token=None)
    return body if code == 200 and body else {}


def pipeline_counter(run: Running, name: str) -> int:
    return health(run).get("checks", {}).get("pipeline", {}).get(name, 0)


def settled_hours(run: Running, stack: str, start: dt.datetime, cond=None, stable_s: float = 3.0,
                  timeout: float = 90.0, plant: str = "it", n: int = HOURS) -> list[dict]:
    """The stack's `n` hour items from `start` once quiescent: every hour present and final, `cond(items)`
    true, and nothing changed for `stable_s` seconds."""
    q = {"start": start.isoformat(), "end": (start + dt.timedelta(hours=n)).isoformat()}
    seen = {"items": None, "since": 0.0, "answer": None}

    def ready():
        code, body = run.get(f"/stacks/{plant}/{stack}/hours", **q)
        seen["answer"] = (code, body)
        items = body.get("items") if code == 200 and body else None
        if not items or len(items) != n or not all(i["final"] for i in items) or (cond and not cond(items)):
            seen["items"] = None
            return None
        if items != seen["items"]:
            seen["items"], seen["since"] = items, time.monotonic()
            return None
        return items if time.monotonic() - seen["since"] >= stable_s else None

    try:
        return run.wait(ready, timeout, f"{n} final, unchanging hours of {plant}/{stack}")
    except AssertionError as e:
        raise AssertionError(f"expected {n} final hours of {plant}/{stack} that stop changing; last answer: "
                             f"{json.dumps(seen['answer'], indent=1)[:4000]}") from e


def all_settled(run: Running, start: dt.datetime) -> dict[str, list[dict]]:
    return {s: settled_hours(run, s, start) for s in STACK_IDS}


def hour_diffs(got: list[dict], want: list[dict], rel: float = 1e-12) -> list[str]:
    """Every field of every hour compared: floats to `rel`, everything else exactly."""
    diffs = []
    if len(got) != len(want):
        return [f"{len(got)} hours, expected {len(want)}"]
    for g, w in zip(got, want, strict=True):
        for k in sorted(set(g) | set(w)):
            a, b = g.get(k, "<absent>"), w.get(k, "<absent>")
            if isinstance(a, float) and isinstance(b, float):
                same = math.isclose(a, b, rel_tol=rel, abs_tol=0.0) or (math.isnan(a) and math.isnan(b))
            else:
                same = a == b
            if not same:
                diffs.append(f"{w.get('start')} {k}: got {a!r}, expected {b!r}")
    return diffs


def reading_stats(run: Running) -> dict[str, tuple[int, float]]:
    """(count, sum) of the stored raw co2_pct per stack: every reading once, and as sent."""
    rows = run.influx_query("SELECT count(co2_pct), sum(co2_pct) FROM reading WHERE plant = 'it' GROUP BY stack")
    return {r["stack"]: (r["count"], r["sum"]) for r in rows}


def stats_diffs(got: dict[str, tuple[int, float]], want: dict[str, tuple[int, float]]) -> list[str]:
    diffs = []
    for s in sorted(set(got) | set(want)):
        (gn, gs), (wn, ws) = got.get(s, (0, math.nan)), want.get(s, (0, math.nan))
        if gn != wn or not math.isclose(gs, ws, rel_tol=1e-9):
            diffs.append(f"{s}: {gn} readings summing to {gs!r} co2_pct, expected {wn} summing to {ws!r}")
    return diffs


# ---- MQTT clients -------------------------------------------------------------------------------------------
class Publisher(threading.Thread):
    """A gateway that keeps publishing whatever the service does: `msgs` in chunks of `chunk`, QoS 1, each chunk
    acknowledged by the broker before a pause of `pause_s`. `sent` counts messages the broker has acknowledged."""

    def __init__(self, port: int, msgs: list[tuple[str, str]], chunk: int, pause_s: float):
        super().__init__(name="it-publisher", daemon=True)
        self.port, self.msgs, self.chunk, self.pause_s = port, msgs, chunk, pause_s
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"it-gw-{uuid.uuid4().hex[:8]}")
        try:
            c.connect("127.0.0.1", self.port)
            c.loop_start()
            for i in range(0, len(self.msgs), self.chunk):
                infos = [c.publish(t, m, qos=1) for t, m in self.msgs[i:i + self.chunk]]
                for info in infos:
                    info.wait_for_publish(timeout=60)
                    assert info.is_published(), "expected the broker to acknowledge every message (PUBACK)"
                self.sent += len(infos)
                time.sleep(self.pause_s)
        except BaseException as e:  # re-raised in the test's thread by finish()
            self.error = e
        finally:
            c.disconnect()
            c.loop_stop()

    def finish(self, timeout: float = 120.0) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"the publisher should have sent all {len(self.msgs)} messages by now"
        if self.error is not None:
            raise self.error


def publish_chunks(port: int, msgs: list[tuple[str, str]], chunk: int = 120) -> None:
    """Publish with a fresh client per chunk (a broker restarted between chunks is no problem)."""
    for i in range(0, len(msgs), chunk):
        publish(port, msgs[i:i + chunk])


class Subscriber:
    """Subscribed (SUBACK received) by the time it is constructed, so nothing published after is missed."""

    def __init__(self, port: int, topic_filter: str):
        self.messages: list[tuple[str, bytes]] = []
        subscribed = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"it-sub-{uuid.uuid4().hex[:8]}")
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter, qos=1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert subscribed.wait(10), f"expected a SUBACK for {topic_filter} within 10 s"

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()
