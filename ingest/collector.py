"""The MQTT collector: a paho-mqtt 2.x client on a persistent session, QoS 1, manual acknowledgement.

Callbacks do nothing but hand messages to a bounded queue (backpressure: when the queue is full paho
stops reading and the broker holds the messages). A message is acknowledged (PUBACK) only once the intake
thread has journaled it on disk (`ingest/processor.py`, decision 0001), so a crash before that makes the
broker deliver it again.
"""

import logging
import queue
import struct
import threading
import time

import paho.mqtt.client as mqtt

from cems.config import MqttConfig, tls_context
from cems.ingest.pipeline import Message

log = logging.getLogger("cems.collector")
READINGS_FILTER = "cems/v1/+/+/readings"
REPORTED_FILTER = "cems/v1/+/+/reported"
_PUBACK = struct.Struct("!BBH")  # MQTT 3.1.1 PUBACK: type, remaining length 2, packet id


def topic_filters(plants: list[str] | None = None) -> tuple[str, ...]:
    """The subscriptions: every plant's readings and reported topics, or only those of `plants`."""
    if plants is None:
        return READINGS_FILTER, REPORTED_FILTER
    return tuple(f"cems/v1/{p}/+/{kind}" for p in plants for kind in ("readings", "reported"))


def mqtt_client(cfg: MqttConfig, client_id: str, max_delay_s: int = 30, client_factory=mqtt.Client,
                **kwargs) -> mqtt.Client:
    """A paho-mqtt 2.x client (callback API 2, MQTT 3.1.1) with the configured credentials and reconnect backoff."""
    client = client_factory(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, **kwargs)
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password)
    context = tls_context(cfg)
    if context is not None:
        client.tls_set_context(context)
    client.reconnect_delay_set(min_delay=1, max_delay=max_delay_s)
    _log_connect_failures(client, f"{'mqtts' if context else 'mqtt'}://{cfg.host}:{cfg.port}")
    return client


def _log_connect_failures(client: mqtt.Client, where: str) -> None:
    """Say why connecting fails (refused, unreachable, a certificate not trusted): paho retries quietly.

    One warning for each new reason, and again once it has gone on for a minute, not one per retry. The
    reason stays in `client.connect_error` (None once connected) for the health check."""
    reconnect = client.reconnect
    logged_at = [0.0]  # when the current reason was last logged
    client.connect_error = None

    def logged_reconnect():
        try:
            out = reconnect()
        except OSError as e:
            reason, now = str(e) or type(e).__name__, time.monotonic()
            if reason != client.connect_error or now - logged_at[0] >= 60:
                log.warning("cannot connect to the broker at %s: %s (retrying with backoff)", where, reason)
                logged_at[0] = now
            client.connect_error = reason
            raise
        client.connect_error = None
        return out

    client.reconnect = logged_reconnect


class BufferedClient(mqtt.Client):
    """paho's client, reading the socket in large chunks and handing messages straight to `on_message`.

    paho reads each packet with at least three `recv` calls (the type byte, each byte of the remaining
    length, the rest), and every `recv` lets go of the GIL: with the processor thread busy, paho's thread
    then waits for it again, three times a message. This client reads up to `RECV_BYTES` at once and
    serves paho's reads from that buffer, taking every packet already buffered in one `loop_read`; paho's
    own partial-packet handling and state are unchanged. A QoS 1 PUBLISH is parsed in place (paho's generic
    decoder unpacks it in three `struct` calls with formats built per packet, and formats a debug line
    whether or not anyone logs) and `on_message` is called directly: the collector sets no per-topic
    callbacks, so paho's topic matching for them (and its callback lock) per message is skipped.
    """

    RECV_BYTES = 1 << 16

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._rsock = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rsock is not self._sock:  # a new connection: nothing buffered belongs to it
            self._rbuf, self._rpos, self._rsock = b"", 0, self._sock
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(max(bufsize, self.RECV_BYTES))  # raises BlockingIOError when none
            if len(data) <= bufsize:
                return data  # all of it asked for (or b"": the connection is closed)
            self._rbuf, self._rpos = data, 0
        end = self._rpos + bufsize
        out = self._rbuf[self._rpos:end]
        self._rpos = min(end, len(self._rbuf))
        return out

    def buffered(self) -> int:
        """Bytes read from the socket and not yet parsed."""
        return len(self._rbuf) - self._rpos if self._rsock is self._sock else 0

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTT_ERR_SUCCESS and self._sock is not None and self.buffered():
            if self._in_packet["command"] == 0 and self._publishes_in_buffer():
                continue
            rc = self._packet_read()  # what is buffered is parsed now, not after the next select()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == mqtt.MQTT_ERR_AGAIN:  # a partial packet: the rest comes when the socket is readable
                return mqtt.MQTT_ERR_SUCCESS
        return rc

    def _publishes_in_buffer(self) -> int:
        """Deliver the QoS 1 PUBLISH packets lying whole at the head of the buffer without paho's byte-at-a-time
        reads; how many. Stops at anything else (another packet type, a packet not yet whole), which paho's
        own `_packet_read` then takes."""
        buf, pos, end, done = self._rbuf, self._rpos, len(self._rbuf), 0
        while pos + 2 <= end and buf[pos] & 0xF6 == 0x32:  # PUBLISH, QoS 1 (any dup and retain bits)
            length, mult, i = 0, 1, pos + 1
            while i < end and i < pos + 5:  # the remaining length: 1-4 bytes of 7 bits
                length += (buf[i] & 127) * mult
                mult *= 128
                i += 1
                if not buf[i - 1] & 128:
                    break
            else:
                break  # the length itself is not whole yet (or longer than 4 bytes: paho's error)
            if i + length > end or not self._deliver_publish(buf[pos], buf[i:i + length]):
                break
            pos = i + length
            done += 1
        if done:
            self._rpos = pos
            with self._msgtime_mutex:
                self._last_bytes_received = time.monotonic()
        return done

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        """A QoS 1 PUBLISH (MQTT 3.1.1, the collector's case) parsed in place; anything else as paho does."""
        if not self._deliver_publish(self._in_packet["command"], self._in_packet["packet"]):
            return super()._handle_publish()
        return mqtt.MQTT_ERR_SUCCESS

    def _deliver_publish(self, cmd: int, pkt) -> bool:
        """Hand a QoS 1 PUBLISH (fixed-header byte `cmd`, the rest `pkt`) to `on_message`; False, having done
        nothing, for anything paho should handle (another QoS, MQTT 5, an empty topic, a short packet)."""
        if (cmd & 0x06) != 0x02 or self._protocol == mqtt.MQTTv5 or len(pkt) < 5:
            return False
        end = 2 + int.from_bytes(pkt[0:2], "big")
        if end == 2 or len(pkt) < end + 2:
            return False
        message = mqtt.MQTTMessage(mid=int.from_bytes(pkt[end:end + 2], "big"), topic=bytes(pkt[2:end]))
        message.qos, message.dup, message.retain = 1, bool(cmd & 0x08), bool(cmd & 0x01)
        message.payload = bytes(pkt[end + 2:])
        message.timestamp = time.monotonic()
        self._handle_on_message(message)
        if not self._manual_ack:
            self._send_puback(message.mid)
        return True

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        on_message = self.on_message
        if on_message is not None:
            on_message(self, self._userdata, message)


class Collector:
    def __init__(self, cfg: MqttConfig, out: "queue.Queue[Message]",
                 topic_filters: tuple[str, ...] = (READINGS_FILTER, REPORTED_FILTER), client_factory=BufferedClient):
        self.cfg = cfg
        self.out = out
        self.topic_filters = topic_filters
        self.connected = threading.Event()
        self._stopping = threading.Event()
        self._refused: str | None = None
        self.client = mqtt_client(cfg, cfg.client_id, client_factory=client_factory, clean_session=False,
                                  manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    @property
    def error(self) -> str | None:
        """Why the broker cannot be reached or refused us, while that lasts."""
        return None if self.connected.is_set() else (self._refused or self.client.connect_error)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker %s:%s refused the connection: %s", self.cfg.host, self.cfg.port, reason_code)
            self._refused = f"refused: {reason_code}"
            return
        self._refused = None
        # The session is persistent, but subscribing again is harmless and covers a broker that lost it.
        client.subscribe([(f, 1) for f in self.topic_filters])
        self.connected.set()
        log.info("connected to %s:%s (session present: %s), subscribed to %s", self.cfg.host, self.cfg.port,
                 flags.session_present, ", ".join(self.topic_filters))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        log.warning("disconnected from the broker (%s); paho reconnects with backoff", reason_code)

    def _on_message(self, client, userdata, msg):
        m = Message(msg.topic, msg.payload, time.time(), msg.mid, msg.qos)
        # A full queue blocks paho's network thread (backpressure), but never past a stop: a message
        # dropped here was not acknowledged, so the broker delivers it again.
        while not self._stopping.is_set():
            try:
                self.out.put(m, timeout=0.5)
                return
            except queue.Full:
                continue

    def start(self) -> None:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        self._stopping.set()
        self.client.disconnect()
        self.client.loop_stop()

    def ack(self, msg: Message) -> None:
        if msg.qos > 0:
            self.client.ack(msg.mid, msg.qos)

    def ack_all(self, msgs: list[Message]) -> None:
        """Acknowledge a journaled batch: its PUBACKs in one write.

        paho's `ack()` queues each PUBACK as a packet of its own and wakes its network thread for each, a
        socket write and a thread switch per message; a batch's PUBACKs are one byte string of the same
        packets, queued once (paho 2.x writes any queued bytes whole, resuming partial writes).
        """
        mids = []
        for m in msgs:
            if m.qos == 1:
                mids.append(m.mid)
            elif m.qos > 1:
                self.ack(m)
        queue_packet = getattr(self.client, "_packet_queue", None)
        if len(mids) < 2 or queue_packet is None:
            for mid in mids:
                self.client.ack(mid, 1)
            return
        queue_packet(mqtt.PUBACK, b"".join([_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids]), 0, 0)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)
