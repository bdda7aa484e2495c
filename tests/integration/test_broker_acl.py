"""The shipped broker security (deploy/mosquitto: password file from init-passwords, acl, the TLS listener of
tls.conf with certificates from deploy/make-certs) on a real mosquitto: no anonymous clients, a gateway may
publish only to its own plant's topics, on the plain listener and on TLS alike."""

import os
import shutil
import ssl
import subprocess
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from cems import localservices as ls

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Broker:
    port: int  # the plain listener (deploy/mosquitto/mosquitto.conf)
    tls_port: int | None = None  # the TLS listener (deploy/mosquitto/tls.conf)
    ca: Path | None = None  # the CA deploy/make-certs made


def start_shipped_broker(wd: Path, tls: bool):
    """A real mosquitto on the shipped files, paths and ports rewritten for this machine."""
    env = dict(os.environ, CEMS_MQTT_PASSWORD="svc-secret", CEMS_GATEWAY_PASSWORDS="wusha:wusha-secret other:o-secret")
    subprocess.run(["sh", str(ROOT / "deploy" / "mosquitto" / "init-passwords"), str(wd / "passwd")], env=env,
                   check=True, capture_output=True)
    (wd / "passwd").chmod(0o644)  # mosquitto drops root for its own user, which must read it here
    shutil.copy(ROOT / "deploy" / "mosquitto" / "acl", wd / "acl")
    b = Broker(ls.free_port())
    conf = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    conf = (conf.replace("listener 1883", f"listener {b.port} 127.0.0.1")
            .replace("/mosquitto/config/passwd", str(wd / "passwd")).replace("/mosquitto/config/acl", str(wd / "acl"))
            .replace("persistence true", "persistence false"))
    if tls:
        ls.apt_install(["openssl"], ["openssl"], quiet=True) if shutil.which("openssl") is None else None
        subprocess.run([str(ROOT / "deploy" / "make-certs"), "127.0.0.1", "localhost"], check=True,
                       capture_output=True, env=dict(os.environ, CEMS_TLS_DIR=str(wd / "certs")))
        (wd / "certs").chmod(0o755)
        b.tls_port, b.ca = ls.free_port(), wd / "certs" / "ca.crt"
        conf += ((ROOT / "deploy" / "mosquitto" / "tls.conf").read_text()
                 .replace("listener 8883", f"listener {b.tls_port} 127.0.0.1")
                 .replace("/mosquitto/certs", str(wd / "certs")))
    (wd / "mosquitto.conf").write_text(conf)
    proc = subprocess.Popen([ls.binary("mosquitto"), "-c", str(wd / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    for port in (b.port, b.tls_port):
        if port:
            ls.wait_port(port, proc)
    return b, proc


def _running_shipped_broker(tls: bool):
    ls.ensure_installed(quiet=True)
    wd = Path(tempfile.mkdtemp(prefix="cems-acl-"))
    wd.chmod(0o777)
    b, proc = start_shipped_broker(wd, tls)
    yield b
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(wd, ignore_errors=True)


@pytest.fixture(params=[False, True], ids=["plain", "tls"])
def shipped(request):
    yield from _running_shipped_broker(request.param)


@pytest.fixture
def shipped_tls():
    yield from _running_shipped_broker(True)


def gateway_side(b: Broker) -> dict:
    """Where gateways connect: the TLS listener when there is one (the service stays on the plain one)."""
    return {"port": b.tls_port, "ca": b.ca} if b.tls_port else {"port": b.port}


def client(port: int, user: str | None, password: str | None, ca: Path | None = None):
    """Logged in as `user` (None: anonymous), over TLS trusting `ca` when given; the client and the broker's answer."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"acl-{uuid.uuid4().hex[:8]}")
    if user:
        c.username_pw_set(user, password)
    if ca:
        c.tls_set(ca_certs=str(ca))
    result = {}
    done = threading.Event()

    def on_connect(cl, u, flags, rc, props):
        result["rc"] = rc
        done.set()

    c.on_connect = on_connect
    c.connect("127.0.0.1", port)
    c.loop_start()
    done.wait(10)
    return c, result.get("rc")


def test_anonymous_and_wrong_passwords_are_refused(shipped):
    for user, pw in ((None, None), ("cems", "wrong"), ("wusha", "svc-secret")):
        c, rc = client(user=user, password=pw, **gateway_side(shipped))
        c.loop_stop()
        assert rc is not None and rc.is_failure, f"{user!r} with {pw!r} should be refused, got {rc}"


def test_a_gateway_publishes_only_to_its_own_plant(shipped):
    got: list[str] = []
    svc, rc = client(shipped.port, "cems", "svc-secret")
    assert not rc.is_failure
    svc.on_message = lambda c, u, m: got.append(m.topic)
    subscribed = threading.Event()
    svc.on_subscribe = lambda *a: subscribed.set()
    svc.subscribe([("cems/v1/+/+/readings", 1), ("cems/v1/+/_gateways/+/status", 1)])
    assert subscribed.wait(10)
    for topic in ("cems/v1/wusha/u1/readings", "cems/v1/other/u1/readings", "cems/v1/wusha/_gateways/g1/status",
                  "cems/v1/other/_gateways/g1/status", "cems/v1/wusha/u1/live"):
        gw, rc = client(user="wusha", password="wusha-secret", **gateway_side(shipped))  # a fresh login each:
        # a denied publish may end one
        assert not rc.is_failure
        try:
            gw.publish(topic, b"{}", qos=1).wait_for_publish(5)
        except RuntimeError:
            pass  # disconnected for publishing where it may not: denied, which is what is checked below
        gw.loop_stop()
        gw.disconnect()
    threading.Event().wait(1.0)
    svc.loop_stop()
    assert sorted(got) == ["cems/v1/wusha/_gateways/g1/status", "cems/v1/wusha/u1/readings"], got


def test_the_tls_listener_takes_only_tls_clients_that_trust_its_ca(shipped_tls, tmp_path):
    shipped = shipped_tls
    with pytest.raises(OSError):  # plain MQTT on the TLS port: the handshake never completes
        c, rc = client(shipped.tls_port, "wusha", "wusha-secret")
        c.loop_stop()
        if rc is None:
            raise OSError("no CONNACK")
    from tests.tlscerts import make_pki

    other = make_pki(tmp_path / "other", "other").ca
    with pytest.raises(ssl.SSLCertVerificationError):
        client(shipped.tls_port, "wusha", "wusha-secret", ca=other)
