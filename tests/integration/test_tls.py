"""TLS on real parts: a mosquitto that accepts only TLS clients with a certificate from the plant's CA, an
InfluxDB serving https with a certificate from the same CA, and `cems serve` plus `cems simulate` (the edge
gateway) configured for both (`[mqtt] tls`, `ca_file`, `cert_file`, `key_file`; `[influx] url = "https://..."`,
`ca_file`). Every reading the gateway takes arrives over TLS and is stored once through https; clients
that do not trust the server, or that the broker does not trust, are refused and say why."""

import json
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from cems import localservices as ls
from cems.config import MqttConfig, load_config, tls_context
from cems.ingest.collector import mqtt_client
from cems.store.influx import Influx
from tests.tlscerts import make_pki

from .conftest import Running, wait_for

pytestmark = pytest.mark.integration
LOAD_N, RATE_HZ, DURATION_S, SPEEDUP, BATCH = 2, 2, 4, 10, 7
PLANT = '[[plants]]\nid = "tl"\ntimezone = "Asia/Shanghai"\n' + "".join(
    f'\n[[plants.stacks]]\nid = "load-{i:04d}"\n' for i in range(1, LOAD_N + 1))


@pytest.fixture(scope="module")
def secured():
    """A TLS-only mosquitto requiring client certificates and an https InfluxDB, with their CA."""
    ls.ensure_installed(quiet=True)
    # mosquitto run as root reads its certificates after dropping to its own user: a directory it can
    # enter (pytest's own are private to the user) and a key it can read.
    wd = Path(tempfile.mkdtemp(prefix="cems-tls-"))
    pki = make_pki(wd / "pki", "plant")
    for d in (wd, wd / "pki"):
        d.chmod(0o755)
    for f in (pki.server_key, pki.client_key):
        f.chmod(0o644)
    mosq = ls.start_mosquitto(wd, ls.free_port(), listener_conf=(
        f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
        "require_certificate true\ntls_version tlsv1.2\n"))
    try:
        influx = ls.start_influxd(wd, ls.free_port(), tls=(pki.server_cert, pki.server_key))
    except BaseException:
        mosq.stop()
        raise
    yield pki, mosq, influx
    mosq.stop()
    influx.stop()
    shutil.rmtree(wd, ignore_errors=True)


def tls_service(tmp_path: Path, pki, mosq, influx, db: str, broker_ca: Path) -> Running:
    """A `cems serve` on TLS to both, trusting `broker_ca` for the broker, started and ready."""
    api_port = ls.free_port()
    config = tmp_path / "cems.toml"
    config.write_text(f"""[mqtt]
host = "127.0.0.1"
port = {mosq.port}
client_id = "cems-{db}"
tls = true
ca_file = "{broker_ca}"
cert_file = "{pki.client_cert}"
key_file = "{pki.client_key}"

[influx]
url = "https://127.0.0.1:{influx.port}"
database = "{db}"
ca_file = "{pki.ca}"

[api]
host = "127.0.0.1"
port = {api_port}

[[api.tokens]]
token = "tls-regulator-token"
role = "regulator"

[storage]
data_dir = "{tmp_path / 'data'}"
{PLANT}""")
    run = Running(None, config, api_port, tmp_path / "data", db, tmp_path / "service.log")
    run.start()
    return run


def test_gateway_service_and_database_over_tls_store_every_reading(secured, tmp_path):
    pki, mosq, influx = secured
    db = "tls_it"
    run = tls_service(tmp_path, pki, mosq, influx, db, pki.ca)
    config = run.config
    try:
        run.wait(lambda: run.get("/health")[1]["checks"]["mqtt"]["ok"], 20, "connected to the broker over TLS")
        checks = run.get("/health")[1]["checks"]
        assert checks["mqtt"]["tls"] is True and checks["mqtt"]["error"] is None, checks
        assert checks["influx"]["ok"] is True, checks

        p = subprocess.run([sys.executable, "-m", "cems.cli", "simulate", "--config", str(config),
                            "--load", str(LOAD_N), "--rate", str(RATE_HZ), "--duration", str(DURATION_S),
                            "--speedup", str(SPEEDUP), "--batch", str(BATCH), "--spool-dir", str(tmp_path / "gw")],
                           capture_output=True, text=True, timeout=90)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "still in" not in p.stdout + p.stderr, p.stdout + p.stderr  # the gateway's spool drained
        per_stack = DURATION_S * SPEEDUP * RATE_HZ
        done = re.search(r"simulate: done, (\d+) reading index\(es\) taken", p.stdout)
        assert done and int(done[1]) == LOAD_N * per_stack, p.stdout

        total = LOAD_N * per_stack
        run.wait(lambda: run.get("/health")[1]["checks"]["pipeline"].get("accepted", 0) >= total, 60,
                 "every reading accepted")
        db_https = Influx(f"https://127.0.0.1:{influx.port}", db, tls=tls_context(load_config(config).influx))
        run.wait(lambda: _counts(db_https) == {f"load-{i:04d}": per_stack for i in range(1, LOAD_N + 1)}, 30,
                 f"{per_stack} readings stored per stack")
        assert "certificate" not in run.log.read_text().lower()
    finally:
        run.stop()


def test_a_service_that_does_not_trust_the_broker_says_why_in_health(secured, tmp_path):
    pki, mosq, influx = secured
    other = make_pki(tmp_path / "other", "other")
    run = tls_service(tmp_path, pki, mosq, influx, "tls_wrong_ca", other.ca)
    try:
        mqtt_check = run.wait(lambda: (lambda c: c["mqtt"]["error"] and c["mqtt"])(run.get("/health")[1]["checks"]),
                              30, "the broker's error in /health")
        assert mqtt_check["ok"] is False and "certificate verify failed" in mqtt_check["error"], mqtt_check
        assert run.get("/health")[1]["status"] == "degraded"
        assert "certificate verify failed" in run.log.read_text()
    finally:
        run.stop()


def _counts(db: Influx) -> dict:
    rows = db.query("SELECT count(co2_pct) FROM reading WHERE plant = 'tl' GROUP BY stack")
    return {r["stack"]: r["count"] for r in rows}


def _connect_error(cfg: MqttConfig, caplog) -> str:
    """Connect once with the service's own client code; the warning it logs for the failure."""
    client = mqtt_client(cfg, "tls-refused")
    client.connect_async(cfg.host, cfg.port)
    caplog.clear()
    with caplog.at_level("WARNING", logger="cems.collector"):
        try:
            client.reconnect()
            # The handshake passed; a broker refusing the client closes the connection on the first read.
            client.loop(timeout=2.0)
            client.loop(timeout=2.0)
        except OSError:
            pass
    connected = client.is_connected()
    if client.socket():
        client.socket().close()
    assert not connected, "the broker accepted a client it should refuse"
    return " ".join(r.getMessage() for r in caplog.records)


def test_a_client_that_does_not_trust_the_broker_says_so(secured, tmp_path, caplog):
    pki, mosq, _ = secured
    other = make_pki(tmp_path / "other", "other")
    msg = _connect_error(MqttConfig(port=mosq.port, tls=True, ca_file=other.ca, cert_file=pki.client_cert,
                                    key_file=pki.client_key), caplog)
    assert f"cannot connect to the broker at mqtts://127.0.0.1:{mosq.port}" in msg
    assert "certificate verify failed" in msg


def test_the_broker_refuses_clients_without_a_certificate_from_its_ca(secured, tmp_path, caplog):
    pki, mosq, _ = secured
    other = make_pki(tmp_path / "other", "other")
    for cfg in (MqttConfig(port=mosq.port, tls=True, ca_file=pki.ca),  # no client certificate
                MqttConfig(port=mosq.port, tls=True, ca_file=pki.ca, cert_file=other.client_cert,
                           key_file=other.client_key)):  # one from another CA
        _connect_error(cfg, caplog)
    # Plain MQTT on the TLS port gets nowhere either.
    plain = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tls-plain")
    with pytest.raises(OSError):
        plain.connect("127.0.0.1", mosq.port, keepalive=5)
        for _ in range(4):
            if plain.loop(timeout=1.0) != mqtt.MQTT_ERR_SUCCESS:
                raise OSError("closed by the broker")
    assert not plain.is_connected()


def test_influxdb_over_https_is_reached_only_with_its_ca(secured, tmp_path):
    pki, _, influx = secured
    url = f"https://127.0.0.1:{influx.port}"
    assert Influx(url, "x", tls=ssl.create_default_context(cafile=str(pki.ca))).ping()
    other = make_pki(tmp_path / "other", "other")
    assert not Influx(url, "x", tls=ssl.create_default_context(cafile=str(other.ca))).ping()
    assert not Influx(url, "x").ping()  # the system's CAs do not know the plant's


def test_hj212_bridge_publishes_to_the_broker_over_tls(secured, tmp_path):
    """The bridge answers a logger (9014) only once the broker has acknowledged the reading: here over TLS."""
    from .conftest import STACKS
    from .test_hj212 import HJ212, BridgeThread, realtime_answered

    pki, mosq, _ = secured
    mqtt_tls = (f'[mqtt]\nport = {mosq.port}\ntls = true\nca_file = "{pki.ca}"\ncert_file = "{pki.client_cert}"\n'
                f'key_file = "{pki.client_key}"\n')
    config = tmp_path / "hj212.toml"
    config.write_text(mqtt_tls + STACKS + HJ212)
    got: list[bytes] = []
    subscribed = threading.Event()
    sub = mqtt_client(load_config(config).mqtt, "tls-hj212-sub")
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("cems/v1/it/k1/readings", qos=1)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.connect("127.0.0.1", mosq.port)
    sub.loop_start()
    bridge = None
    try:
        assert subscribed.wait(10), "no SUBACK over TLS"
        bridge = BridgeThread(config)
        realtime_answered(bridge.port, "20250101080000042")
        wait_for(lambda: got, 10, "the logger's reading on cems/v1/it/k1/readings")
        assert json.loads(got[0])["temp_c"] == 50.0
    finally:
        if bridge is not None:
            bridge.stop()
        sub.loop_stop()
        sub.disconnect()
