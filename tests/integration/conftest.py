"""Real mosquitto, real InfluxDB and a real `cems serve` on free loopback ports.

The broker and database are started once per test session by the project's own script
(`cems/localservices.py`, the one behind `deploy/services`), with their data in a temporary directory.
Each test that needs the service gets its own database and MQTT client id, so tests do not share state.
"""

import json
import os
import subprocess
import sys
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
