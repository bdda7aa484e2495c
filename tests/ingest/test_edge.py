"""The edge gateway's store-and-forward spool: append, acknowledge, restart order, torn tail, bound; and the
gateway's sender against a fake paho client (the real broker is in tests/integration/test_edge.py)."""

import threading

import orjson
import paho.mqtt.client as mqtt
import pytest

from cems.config import MqttConfig
from cems.ingest.edge import EdgeGateway, Spool, SpoolFull, status_topic


def msgs(n: int, start: int = 0, key: str = "p/s"):
    return [("cems/v1/p/s/readings", orjson.dumps({"ts": i, "seq": i}), {"key": key, "next": i + 1, "seq": i})
            for i in range(start, start + n)]


def seqs(records) -> list[int]:
    return [orjson.loads(r.payload)["seq"] for r in records]


def test_append_ack_and_restart_keep_order(tmp_path):
    sp = Spool(tmp_path)
    ids = sp.append(msgs(5))
    assert ids == [0, 1, 2, 3, 4] and sp.pending_count == 5
    assert seqs(sp.pending_after(-1, 10)) == [0, 1, 2, 3, 4] and seqs(sp.pending_after(2, 10)) == [3, 4]
    sp.ack(1)  # out of order: nothing leaves before 0 does
    assert sp.pending_count == 5
    sp.ack(0)
    assert sp.pending_count == 3 and sp.next_unacked == 2
    sp.close()
    sp = Spool(tmp_path)  # a restart: what was not acknowledged is still there, in order
    assert seqs(sp.pending_after(-1, 10)) == [2, 3, 4] and sp.last_meta["p/s"]["next"] == 5
    assert sp.append(msgs(1, 5)) == [5]
    for i in range(2, 6):
        sp.ack(i)
    assert sp.pending_count == 0
    sp.close()
    assert Spool(tmp_path).pending_count == 0


def test_kill_without_saved_acks_sends_again(tmp_path, monkeypatch):
    """Acknowledgements saved lazily: after a kill some acknowledged messages go out once more (identical)."""
    monkeypatch.setattr("cems.ingest.edge.ACK_SAVE_S", 3600)
    sp = Spool(tmp_path)
    sp.append(msgs(3))
    sp._ack_saved_at = 1e18  # pretend we saved just now: the next acks are not written
    sp.ack(0)
    sp._lock_file.close()  # a kill: no close(), no flush_acks()
    assert seqs(Spool(tmp_path).pending_after(-1, 10)) == [0, 1, 2]


def test_torn_tail_is_cut(tmp_path, caplog):
    sp = Spool(tmp_path)
    sp.append(msgs(3))
    sp.close()
    seg = next(tmp_path.glob("seg-*.log"))
    data = seg.read_bytes()
    seg.write_bytes(data + data[: len(data) // 3 // 2])  # half a record more: a write cut by a crash
    sp = Spool(tmp_path)
    assert seqs(sp.pending_after(-1, 10)) == [0, 1, 2]
    assert "torn or corrupt record" in caplog.text and seg.read_bytes() == data
    assert sp.append(msgs(1, 3)) == [3]
    sp.close()
    assert seqs(Spool(tmp_path).pending_after(-1, 10)) == [0, 1, 2, 3]


def test_corrupt_record_cuts_from_there(tmp_path):
    sp = Spool(tmp_path)
    sp.append(msgs(3))
    sp.close()
    seg = next(tmp_path.glob("seg-*.log"))
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF  # the last record's body
    seg.write_bytes(bytes(data))
    assert seqs(Spool(tmp_path).pending_after(-1, 10)) == [0, 1]


def test_segments_roll_and_acknowledged_ones_are_deleted(tmp_path):
    sp = Spool(tmp_path, segment_bytes=4096)
    for i in range(0, 200, 10):
        sp.append(msgs(10, i))
    assert len(list(tmp_path.glob("seg-*.log"))) > 3
    for i in range(150):
        sp.ack(i)
    sp.flush_acks()
    assert len(list(tmp_path.glob("seg-*.log"))) <= 3
    sp.close()
    sp = Spool(tmp_path, segment_bytes=4096)
    assert seqs(sp.pending_after(-1, 100)) == list(range(150, 200))


def test_bounded(tmp_path, caplog):
    sp = Spool(tmp_path, max_bytes=2000, segment_bytes=500)
    taken = 0
    with pytest.raises(SpoolFull):
        for i in range(100):
            sp.append(msgs(1, i))
            taken += 1
    assert 5 < taken < 40 and "is full" in caplog.text
    assert sp.pending_count == taken
    for i in range(taken):
        sp.ack(i)
    sp.flush_acks()
    sp.append(msgs(1, taken))  # room again once acknowledged segments are gone


def test_one_process_per_spool(tmp_path):
    sp = Spool(tmp_path)
    with pytest.raises(RuntimeError, match="in use"):
        Spool(tmp_path)
    sp.close()


class FakeClient:
    """Just enough of paho: publish records, PUBACK on demand, callbacks as paho calls them."""

    def __init__(self, *a, **kw):
        self.published, self.will, self.mid = [], None, 0
        self.lock = threading.Lock()

    def username_pw_set(self, *a): ...
    def reconnect_delay_set(self, **kw): ...
    def reconnect(self): ...
    def max_queued_messages_set(self, n): ...
    def loop_start(self): ...
    def loop_stop(self): ...
    def disconnect(self): ...

    def will_set(self, topic, payload, qos, retain):
        self.will = (topic, orjson.loads(payload), qos, retain)

    def connect_async(self, host, port, keepalive):
        self.on_connect(self, None, None, mqtt.ReasonCode(mqtt.PacketTypes.CONNACK, identifier=0), None)

    def publish(self, topic, payload, qos=0, retain=False):
        with self.lock:
            self.mid += 1
            self.published.append((self.mid, topic, payload, retain))
            return mqtt.MQTTMessageInfo(self.mid)

    def puback_all(self):
        with self.lock:
            mids = [m for m, *_ in self.published]
        for m in mids:
            self.on_publish(self, None, m, None, None)


def test_gateway_sends_in_order_and_empties_the_spool_on_pubacks(tmp_path):
    sp = Spool(tmp_path)
    sp.append(msgs(3))  # from before a restart
    gw = EdgeGateway(MqttConfig(host="h", port=1), "p", "gw1", sp, client_factory=FakeClient)
    c = gw.client
    assert c.will == (status_topic("p", "gw1"), {"gw": "gw1", "status": "offline", "reason": "connection lost"},
                      1, True)
    gw.start()
    gw.submit(msgs(2, 3))
    import time

    deadline = time.monotonic() + 5
    while len(c.published) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    online = orjson.loads(c.published[0][2])
    assert c.published[0][1] == "cems/v1/p/_gateways/gw1/status" and c.published[0][3] is True
    assert online["status"] == "online" and online["buffered"] == 3
    assert [orjson.loads(p)["seq"] for _, _, p, _ in c.published[1:]] == [0, 1, 2, 3, 4]
    assert sp.pending_count == 5
    c.puback_all()
    assert gw.drain(5) and gw.published == 5
    gw.stop(drain_s=0)
    assert orjson.loads(c.published[-1][2])["status"] == "offline"
