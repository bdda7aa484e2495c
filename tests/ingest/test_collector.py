"""The collector's paho callbacks, with an in-process fake client (integration tests use mosquitto)."""

import queue
import threading
from types import SimpleNamespace

import paho.mqtt.client as mqtt

from cems.config import MqttConfig
from cems.ingest.collector import READINGS_FILTER, REPORTED_FILTER, Collector


class FakeClient:
    def __init__(self, *args, **kwargs):
        self.kwargs = kwargs
        self.subscribed = []
        self.acked = []

    def username_pw_set(self, u, p):
        self.auth = (u, p)

    def reconnect_delay_set(self, min_delay, max_delay):
        pass

    def reconnect(self):
        pass

    def subscribe(self, topics):
        self.subscribed.append(topics)

    def ack(self, mid, qos):
        self.acked.append((mid, qos))

    def disconnect(self):
        pass

    def loop_stop(self):
        pass


def make(maxsize=10):
    q = queue.Queue(maxsize=maxsize)
    c = Collector(MqttConfig(username="u", password="p"), q, client_factory=FakeClient)
    return c, q


def test_persistent_session_with_manual_ack_and_both_topics():
    c, _ = make()
    assert c.client.kwargs["clean_session"] is False and c.client.kwargs["manual_ack"] is True
    assert c.client.kwargs["protocol"] == mqtt.MQTTv311 and c.client.auth == ("u", "p")
    ok = SimpleNamespace(is_failure=False)
    c._on_connect(c.client, None, SimpleNamespace(session_present=True), ok, None)
    assert c.client.subscribed == [[(READINGS_FILTER, 1), (REPORTED_FILTER, 1)]]
    assert c.connected.is_set()


def test_messages_are_queued_and_acked_only_when_asked():
    c, q = make()
    c._on_message(c.client, None, SimpleNamespace(topic="cems/v1/a/b/readings", payload=b"{}", mid=7, qos=1))
    m = q.get_nowait()
    assert (m.topic, m.mid, m.qos) == ("cems/v1/a/b/readings", 7, 1)
    assert c.client.acked == []
    c.ack(m)
    assert c.client.acked == [(7, 1)]


def test_a_full_queue_blocks_until_stop_without_losing_the_ack():
    c, q = make(maxsize=1)
    q.put("occupied")
    t = threading.Thread(target=c._on_message,
                         args=(c.client, None, SimpleNamespace(topic="t", payload=b"", mid=1, qos=1)))
    t.start()
    t.join(0.8)
    assert t.is_alive()  # backpressure: paho's thread waits
    c.stop()
    t.join(2)
    assert not t.is_alive() and c.client.acked == []  # never acknowledged: the broker will resend


class PacketClient(FakeClient):
    """paho's internal queue of outgoing packets, as `Collector.ack_all` uses it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.packets = []

    def _packet_queue(self, command, packet, mid, qos, info=None):
        self.packets.append((command, bytes(packet), mid, qos))


def test_a_batch_is_acknowledged_in_one_write_of_its_pubacks():
    c = Collector(MqttConfig(), queue.Queue(), client_factory=PacketClient)
    msgs = [SimpleNamespace(mid=mid, qos=1) for mid in (1, 2, 300)] + [SimpleNamespace(mid=0, qos=0)]
    c.ack_all(msgs)
    assert c.client.packets == [(mqtt.PUBACK, bytes.fromhex("40020001" "40020002" "4002012c"), 0, 0)]
    assert c.client.acked == []


def test_a_single_message_or_a_client_without_the_queue_is_acknowledged_one_by_one():
    c = Collector(MqttConfig(), queue.Queue(), client_factory=PacketClient)
    c.ack_all([SimpleNamespace(mid=5, qos=1)])
    assert c.client.acked == [(5, 1)] and c.client.packets == []
    c, _ = make()
    c.ack_all([SimpleNamespace(mid=6, qos=1), SimpleNamespace(mid=7, qos=1)])
    assert c.client.acked == [(6, 1), (7, 1)]


def publish_packet(topic: str, payload: bytes, mid: int) -> bytes:
    """An MQTT 3.1.1 PUBLISH, QoS 1 (QoS 0 for mid 0), followed by a PINGRESP every seventh mid."""
    var = len(topic).to_bytes(2, "big") + topic.encode() + (mid.to_bytes(2, "big") if mid else b"") + payload
    n, length = len(var), bytearray()
    while True:
        n, byte = n >> 7, n & 127
        length.append(byte | (128 if n else 0))
        if not n:
            return bytes([0x32 if mid else 0x30]) + bytes(length) + var + (b"\xd0\x00" if mid % 7 == 3 else b"")


def test_buffered_client_reads_what_paho_reads_however_the_bytes_arrive():
    """`BufferedClient` serves paho's reads from large socket reads: over a real socket pair, packets of 1 byte
    to 300 kB (remaining lengths of one to three bytes) arriving in any chunks come out whole and in order,
    each once, including a packet cut off at the end of a read, and other packets among them."""
    import random
    import socket

    from cems.ingest.collector import BufferedClient

    rng = random.Random(7)
    sizes = [0, 1, 100, 126, 127, 128, 16_383, 16_384, 300_000] + [rng.randrange(0, 3000) for _ in range(300)]
    sent = [(f"cems/v1/p/s{i % 5}/readings", rng.randbytes(n), 0 if i % 11 == 5 else i % 65535 + 1)
            for i, n in enumerate(sizes)]  # some QoS 0, some followed by a PINGRESP: paho's own path
    stream = b"".join(publish_packet(*m) for m in sent)
    for chunking in (1, 7, 1000, 70_000, len(stream)):
        client = BufferedClient(mqtt.CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv311,
                                manual_ack=True)
        got: list[tuple] = []
        client.on_message = lambda _c, _u, m, got=got: got.append((m.topic, m.payload, m.mid))
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.setblocking(False)
        client._sock = ours
        try:
            pos = 0
            for _ in range(len(stream) // min(chunking, 25) + 1000):  # a bound, should it hang
                if len(got) == len(sent):
                    break
                if pos < len(stream):
                    step = chunking if chunking > 1 else rng.randrange(1, 50)
                    try:
                        pos += theirs.send(stream[pos:pos + step])
                    except BlockingIOError:  # the pair's buffer is full: read first
                        pass
                assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
        finally:
            client._sock = None
            ours.close()
            theirs.close()
        assert got == sent, f"chunks of {chunking}"


def test_why_the_broker_cannot_be_reached_is_logged_once_per_reason(caplog):
    import socket

    from cems.ingest.collector import mqtt_client
    from cems.localservices import free_port

    port = free_port()  # nothing listens there
    client = mqtt_client(MqttConfig(port=port), "t-unreachable")
    client.connect_async("127.0.0.1", port)
    with caplog.at_level("WARNING", logger="cems.collector"):
        for _ in range(3):  # paho's retries
            try:
                client.reconnect()
            except OSError:
                pass
            else:
                raise AssertionError("connected to a port nobody listens on")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert f"cannot connect to the broker at mqtt://127.0.0.1:{port}: " in warnings[0]
    assert "refused" in warnings[0].lower() and "retrying" in warnings[0]
    assert "refused" in client.connect_error.lower()  # for /health while it lasts
    # Once connected, the next failure is news again.
    with socket.create_server(("127.0.0.1", port)) as srv:
        client.reconnect()
        srv.accept()[0].close()
    assert client.connect_error is None
    client.socket().close()
    with caplog.at_level("WARNING", logger="cems.collector"):
        try:
            client.reconnect()
        except OSError:
            pass
    assert sum(r.levelname == "WARNING" for r in caplog.records) == 2
