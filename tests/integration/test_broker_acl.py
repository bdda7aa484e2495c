"""The shipped broker security (deploy/mosquitto: password file from init-passwords, acl) on a real
mosquitto: no anonymous clients, and a gateway may publish only to its own plant's topics."""

import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from cems import localservices as ls

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def broker():
    ls.ensure_installed(quiet=True)
    wd = Path(tempfile.mkdtemp(prefix="cems-acl-"))
    wd.chmod(0o777)
    env = dict(os.environ, CEMS_MQTT_PASSWORD="svc-secret", CEMS_GATEWAY_PASSWORDS="wusha:wusha-secret other:o-secret")
    subprocess.run(["sh", str(ROOT / "deploy" / "mosquitto" / "init-passwords"), str(wd / "passwd")], env=env,
                   check=True, capture_output=True)
    (wd / "passwd").chmod(0o644)  # mosquitto drops root for its own user, which must read it here
    shutil.copy(ROOT / "deploy" / "mosquitto" / "acl", wd / "acl")
    port = ls.free_port()
    conf = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    conf = (conf.replace("listener 1883", f"listener {port} 127.0.0.1")
            .replace("/mosquitto/config/passwd", str(wd / "passwd")).replace("/mosquitto/config/acl", str(wd / "acl"))
            .replace("persistence true", "persistence false"))
    (wd / "mosquitto.conf").write_text(conf)
    proc = subprocess.Popen([ls.binary("mosquitto"), "-c", str(wd / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    ls.wait_port(port, proc)
    yield port
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(wd, ignore_errors=True)


def client(port: int, user: str | None, password: str | None):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"acl-{uuid.uuid4().hex[:8]}")
    if user:
        c.username_pw_set(user, password)
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


def test_anonymous_and_wrong_passwords_are_refused(broker):
    for user, pw in ((None, None), ("cems", "wrong"), ("wusha", "svc-secret")):
        c, rc = client(broker, user, pw)
        c.loop_stop()
        assert rc is not None and rc.is_failure, f"{user!r} with {pw!r} should be refused, got {rc}"


def test_a_gateway_publishes_only_to_its_own_plant(broker):
    got: list[str] = []
    svc, rc = client(broker, "cems", "svc-secret")
    assert not rc.is_failure
    svc.on_message = lambda c, u, m: got.append(m.topic)
    subscribed = threading.Event()
    svc.on_subscribe = lambda *a: subscribed.set()
    svc.subscribe([("cems/v1/+/+/readings", 1), ("cems/v1/+/_gateways/+/status", 1)])
    assert subscribed.wait(10)
    for topic in ("cems/v1/wusha/u1/readings", "cems/v1/other/u1/readings", "cems/v1/wusha/_gateways/g1/status",
                  "cems/v1/other/_gateways/g1/status", "cems/v1/wusha/u1/live"):
        gw, rc = client(broker, "wusha", "wusha-secret")  # a fresh login each: a denied publish may end one
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
