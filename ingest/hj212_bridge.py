"""The HJ 212 bridge (DESIGN §3a): an asyncio TCP server for data loggers that republishes what they send
on the MQTT contract (DESIGN §3), so every reading takes the same path into the service.

Acknowledgement: a frame with the reply bit gets its 9014 only after the broker has acknowledged
(PUBACK, QoS 1) every message the frame produced; paho's network thread reports each PUBACK to the asyncio
loop with `call_soon_threadsafe`. While the broker is unreachable paho queues the messages and no 9014 goes
out, so the logger resends (duplicates are harmless: the service drops identical readings). Frames that
produce no message are answered at once. A frame with a bad length or CRC, an unknown MN or a wrong PW is
dropped, counted and logged, and never answered.

Bounds: a frame reader buffers at most one frame (`MAX_FRAME_BYTES`) per connection; each connection has
at most `max_pending` frames awaiting their PUBACKs (beyond that the bridge stops reading it, and TCP pushes
back on the logger); paho queues at most `max_queued` messages in all (beyond that frames are dropped
unanswered); connections idle for `idle_timeout_s` are closed; at most `max_connections` are served.
"""

import asyncio
import collections
import logging
import signal
import time
from dataclasses import dataclass, field

import orjson
import paho.mqtt.client as mqtt

from cems.config import Config, ConfigError, MqttConfig
from cems.ingest.collector import mqtt_client
from cems.ingest.hj212_codec import (
    CodecError,
    FrameReader,
    FramingError,
    Packet,
    RawFrame,
    decrypt_data,
    parse_cp,
    parse_data,
    reply_9013,
    reply_9014,
)
from cems.ingest.hj212_map import (
    INTERVAL_BY_CN,
    REALTIME_CN,
    DeviceContext,
    JoinError,
    MapError,
    SplitJoiner,
    device_contexts,
    join_cps,
    realtime_reading,
    reported_payload,
)

log = logging.getLogger("cems.hj212")
READ_BYTES = 65536
LOGGED_ERRORS_PER_CONNECTION = 20  # then one line per 100, so a noisy peer cannot flood the log


class QueueFull(Exception):
    """paho holds `max_queued` unacknowledged messages already."""


class PublishFailed(Exception):
    """The broker answered a PUBLISH with a failure reason code."""


class MqttPublisher:
    """One paho-mqtt 2.x client (QoS 1) whose `publish` returns an asyncio future resolved on PUBACK.

    paho keeps unacknowledged messages across reconnects and sends them again, so a future waits as long
    as the broker is away. The callback only hands the mid to the loop; the loop owns `_pending`.
    """

    def __init__(self, cfg: MqttConfig, loop: asyncio.AbstractEventLoop, client_id: str,
                 max_queued: int = 100_000, client_factory=mqtt.Client):
        self.cfg = cfg
        self._loop = loop
        self._pending: dict[int, asyncio.Future] = {}
        self.connected = False
        self.client = mqtt_client(cfg, client_id, max_delay_s=10, client_factory=client_factory)
        self.client.max_queued_messages_set(max_queued)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker %s:%s refused the connection: %s", self.cfg.host, self.cfg.port, reason_code)
            return
        self.connected = True
        log.info("connected to the broker %s:%s", self.cfg.host, self.cfg.port)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected = False
        if reason_code.is_failure:
            log.warning("disconnected from the broker (%s); paho reconnects, no 9014 until PUBACKs arrive",
                        reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        try:
            self._loop.call_soon_threadsafe(self._done, mid, reason_code.is_failure, str(reason_code))
        except RuntimeError:  # the loop is closed: the bridge is stopping and nobody waits any more
            pass

    def _done(self, mid: int, failed: bool, reason: str) -> None:
        fut = self._pending.pop(mid, None)
        if fut is None or fut.done():
            return
        if failed:
            fut.set_exception(PublishFailed(reason))
        else:
            fut.set_result(None)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes) -> asyncio.Future:
        info = self.client.publish(topic, payload, qos=1)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            raise QueueFull(f"{self.client.max_queued_messages} messages await their PUBACK")
        fut = self._loop.create_future()
        self._pending[info.mid] = fut
        return fut


@dataclass(eq=False)  # identity: connections live in a set
class Connection:
    peer: str
    writer: asyncio.StreamWriter
    slots: asyncio.Semaphore
    opened_s: float
    counters: collections.Counter = field(default_factory=collections.Counter)
    closed: bool = False
    errors_logged: int = 0


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:6000`` for IPv6) -> (host, port); ConfigError naming the key otherwise."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"hj212.listen: {listen!r} is not host:port")
    return host, int(port)


class Bridge:
    """The TCP server and its per-frame handling; `status()` reports counters and each logger's edition."""

    def __init__(self, cfg: Config, idle_timeout_s: float = 600.0, max_connections: int = 256,
                 max_pending: int = 256, max_queued: int = 100_000, status_every_s: float = 60.0,
                 publisher_factory=MqttPublisher, clock=time.time):
        if cfg.hj212 is None:
            raise ConfigError("no [hj212] section: the bridge needs listen and [[hj212.devices]]")
        if not cfg.hj212.devices:
            raise ConfigError("hj212.devices: none configured, so every frame would be refused")
        self.cfg = cfg
        self.host, self.port = parse_listen(cfg.hj212.listen)
        self.devices: dict[str, DeviceContext] = device_contexts(cfg)
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.max_pending = max_pending
        self.max_queued = max_queued
        self.status_every_s = status_every_s
        self._publisher_factory = publisher_factory
        self._clock = clock
        self.counters: collections.Counter = collections.Counter()
        self.device_status: dict[str, dict] = {}
        self._joiner = SplitJoiner()
        self._conns: set[Connection] = set()
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.Server | None = None
        self.publisher: MqttPublisher | None = None

    # --- life cycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.publisher = self._publisher_factory(self.cfg.mqtt, loop, f"{self.cfg.mqtt.client_id}-hj212",
                                                 max_queued=self.max_queued)
        self.publisher.start()
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=READ_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        self._spawn(self._housekeeping())
        log.info("listening for HJ 212 data loggers on %s:%s (%d device(s))", self.host, self.port,
                 len(self.devices))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in list(self._conns):
            c.writer.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self.publisher is not None:
            self.publisher.stop()
        log.info("stopped: %s", dict(self.counters))

    def status(self) -> dict:
        """Counters, open connections, frames awaiting PUBACK and each device's edition (call on the loop)."""
        return {"counters": dict(self.counters), "connections": len(self._conns),
                "broker_connected": bool(self.publisher and self.publisher.connected),
                "awaiting_puback": self.publisher.pending if self.publisher else 0,
                "split_sets": len(self._joiner), "devices": {mn: dict(s) for mn, s in self.device_status.items()}}

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _housekeeping(self) -> None:
        last_status = self._clock()
        while True:
            await asyncio.sleep(min(self.status_every_s, 30.0))
            for mn, qn in self._joiner.expire(self._clock()):
                self.counters["split_expired"] += 1
                log.warning("MN %s: split upload QN %s incomplete after 10 minutes, dropped", mn, qn)
            if self._clock() - last_status >= self.status_every_s:
                last_status = self._clock()
                log.info("status: %d connection(s), %s", len(self._conns), dict(self.counters))

    # --- connections ------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        addr = writer.get_extra_info("peername")
        peer = f"{addr[0]}:{addr[1]}" if addr else "unknown peer"
        if len(self._conns) >= self.max_connections:
            self.counters["connections_refused"] += 1
            log.warning("%s: refused, %d connections open already", peer, len(self._conns))
            writer.close()
            return
        conn = Connection(peer, writer, asyncio.Semaphore(self.max_pending), self._clock())
        self._conns.add(conn)
        self.counters["connections"] += 1
        log.info("%s: connected", peer)
        frames = FrameReader()
        why = "closed by the logger"
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(READ_BYTES), self.idle_timeout_s)
                except TimeoutError:
                    why = f"idle for {self.idle_timeout_s:g} s"
                    break
                if not chunk:
                    break
                conn.counters["bytes"] += len(chunk)
                for item in frames.feed(chunk):
                    if isinstance(item, FramingError):
                        self._error(conn, "framing_errors", f"{item.reason} (starts {item.head!r})")
                    else:
                        try:
                            await self._frame(conn, item)
                        except Exception:  # a bug must not take the connection or the server down
                            self.counters["internal_errors"] += 1
                            log.exception("%s: internal error on a frame; dropped, not answered", peer)
        except (ConnectionError, OSError) as e:
            why = f"connection error: {e}"
        finally:
            conn.closed = True
            self._conns.discard(conn)
            writer.close()
            conn.counters["skipped_bytes"] = frames.skipped_bytes
            log.info("%s: %s after %.0f s; %s", peer, why, self._clock() - conn.opened_s, dict(conn.counters))

    def _error(self, conn: Connection, kind: str, detail: str) -> None:
        conn.counters[kind] += 1
        self.counters[kind] += 1
        conn.errors_logged += 1
        n = conn.errors_logged
        if n <= LOGGED_ERRORS_PER_CONNECTION or n % 100 == 0:
            log.warning("%s: dropped, not answered: %s [%s #%d on this connection]", conn.peer, detail, kind, n)

    def _send(self, conn: Connection, data: bytes, kind: str) -> None:
        if conn.closed or conn.writer.is_closing():
            self.counters["replies_lost"] += 1
            return
        conn.writer.write(data)
        conn.counters[kind] += 1
        self.counters[kind] += 1

    # --- frames -----------------------------------------------------------------------------------------

    async def _frame(self, conn: Connection, raw: RawFrame) -> None:
        try:
            p = parse_data(raw.data)
        except CodecError as e:
            return self._error(conn, "bad_packets", str(e))
        ctx = self.devices.get(p.mn)
        if ctx is None:
            return self._error(conn, "unknown_mn", f"unknown MN {p.mn!r}")
        if p.pw != ctx.device.password:
            return self._error(conn, "bad_pw", f"MN {p.mn}: wrong PW")
        if p.encrypted:
            if not ctx.device.sm4_key:
                return self._error(conn, "no_key", f"MN {p.mn}: encrypted CP but no sm4_key configured")
            try:
                p = parse_data(decrypt_data(raw.data, raw.crc, ctx.device.sm4_key))
            except CodecError as e:
                return self._error(conn, "decrypt_errors", f"MN {p.mn}: {e}")
        conn.counters["frames"] += 1
        self.counters["frames"] += 1
        self._seen(conn, p, ctx)
        if p.cn == "9015":  # 2025 heartbeat
            return self._send(conn, reply_9013(p), "replies_9013")
        if p.cn.startswith("9"):  # answers and notices from the logger: nothing to acknowledge
            return None
        packets = [(conn, p)]
        if p.split:
            try:
                joined = self._joiner.add((p.mn, p.qn), p.pno, p.pnum, (conn, p), self._clock())
            except JoinError as e:
                return self._error(conn, "bad_packets", f"MN {p.mn} QN {p.qn}: {e}")
            if joined is None:
                return None
            packets = joined
        try:
            cp = join_cps([parse_cp(q.cp) for _, q in packets])
            messages = self._messages(p.cn, cp, p.mn, ctx)
        except MapError as e:
            return self._error(conn, "bad_content", f"MN {p.mn} CN {p.cn}: {e}")
        if cp.malformed:
            log.warning("%s: MN %s: CP items without '=' skipped: %s", conn.peer, p.mn, cp.malformed[:5])
        if not messages:
            return self._answer(packets)
        await conn.slots.acquire()
        try:
            futures = [self.publisher.publish(topic, payload) for topic, payload in messages]
        except QueueFull as e:
            conn.slots.release()
            return self._error(conn, "queue_full", str(e))
        self.counters["published"] += len(futures)
        self._spawn(self._answer_after_puback(conn, packets, futures))

    def _seen(self, conn: Connection, p: Packet, ctx: DeviceContext) -> None:
        s = self.device_status.setdefault(p.mn, {"plant": ctx.device.plant, "stack": ctx.device.stack,
                                                 "edition": None, "frames": 0})
        if s["edition"] != p.edition:
            log.info("%s: MN %s (%s/%s) speaks %s", conn.peer, p.mn, ctx.device.plant, ctx.device.stack,
                     p.edition)
        s.update(edition=p.edition, peer=conn.peer, last_seen=self._clock(), frames=s["frames"] + 1)
        if p.rf:
            self.counters["resent_rf"] += 1

    def _messages(self, cn: str, cp, mn: str, ctx: DeviceContext) -> list[tuple[str, bytes]]:
        if cn == REALTIME_CN:
            reading = realtime_reading(cp, mn, ctx)
            if reading is None:
                # Answered at once (DESIGN §3a), so say so loudly: a logger still on HJ/T 212-2005 codes
                # (B02, S01, ...) would otherwise lose its data without anyone noticing.
                self.counters["realtime_without_mapped_codes"] += 1
                if not self.device_status[mn].get("warned_unmapped"):
                    self.device_status[mn]["warned_unmapped"] = True
                    log.warning("MN %s: real-time data with none of the mapped codes (sent: %s); answered, "
                                "nothing published", mn, ", ".join(sorted(cp.codes)[:10]) or "no codes")
                return []
            return [(ctx.readings_topic, orjson.dumps(reading))]
        if cn in INTERVAL_BY_CN:
            return [(ctx.reported_topic, orjson.dumps(reported_payload(cn, cp, mn, ctx.tz)))]
        return []

    def _answer(self, packets: list[tuple[Connection, Packet]]) -> None:
        for conn, q in packets:
            if q.reply_wanted:
                self._send(conn, reply_9014(q), "replies_9014")

    async def _answer_after_puback(self, conn: Connection, packets, futures: list[asyncio.Future]) -> None:
        try:
            await asyncio.gather(*futures)
        except PublishFailed as e:
            self._error(conn, "publish_failed", f"broker refused a message: {e}")
            return
        finally:
            conn.slots.release()
        self.counters["delivered"] += len(futures)
        self._answer(packets)


async def _run(cfg: Config) -> None:
    bridge = Bridge(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await bridge.start()
    print(f"hj212: listening on {bridge.host}:{bridge.port}, publishing to {cfg.mqtt.host}:{cfg.mqtt.port}",
          flush=True)
    await stop.wait()
    await bridge.stop()


def run_bridge(cfg: Config) -> int:
    """`cems hj212 --config FILE`: serve until SIGINT or SIGTERM."""
    asyncio.run(_run(cfg))
    return 0
