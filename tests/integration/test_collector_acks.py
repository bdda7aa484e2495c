"""The collector's acknowledgements on a real mosquitto: a batch acknowledged with `ack_all` (its PUBACKs
in one write) is never delivered again to the persistent session; messages not acknowledged are."""

import queue
import time
import uuid

import pytest

from cems.config import MqttConfig
from cems.ingest.collector import Collector

from .conftest import publish, wait_for

pytestmark = pytest.mark.integration
N = 50


def drain(q: "queue.Queue", n: int, timeout: float = 20.0) -> list:
    out, end = [], time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        try:
            out.append(q.get(timeout=0.2))
        except queue.Empty:
            pass
    return out


def session(port: int, client_id: str, topic: str) -> tuple[Collector, "queue.Queue"]:
    q: queue.Queue = queue.Queue()
    c = Collector(MqttConfig(host="127.0.0.1", port=port, client_id=client_id), q, topic_filters=(topic,))
    c.start()
    wait_for(c.connected.is_set, 10, "the collector's connection")
    return c, q


def test_acknowledged_batches_are_not_delivered_again_and_the_rest_are(backends):
    topic = f"cems/v1/ack{uuid.uuid4().hex[:6]}/s/readings"
    client_id = f"it-acks-{uuid.uuid4().hex[:8]}"
    c, q = session(backends.mqtt_port, client_id, topic)
    publish(backends.mqtt_port, [(topic, f'{{"n": {i}}}') for i in range(N)])
    first = drain(q, N)
    assert len(first) == N
    c.ack_all(first[:30])  # the first 30 in one write; the other 20 never acknowledged
    time.sleep(0.5)  # let paho's network thread write the PUBACKs before the connection goes
    c.stop()

    c, q = session(backends.mqtt_port, client_id, topic)  # the same persistent session
    try:
        again = drain(q, N - 30, timeout=10)
        assert sorted(m.payload for m in again) == sorted(m.payload for m in first[30:])
        c.ack_all(again)
        assert drain(q, 1, timeout=1.5) == []  # nothing more: the acknowledged 30 stay acknowledged
    finally:
        c.stop()
