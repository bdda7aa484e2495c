"""The HJ 212 bridge on real parts (DESIGN §3a): data loggers over TCP -> bridge -> mosquitto -> service -> API.

The bridge runs in-process on its own asyncio loop in a thread, on a free port, with the config of the
integration service plus an `[hj212]` section. Loggers are `SimLogger`s or raw sockets in the test.
"""

import asyncio
import datetime as dt
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from cems import localservices as ls
from cems.config import load_config
from cems.ingest.hj212_bridge import Bridge
from cems.ingest.hj212_codec import FrameReader, Packet, RawFrame, build_cp, build_frame, parse_data
from cems.ingest.hj212_map import device_contexts
from cems.ingest.hj212_sim import SimLogger, interval_cp, local_stamp, logger_values, realtime_cp
from tests.conftest import close
from tests.integration.conftest import STACKS, Running, publish, wait_for, write_config
from tests.integration.test_end_to_end import K1, check_hours, day_start, wait_hours

pytestmark = pytest.mark.integration
MN_K1 = "88888880000001"  # HJ 212-2017 logger on it/k1: flow m3/s, gauge pressure in Pa, CO2 in %
MN_K2 = "88888880000002"  # HJ 212-2025 logger on it/k2, SM4-encrypted
KEY_K2 = "0123456789abcdeffedcba9876543210"
HJ212 = f"""
[hj212]
listen = "127.0.0.1:0"
ambient_kpa = 101.325

[[hj212.devices]]
mn = "{MN_K1}"
password = "123456"
plant = "it"
stack = "k1"
co2_unit = "pct"
pressure = "gauge"
flow_unit = "m3_s"
pressure_unit = "Pa"

[[hj212.devices]]
mn = "{MN_K2}"
password = "654321"
plant = "it"
stack = "k2"
sm4_key = "{KEY_K2}"
"""
TZ = dt.timezone(dt.timedelta(hours=8))


class BridgeThread:
    """A `Bridge` on its own event loop in a daemon thread; `status()` is read on that loop."""

    def __init__(self, config_path: Path, **kw):
        self.cfg = load_config(config_path)
        self.loop = asyncio.new_event_loop()
        self.bridge = Bridge(self.cfg, **kw)
        started = asyncio.run_coroutine_threadsafe(self.bridge.start(), self.loop)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        started.result(30)
        self.port = self.bridge.port

    def status(self) -> dict:
        async def read():
            return self.bridge.status()
        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.bridge.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class TcpLogger:
    """A bare socket logger: sends bytes, collects the answers (parsed packets) the bridge writes back."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), 5)
        self.frames = FrameReader()
        self.answers: list[Packet] = []
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return
        self.eof = not chunk
        self.answers += [parse_data(x.data) for x in self.frames.feed(chunk) if isinstance(x, RawFrame)]

    def wait_answer(self, qn: str, timeout: float = 30, count: int = 1) -> Packet:
        """The answer to QN `qn`, once `count` of them have arrived."""
        def found():
            self._read(0.05)
            mine = [a for a in self.answers if a.qn == qn]
            return mine[0] if len(mine) >= count else None
        return wait_for(found, timeout, f"{count} answer(s) to QN {qn}")

    def close(self) -> None:
        self.sock.close()


def hj212_config(base: Path, out: Path, mqtt_port: int | None = None) -> Path:
    """The integration service's config plus the [hj212] section (optionally another broker port)."""
    text = base.read_text()
    if mqtt_port is not None:
        cfg = load_config(base)
        text = text.replace(f"port = {cfg.mqtt.port}\n", f"port = {mqtt_port}\n", 1)
    out.write_text(text + HJ212)
    return out


def base_config(backends, tmp_path: Path) -> Path:
    name = "hj_" + uuid.uuid4().hex[:10]
    return write_config(tmp_path / "base.toml", backends, ls.free_port(), tmp_path / "data", name, f"cems-{name}")


@pytest.fixture
def twin_service(backends, tmp_path):
    """The integration service with one more flow-meter stack, k3, the MQTT twin of the HJ 212 logger on k1
    (a separate stack, so substitution across the two windows cannot couple them)."""
    name = "hj_" + uuid.uuid4().hex[:10]
    api_port = ls.free_port()
    plants = STACKS + '\n[[plants.stacks]]\nid = "k3"\nname = "Flow meter stack, MQTT twin"\n'
    cfg = write_config(tmp_path / "cems.toml", backends, api_port, tmp_path / "data", name, f"cems-{name}", plants)
    run = Running(backends, cfg, api_port, tmp_path / "data", name, tmp_path / "service.log")
    run.start()
    yield run
    run.stop()


@pytest.fixture
def bridge(twin_service, tmp_path):
    b = BridgeThread(hj212_config(twin_service.config, tmp_path / "hj212.toml"))
    yield b
    b.stop()


@pytest.fixture
def bridge_only(backends, tmp_path):
    """A bridge on the session broker without a running service (for protocol behaviour)."""
    b = BridgeThread(hj212_config(base_config(backends, tmp_path), tmp_path / "hj212.toml"), idle_timeout_s=2.0)
    yield b
    b.stop()


def k1_logger(b: BridgeThread, edition: str = "2017") -> SimLogger:
    dev = next(d for d in b.cfg.hj212.devices if d.mn == MN_K1)
    return SimLogger("127.0.0.1", b.port, dev, device_contexts(b.cfg)[MN_K1].tz, edition, timeout_s=10, retries=2)


def flag_for(h: int, m: int) -> str:
    """The flag pattern of test_end_to_end's stream: hour 1 minutes 0-14 stopped, hour 2 from minute 44 fault."""
    if h == 1 and m < 15:
        return "F"
    if h == 2 and m >= 44:
        return "D"
    return "N"


def test_three_hours_over_hj212_equal_the_same_over_mqtt(twin_service, bridge):
    """12 real-time frames per minute for three hours two days ago, each sent until its 9014 arrives; the
    same readings over MQTT on the twin stack k3. The hours agree with each other and with the closed form."""
    start = day_start()
    t0 = int(start.timestamp())
    ctx = device_contexts(bridge.cfg)[MN_K1]
    values = logger_values(K1, ctx)
    assert set(values) == {"a00000", "a05001", "a01012", "a01013", "a01006", "a01014", "a19001"}
    times = [(t0 + h * 3600 + m * 60 + s, flag_for(h, m)) for h in range(3) for m in range(60) for s in range(0, 60, 5)]

    async def send_all(logger: SimLogger) -> list[bool]:
        try:
            return [await logger.send(logger.packet("2011", realtime_cp(t, values, dict.fromkeys(values, flag),
                                                                        ctx.tz), time.time()))
                    for t, flag in times]
        finally:
            await logger.close()

    logger = k1_logger(bridge)
    assert all(asyncio.run(send_all(logger)))
    assert (logger.acked, logger.failed) == (len(times), 0)

    msgs = []
    for i in range(0, len(times), 12):
        minute = times[i:i + 12]
        body = {"ts": [t for t, _ in minute], **K1, "status": minute[0][1], "gw": "mqtt", "seq": i}
        msgs.append(("cems/v1/it/k3/readings", json.dumps(body)))
    publish(twin_service.backends.mqtt_port, msgs)

    over_hj212 = wait_hours(twin_service, "k1", start)
    over_mqtt = wait_hours(twin_service, "k3", start)
    check_hours(over_hj212, "k1")
    check_hours(over_mqtt, "k1")  # the same expectations: K1's values, the same flags
    for a, b in zip(over_hj212, over_mqtt, strict=True):
        figures = ("co2_t", "co2_mg_m3", "qsn_m3_h")
        assert {k: v for k, v in a.items() if k not in figures} == {k: v for k, v in b.items() if k not in figures}
        for k in figures:
            assert (a[k] is None and b[k] is None) or close(a[k], b[k], rel=1e-12), (k, a, b)
    rows = twin_service.influx_query(f"SELECT count(co2_pct) FROM reading WHERE gw = '{MN_K1}'")
    assert rows[0]["count"] == len(times)
    s = bridge.status()
    assert s["counters"]["replies_9014"] == len(times) and s["counters"]["delivered"] == len(times)
    assert s["devices"][MN_K1]["edition"] == "HJ 212-2017"


class Sub:
    """An MQTT subscriber that is ready (SUBACK received) when constructed and subscribes again on every
    connect; `persistent` keeps its session (and the messages queued for it) across broker restarts."""

    def __init__(self, port: int, topic: str, persistent: bool = False):
        self.messages: list[bytes] = []
        subscribed = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"it-sub-{uuid.uuid4().hex[:8]}",
                             clean_session=not persistent)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.c.on_message = lambda c, u, m: self.messages.append(m.payload)
        self.c.reconnect_delay_set(min_delay=1, max_delay=2)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert subscribed.wait(10), f"no SUBACK for {topic}"

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def packet_k1(qn: str, cn: str = "2011", pw: str = "123456", mn: str = MN_K1, flag: int = 5, **kw) -> Packet:
    t = int(day_start().timestamp())
    cp = build_cp({"DataTime": local_stamp(t, TZ)}, {"a01012": {"Rtd": "50.0", "Flag": "N"}})
    return Packet(cn=cn, mn=mn, pw=pw, cp=cp, qn=qn, st="32", flag=flag, **kw)


def realtime_answered(port: int, qn: str) -> None:
    """A real-time frame for k1 sent to the bridge on `port` is answered 9014 (which follows the broker's PUBACK)."""
    lg = TcpLogger(port)
    try:
        p = packet_k1(qn)
        lg.send(build_frame(p))
        assert lg.wait_answer(p.qn).cn == "9014"
    finally:
        lg.close()


def test_bad_frames_are_refused_counted_and_never_answered(bridge_only):
    lg = TcpLogger(bridge_only.port)
    try:
        good = build_frame(packet_k1("20250101080000001"))
        bad_crc = build_frame(packet_k1("20250101080000002"))[:-6] + b"0000\r\n"
        wrong_pw = build_frame(packet_k1("20250101080000003", pw="000000"))
        unknown_mn = build_frame(packet_k1("20250101080000004", mn="99999999999999"))
        no_key = build_frame(packet_k1("20250101080000005", flag=9), KEY_K2)  # k1's device has no key
        too_long = b"##2000" + b"x" * 50 + b"\r\n"
        lg.send(bad_crc + wrong_pw + too_long + unknown_mn + no_key + good)
        lg.wait_answer("20250101080000001")
        # Refused frames are dropped on arrival; an answer to any of them would have come before this one.
        assert [a.qn for a in lg.answers] == ["20250101080000001"]
        assert lg.answers[0].cn == "9014" and lg.answers[0].flag == 4
        c = bridge_only.status()["counters"]
        assert (c["framing_errors"], c["bad_pw"], c["unknown_mn"], c["no_key"]) == (2, 1, 1, 1)
        assert c["frames"] == 1 and c["replies_9014"] == 1
    finally:
        lg.close()


def test_split_heartbeat_rf_and_frames_without_messages(bridge_only):
    lg = TcpLogger(bridge_only.port)
    sub = Sub(bridge_only.cfg.mqtt.port, "cems/v1/it/k1/readings")
    try:
        t = int(day_start().timestamp()) + 7
        part = [build_cp({"DataTime": local_stamp(t, TZ)}, {"a01012": {"Rtd": "50.5", "Flag": "N"}}),
                build_cp({"DataTime": local_stamp(t, TZ)}, {"a05001": {"Rtd": "12.5", "Flag": "M"}})]
        qn = "20250101080000010"
        lg.send(b"".join(build_frame(Packet(cn="2011", mn=MN_K1, pw="123456", cp=part[i - 1], qn=qn, st="32",
                                            flag=7, pnum=2, pno=i)) for i in (2, 1)))
        lg.wait_answer(qn, count=2)  # each packet is answered once the joined reading is acknowledged
        [payload] = wait_for(lambda: [m for m in sub.messages if json.loads(m)["ts"] == t], 10, "the joined reading")
        assert json.loads(payload) == {"ts": t, "temp_c": 50.5, "co2_pct": 12.5, "status": "M", "gw": MN_K1}

        # 2025 heartbeat -> 9013 at once; 2025 re-sent data (RF=1) is mapped like any other
        beat = Packet(cn="9015", mn=MN_K1, pw="123456", cp="", qn="20250101080000011", st="32", flag=9)
        lg.send(build_frame(beat))
        answer = lg.wait_answer(beat.qn)
        assert (answer.cn, answer.flag) == ("9013", 8)
        resent = packet_k1("20250101080000012", flag=9, rf=True)
        lg.send(build_frame(resent))
        assert lg.wait_answer(resent.qn).flag == 8
        s = bridge_only.status()
        assert s["devices"][MN_K1]["edition"] == "HJ 212-2025" and s["counters"]["resent_rf"] == 1
        # a frame that produces no MQTT message (CN 2021 status, no mapped codes) is answered at once
        status_only = Packet(cn="2021", mn=MN_K1, pw="123456", cp="DataTime=20250101080000;i12001-Info=1",
                             qn="20250101080000013", st="32", flag=5)
        lg.send(build_frame(status_only))
        assert lg.wait_answer(status_only.qn).cn == "9014"
        # real-time data in HJ/T 212-2005 codes only: nothing to publish, answered at once, but counted
        old_codes = Packet(cn="2011", mn=MN_K1, pw="123456", qn="20250101080000014", st="32", flag=5,
                           cp="DataTime=20250101080000;B02-Rtd=361.1,B02-Flag=N;S03-Rtd=50.0,S03-Flag=N")
        lg.send(build_frame(old_codes))
        assert lg.wait_answer(old_codes.qn).cn == "9014"
        assert bridge_only.status()["counters"]["realtime_without_mapped_codes"] == 1
        assert bridge_only.status()["devices"][MN_K1]["edition"] == "HJ 212-2017"  # the latest frame's
    finally:
        sub.close()
        lg.close()


def test_idle_connection_is_closed(bridge_only):
    lg = TcpLogger(bridge_only.port)
    try:
        wait_for(lambda: lg._read(0.2) or lg.eof, 15, "the bridge to close an idle connection")
    finally:
        lg.close()


def test_hour_frame_goes_to_the_reported_topic_encrypted_2025(backends, bridge_only):
    sub = Sub(backends.mqtt_port, "cems/v1/it/k2/reported")
    dev = next(d for d in bridge_only.cfg.hj212.devices if d.mn == MN_K2)
    start = int(day_start().timestamp())
    samples = {"a01011": [14.0, 14.5], "a05001": [13.0, 13.25], "a00000": [400.0, 410.0]}
    logger = SimLogger("127.0.0.1", bridge_only.port, dev, device_contexts(bridge_only.cfg)[MN_K2].tz, "2025",
                       timeout_s=10, retries=1)

    async def send():
        try:
            p = logger.packet("2061", interval_cp(start, samples, 3600, logger.tz), time.time())
            frames = logger.encode(p)  # encrypted, the CP no longer fits one packet: a split upload
            assert len(frames) > 1 and all(b"CP=&&{0x" in f and b"a05001" not in f for f in frames)
            return await logger.send(p, frames)
        finally:
            await logger.close()

    try:
        assert asyncio.run(send())
        [payload] = wait_for(lambda: sub.messages, 10, "the reported hour")
    finally:
        sub.close()
    body = json.loads(payload)
    assert body["interval"] == "hour" and body["start"] == start and body["gw"] == MN_K2
    assert body["values"]["a05001"] == {"Avg": 13.125, "Cou": None, "Min": 13.0, "Max": 13.25, "Flag": "N"}
    assert body["values"]["a00000"] == {"Avg": 405.0, "Cou": 405.0 * 3600, "Min": 400.0, "Max": 410.0, "Flag": "N"}
    assert set(body["values"]) == set(samples)


def test_no_9014_while_the_broker_is_down_then_delivery_and_9014(backends, tmp_path, broker_dir):
    """A private mosquitto, so the session broker of the other tests is never disturbed."""
    wd = broker_dir
    port = ls.free_port()
    broker = ls.start_mosquitto(wd, port)
    b = BridgeThread(hj212_config(base_config(backends, tmp_path), tmp_path / "hj212.toml", mqtt_port=port))
    sub = Sub(port, "cems/v1/it/k1/readings", persistent=True)
    lg = TcpLogger(b.port)
    try:
        wait_for(lambda: b.status()["broker_connected"], 15, "the bridge to connect")
        before = packet_k1("20250101080000020")
        lg.send(build_frame(before))
        lg.wait_answer(before.qn)
        wait_for(lambda: sub.messages, 10, "the first reading")

        broker.stop()
        wait_for(lambda: not b.status()["broker_connected"], 15, "the bridge to notice the broker is gone")
        during = packet_k1("20250101080000021")
        lg.send(build_frame(during))
        wait_for(lambda: b.status()["awaiting_puback"] == 1, 10, "the frame to be taken and queued")
        lg._read(1.0)  # an answer now would be wrong: give one a fair chance to show up
        assert during.qn not in [a.qn for a in lg.answers]
        assert b.status()["counters"]["frames"] == 2 and b.status()["counters"].get("replies_9014") == 1

        broker = ls.start_mosquitto(wd, port)
        answer = lg.wait_answer(during.qn, timeout=60)
        assert answer.cn == "9014"
        wait_for(lambda: len(sub.messages) >= 2, 30, "the reading sent while the broker was down")
        assert json.loads(sub.messages[-1])["gw"] == MN_K1
        assert b.status()["awaiting_puback"] == 0
    finally:
        lg.close()
        sub.close()
        b.stop()
        broker.stop()


def test_cli_runs_the_bridge(backends, tmp_path):
    """`cems hj212 --config FILE` as a process: listens, answers, stops on SIGTERM."""
    cfg_path = hj212_config(base_config(backends, tmp_path), tmp_path / "hj212.toml")
    bport = ls.free_port()
    cfg_path.write_text(cfg_path.read_text().replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{bport}"'))
    log = tmp_path / "bridge.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "cems.cli", "hj212", "--config", str(cfg_path)],
                                stdout=f, stderr=subprocess.STDOUT)
    try:
        ls.wait_port(bport, proc)
        realtime_answered(bport, "20250101080000030")
    finally:
        proc.terminate()
        assert proc.wait(20) == 0, log.read_text()
    assert "listening" in log.read_text()


class FakePublisher:
    """Stands in for `MqttPublisher` (injected through `publisher_factory`): the test settles each PUBACK."""

    def __init__(self, cfg, loop, client_id, max_queued):
        self.loop, self.max_queued, self.connected = loop, max_queued, True
        self.futures: list = []

    @property
    def pending(self) -> int:
        return sum(not f.done() for f in self.futures)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def publish(self, topic, payload):
        from cems.ingest.hj212_bridge import QueueFull

        if self.pending >= self.max_queued:
            raise QueueFull("full")
        self.futures.append(self.loop.create_future())
        return self.futures[-1]


def test_answers_follow_pubacks_and_broker_refusals_are_not_answered(backends, tmp_path):
    """With the broker's answers in the test's hands: a 9014 only after the PUBACK, none after a refusal or
    when the queue is full."""
    from cems.ingest.hj212_bridge import PublishFailed

    cfg_path = hj212_config(base_config(backends, tmp_path), tmp_path / "hj212.toml")
    b = BridgeThread(cfg_path, publisher_factory=FakePublisher, max_queued=2)
    pub = b.bridge.publisher
    lg = TcpLogger(b.port)
    try:
        first, second, third = (packet_k1(f"2025010108000004{i}") for i in range(3))
        lg.send(build_frame(first) + build_frame(second) + build_frame(third))
        wait_for(lambda: b.status()["counters"].get("queue_full") == 1, 10, "the third frame to meet a full queue")
        lg._read(0.2)
        assert lg.answers == []  # nothing acknowledged by the "broker" yet
        b.loop.call_soon_threadsafe(pub.futures[1].set_exception, PublishFailed("Not authorized"))
        wait_for(lambda: b.status()["counters"].get("publish_failed") == 1, 10, "the refusal")
        b.loop.call_soon_threadsafe(pub.futures[0].set_result, None)
        assert lg.wait_answer(first.qn).cn == "9014"
        lg._read(0.2)
        assert [a.qn for a in lg.answers] == [first.qn]
    finally:
        lg.close()
        b.stop()
