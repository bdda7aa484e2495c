"""Real mosquitto, real InfluxDB and a real `cems serve` on free loopback ports.

The broker and database are started once per test session by the project's own script
(`cems/localservices.py`, the one behind `deploy/services`), with their data in a temporary directory.
Each test that needs the service gets its own database and MQTT client id, so tests do not share state.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from cems import localservices as ls

pytestmark = pytest.mark.integration
TOKENS = {"regulator": "it-regulator-token", "operator": "it-operator-token-other", "gateway": "it-gateway-token"}


Backends = ls.Backends


@pytest.fixture(scope="session")
def backends(tmp_path_factory) -> Backends:
    ls.ensure_installed(quiet=True)
    wd = tmp_path_factory.mktemp("services")
    mosq = ls.start_mosquitto(wd, ls.free_port())
    influx = ls.start_influxd(wd, ls.free_port())
    yield Backends(wd, mosq, influx)
    mosq.stop()
    influx.stop()


STACKS = """
[[plants]]
id = "it"
name = "Integration plant"
timezone = "Asia/Shanghai"
settle_s = 2

[[plants.stacks]]
id = "k1"
name = "Flow meter stack"

[[plants.stacks]]
id = "k2"
name = "Velocity stack"
area_m2 = 30.0
kv = 0.95
"""


def write_config(path: Path, b: Backends, api_port: int, data_dir: Path, db: str, client_id: str,
                 plants: str = STACKS) -> Path:
    tokens = "".join(
        f'[[api.tokens]]\ntoken = "{TOKENS["regulator"]}"\nrole = "regulator"\nplants = ["*"]\n\n'
        f'[[api.tokens]]\ntoken = "{TOKENS["operator"]}"\nrole = "operator"\nplants = ["other"]\n\n'
        f'[[api.tokens]]\ntoken = "{TOKENS["gateway"]}"\nrole = "gateway"\nplants = ["*"]\n\n'
    )
    path.write_text(f"""[mqtt]
host = "127.0.0.1"
port = {b.mqtt_port}
client_id = "{client_id}"

[influx]
url = "http://127.0.0.1:{b.influx_port}"
database = "{db}"

[api]
host = "127.0.0.1"
port = {api_port}

{tokens}[storage]
data_dir = "{data_dir}"
{plants}""")
    return path


@dataclass
class Running:
    backends: Backends
    config: Path
    api_port: int
    data_dir: Path
    database: str
    log: Path
    proc: subprocess.Popen | None = None
    published: list = field(default_factory=list)

    def start(self) -> None:
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "cems.cli", "serve", "--config", str(self.config)],
                                         stdout=f, stderr=subprocess.STDOUT)
        self.wait(lambda: (self.get("/health")[1] or {}).get("checks", {}).get("pipeline", {}).get("ready"),
                  60, "service ready")

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            self.proc.wait(20)

    def get(self, path: str, token: str | None = TOKENS["regulator"], **params):
        q = ("?" + urllib.parse.urlencode(params)) if params else ""
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}/api/v1{path}{q}")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")
        except OSError:
            return 0, None

    def wait(self, cond, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = cond()
            if v:
                return v
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"service exited ({self.proc.returncode}) waiting for {what}; "
                                     f"log:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.3)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; log:\n{self.log.read_text()[-3000:]}")

    def accepted(self) -> int:
        """Readings the pipeline has accepted so far (0 while the API does not answer)."""
        return (self.get("/health")[1] or {}).get("checks", {}).get("pipeline", {}).get("accepted") or 0

    def wait_stored(self, plant: str, want: dict[str, int], timeout: float = 60) -> None:
        """Wait until InfluxDB holds `want[stack]` raw readings for each stack of `plant`, and no other stack's.
        A reading counts as accepted once handled; its write is stored a moment later by the writer thread,
        so a query right after `accepted` reaches a count may not see it yet."""
        def counts() -> dict[str, int]:
            rows = self.influx_query(f"SELECT count(status) FROM reading WHERE plant = '{plant}' GROUP BY stack")
            return {r["stack"]: r["count"] for r in rows}

        try:
            self.wait(lambda: counts() == want, timeout, f"readings stored {want}")
        except AssertionError as e:
            raise AssertionError(f"stored {counts()}, want {want}: {e}") from None

    def influx_query(self, q: str) -> list[dict]:
        data = urllib.parse.urlencode({"q": q, "db": self.database, "epoch": "ms"}).encode()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.backends.influx_port}/query", data, timeout=10) as r:
            body = json.loads(r.read())
        rows = []
        for res in body["results"]:
            for s in res.get("series", []):
                rows += [dict(zip(s["columns"], v, strict=True)) | s.get("tags", {}) for v in s["values"]]
        return rows


def start_service(b: Backends, tmp: Path, plants: str = STACKS, prefix: str = "it") -> Running:
    """A `cems serve` of its own (database, MQTT client id, data dir) against `b`, started and ready."""
    name = f"{prefix}_" + uuid.uuid4().hex[:10]
    port = ls.free_port()
    cfg = write_config(tmp / "cems.toml", b, port, tmp / "data", name, f"cems-{name}", plants)
    run = Running(b, cfg, port, tmp / "data", name, tmp / "service.log")
    run.start()
    return run


@pytest.fixture
def broker_dir():
    """A directory for a private mosquitto that can persist sessions even after dropping root for its own
    user (pytest's tmp_path is private to the test user)."""
    wd = Path(tempfile.mkdtemp(prefix="cems-broker-"))
    (wd / "mosquitto").mkdir()
    for d in (wd, wd / "mosquitto"):
        d.chmod(0o777)
    yield wd
    shutil.rmtree(wd, ignore_errors=True)


@pytest.fixture
def service(backends, tmp_path) -> Running:
    run = start_service(backends, tmp_path)
    yield run
    run.stop()


def wait_for(cond, timeout: float, what: str, poll_s: float = 0.1):
    """Poll `cond` until it returns something truthy (for waits with no service process to watch)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def publish(port: int, msgs: list[tuple[str, bytes | str]], client_id: str | None = None) -> None:
    """Publish with QoS 1 and wait until the broker has acknowledged every message."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"it-gw-{uuid.uuid4().hex[:8]}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = [c.publish(t, m, qos=1) for t, m in msgs]
    for i in infos:
        i.wait_for_publish(timeout=60)
        assert i.is_published()
    c.loop_stop()
    c.disconnect()


class Subscriber:
    def __init__(self, port: int, topic: str):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"it-sub-{uuid.uuid4().hex[:8]}")
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, m.retain))
        self.c.connect("127.0.0.1", port)
        self.c.subscribe(topic, qos=1)
        self.c.loop_start()

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


os.environ.setdefault("PYTHONUNBUFFERED", "1")


class StatusWatch:
    """Every message on the gateways' status topics, resubscribing after a broker restart."""

    def __init__(self, port: int, plant: str):
        self.seen: list[dict] = []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"it-status-{uuid.uuid4().hex[:8]}")
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(f"cems/v1/{plant}/_gateways/+/status", qos=1)
        self.c.on_message = lambda c, u, m: self.seen.append(json.loads(m.payload))
        self.c.reconnect_delay_set(1, 2)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def last(self) -> dict | None:
        return self.seen[-1] if self.seen else None

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


class GatewayRun:
    """`cems simulate` as a subprocess (`cmd`), its output in `log`, its plant's status topic watched on `port`."""

    def __init__(self, cmd: list[str], log: Path, port: int, plant: str = "it"):
        self.cmd, self.log, self.proc = cmd, log, None
        self._logf = open(log, "ab")  # noqa: SIM115 (closed by close())
        self.watch = StatusWatch(port, plant)

    def status(self) -> dict:
        return self.watch.last() or {}

    def wait_status(self, status: str, timeout: float, what: str) -> dict:
        wait_for(lambda: self.status().get("status") == status, timeout, what)
        return self.status()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=self._logf, stderr=subprocess.STDOUT)
        self.wait_status("online", 30, "the gateway's online status")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def finish(self, timeout: float = 120) -> str:
        """Wait for the run to end by itself; its output, after checking it ended well and sent everything."""
        assert self.proc.wait(timeout) == 0, self.log.read_text()[-3000:]
        out = self.log.read_text()
        assert "still in" not in out, out[-3000:]  # the gateway's spool drained before it stopped
        assert (self.status().get("status"), self.status().get("reason")) == ("offline", "stopped")
        return out

    def close(self) -> None:
        if self.running():
            self.proc.kill()
            self.proc.wait()
        self._logf.close()
        self.watch.close()


def expected_run(spool_state: Path, config: Path, n_readings: int, step_ms: int, scenario) -> dict:
    """What `cems simulate` generated for plant `it`'s stacks in the run whose state file is `spool_state`
    (the same pure function, seed and start): {stack: Readings}."""
    import numpy as np

    from cems.config import load_config
    from cems.ingest.simulator import StackSim, generate

    state = json.loads(spool_state.read_bytes())
    ts = state["start_ms"] + np.arange(n_readings, dtype=np.int64) * step_ms
    plant = load_config(config).plants[0]
    return {s.id: generate(StackSim.of(plant.id, plant.timezone, s), ts, scenario) for s in plant.stacks}


def check_stored(run: Running, expected: dict) -> None:
    """Every reading of `expected` accepted and stored once (count and sum of co2_pct per stack, per flag)."""
    import numpy as np

    total = sum(len(r) for r in expected.values())
    run.wait_stored("it", {s: len(r) for s, r in expected.items() if len(r)})
    rows = run.influx_query("SELECT count(co2_pct), sum(co2_pct) FROM reading WHERE plant = 'it' GROUP BY stack")
    # A stack whose whole window falls in one of the day's seeded gaps has no readings, and no row here.
    by_stack = {r["stack"]: r for r in rows}
    for s, r in expected.items():
        got = by_stack.get(s, {"count": 0, "sum": 0.0})
        assert got["count"] == len(r), s
        assert got["sum"] == pytest.approx(float(np.nansum(r.values["co2_pct"])), rel=1e-9, abs=1e-9), s
    for s, r in expected.items():  # `status` is a field: one query per flag
        for flag, n in zip(*np.unique(r.status, return_counts=True), strict=True):
            [row] = run.influx_query(f"SELECT count(co2_pct) FROM reading WHERE plant = 'it' AND stack = '{s}' "
                                     f"AND status = '{flag}'")
            assert row["count"] == n, (s, flag)
    pipe = run.get("/health")[1]["checks"]["pipeline"]
    # Resends (after a kill, or in flight when a link dropped) were identical duplicates.
    assert (pipe["accepted"], pipe["corrections"], pipe["rejected"]) == (total, 0, 0)
