"""The edge gateway's publisher: an on-disk store-and-forward spool in front of an MQTT QoS 1 client.

A message (topic + payload, already the contract's JSON) is first appended to the spool, fsync'd, and only
then published; it leaves the spool once the broker's PUBACK for it has come. While the broker is
unreachable, messages pile up on disk; on reconnect they go out in the order they were taken. A gateway
killed mid-run and started again on the same spool directory sends what it had not got acknowledged first,
in order, with the same bytes (same `gw` and `seq`), so the service sees at most identical duplicates,
which it drops (DESIGN §3, principle 2: at-least-once in, exactly-once in effect).

Spool layout (one directory, one gateway, held by an exclusive `flock`):
- `seg-<first record id>.log`: records `MAGIC len crc32 body`, body = JSON header line + payload. A torn
  record at the end (a write cut by a crash) is cut off at start-up, with a warning;
- `acked`: the id of the first record not yet acknowledged (written by atomic rename). Acknowledged
  records may be sent once more after a kill (the pointer is saved at most every `ACK_SAVE_S`); that is
  the at-least-once side, and the service drops the identical copy.
The spool is bounded (`max_bytes`): `append` then raises `SpoolFull` and logs it once, and the caller
decides (the simulator stops taking readings until there is room; it backfills them afterwards).

Status (DESIGN §3 extension): `cems/v1/{plant}/_gateways/{gw}/status`, retained, QoS 1. The MQTT last
will is `{"gw", "status": "offline", "reason": "connection lost"}`; on every connect the gateway publishes
`{"gw", "status": "online", "since", "buffered"}`; a clean stop publishes `offline` with `"reason": "stopped"`.
"""

import datetime as dt
import fcntl
import itertools
import logging
import os
import queue
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt

from cems.config import MqttConfig
from cems.ingest.collector import mqtt_client

log = logging.getLogger("cems.edge")
MAGIC = b"\xce\x5a"
HEADER = struct.Struct("<2sII")  # magic, body length, crc32(body)
MAX_RECORD = 1 << 20  # a contract payload is at most 256 KiB; anything larger in a header is garbage
ACK_SAVE_S = 0.2


class SpoolFull(Exception):
    """The spool holds `max_bytes` already: the message was not taken."""


@dataclass
class Record:
    id: int
    topic: str
    payload: bytes
    meta: dict


@dataclass
class _Entry:
    id: int
    segment: Path
    offset: int
    size: int


def status_topic(plant: str, gw: str) -> str:
    return f"cems/v1/{plant}/_gateways/{gw}/status"


class Spool:
    """Append-only, fsync'd, acknowledged-in-order message store in `directory` (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int = 1 << 30, segment_bytes: int | None = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(4096, min(16 << 20, max_bytes // 8))
        self._lock_file = open(self.dir / "lock", "a+b")  # noqa: SIM115 - held for the spool's lifetime
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise RuntimeError(f"spool {self.dir} is in use by another gateway process") from None
        self._mutex = threading.Lock()
        self._pending: deque[_Entry] = deque()  # not yet acknowledged, in id order
        self._acked_ahead: set[int] = set()  # acknowledged out of order
        self.last_meta: dict[str, dict] = {}  # newest header `meta` per `meta["key"]`, over every record on disk
        self._full_logged = False
        self._ack_saved_at = 0.0
        self._ack_dirty = False
        self.next_unacked = self._read_acked()
        self.next_id = self.next_unacked
        self._bytes = 0
        self._segments: list[tuple[int, Path]] = []
        for seg in sorted(self.dir.glob("seg-*.log")):
            self._load_segment(seg)
        if self._segments:
            self._active = open(self._segments[-1][1], "ab")  # noqa: SIM115
        else:
            self._active = self._new_segment()
        self._drop_acked_segments()

    # ---- opening ---------------------------------------------------------------------------------
    def _read_acked(self) -> int:
        try:
            return int((self.dir / "acked").read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    def _load_segment(self, seg: Path) -> None:
        first = int(seg.stem.split("-", 1)[1])
        data = seg.read_bytes()
        rid, pos = first, 0
        while pos < len(data):
            rec = _decode(data, pos)
            if rec is None:
                log.warning("spool %s: torn or corrupt record at byte %d; cutting %d byte(s) off (a write "
                            "interrupted by a crash; that message had not been sent)", seg.name, pos, len(data) - pos)
                with open(seg, "r+b") as f:
                    f.truncate(pos)
                    f.flush()
                    os.fsync(f.fileno())
                break
            header, _payload, size = rec
            if header.get("meta", {}).get("key") is not None:
                self.last_meta[header["meta"]["key"]] = header["meta"]
            if rid >= self.next_unacked:
                self._pending.append(_Entry(rid, seg, pos, size))
            rid += 1
            pos += size
        self._segments.append((first, seg))
        self._bytes += pos
        self.next_id = max(self.next_id, rid)

    def _new_segment(self) -> "object":
        seg = self.dir / f"seg-{self.next_id:016d}.log"
        self._segments.append((self.next_id, seg))
        f = open(seg, "ab")  # noqa: SIM115
        _fsync_dir(self.dir)
        return f

    # ---- writing ---------------------------------------------------------------------------------
    def append(self, messages: list[tuple[str, bytes, dict]]) -> list[int]:
        """Append (topic, payload, meta) messages as one fsync'd write; their record ids, in order.
        Raises `SpoolFull` (and takes none of them) when they would pass `max_bytes`."""
        bodies = [orjson.dumps({"topic": t, "meta": m}) + b"\n" + p for t, p, m in messages]
        frames = [HEADER.pack(MAGIC, len(b), zlib.crc32(b)) + b for b in bodies]
        size = sum(len(f) for f in frames)
        with self._mutex:
            if self._bytes + size > self.max_bytes:
                if not self._full_logged:
                    log.error("spool %s is full (%d of %d bytes, %d message(s) waiting for the broker): new "
                              "readings are not taken until the broker acknowledges some", self.dir, self._bytes,
                              self.max_bytes, len(self._pending))
                    self._full_logged = True
                raise SpoolFull(f"spool full: {self._bytes} + {size} > {self.max_bytes} bytes")
            if self._full_logged:
                log.warning("spool %s has room again (%d bytes)", self.dir, self._bytes)
                self._full_logged = False
            if self._active.tell() >= self.segment_bytes:
                self._active.close()
                self._active = self._new_segment()
            seg = self._segments[-1][1]
            pos = self._active.tell()
            self._active.write(b"".join(frames))
            self._active.flush()
            os.fsync(self._active.fileno())
            ids = []
            for (_t, _p, m), f in zip(messages, frames, strict=True):
                self._pending.append(_Entry(self.next_id, seg, pos, len(f)))
                if m.get("key") is not None:
                    self.last_meta[m["key"]] = m
                ids.append(self.next_id)
                self.next_id += 1
                pos += len(f)
            self._bytes += size
            return ids

    # ---- reading and acknowledging ---------------------------------------------------------------
    def pending_after(self, after_id: int, limit: int) -> list[Record]:
        """Up to `limit` unacknowledged records with id > `after_id`, in order."""
        with self._mutex:
            # Pending ids are contiguous (acknowledged-ahead ones stay until the prefix before them clears).
            skip = max(0, after_id + 1 - self._pending[0].id) if self._pending else 0
            entries = list(itertools.islice(self._pending, skip, skip + limit))
        out = []
        for e in entries:
            with open(e.segment, "rb") as f:
                f.seek(e.offset)
                header, payload, _ = _decode(f.read(e.size), 0)
            out.append(Record(e.id, header["topic"], payload, header.get("meta", {})))
        return out

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def ack(self, record_id: int) -> None:
        """The broker acknowledged `record_id`: drop it (and any contiguous acknowledged ones) from the spool."""
        with self._mutex:
            if record_id < self.next_unacked:
                return
            self._acked_ahead.add(record_id)
            while self._pending and self._pending[0].id in self._acked_ahead:
                self._acked_ahead.discard(self._pending.popleft().id)
            self.next_unacked = self._pending[0].id if self._pending else self.next_id
            self._ack_dirty = True
            if time.monotonic() - self._ack_saved_at >= ACK_SAVE_S:
                self._save_acked()

    def flush_acks(self) -> None:
        with self._mutex:
            if self._ack_dirty:
                self._save_acked()

    def _save_acked(self) -> None:
        tmp = self.dir / "acked.tmp"
        tmp.write_text(str(self.next_unacked))
        os.replace(tmp, self.dir / "acked")
        self._ack_saved_at = time.monotonic()
        self._ack_dirty = False
        self._drop_acked_segments()

    def _drop_acked_segments(self) -> None:
        # A closed segment whose records are all acknowledged is deleted (the next one starts after it).
        while len(self._segments) > 1 and self._segments[1][0] <= self.next_unacked:
            _, seg = self._segments.pop(0)
            self._bytes -= seg.stat().st_size
            seg.unlink()

    def close(self) -> None:
        self.flush_acks()
        self._active.close()
        self._lock_file.close()


def _decode(data: bytes, pos: int) -> tuple[dict, bytes, int] | None:
    """(header, payload, record size) of the record at `pos`, or None if it is torn or corrupt."""
    if pos + HEADER.size > len(data):
        return None
    magic, length, crc = HEADER.unpack_from(data, pos)
    end = pos + HEADER.size + length
    if magic != MAGIC or length > MAX_RECORD or end > len(data):
        return None
    body = data[pos + HEADER.size:end]
    if zlib.crc32(body) != crc:
        return None
    nl = body.index(b"\n")
    return orjson.loads(body[:nl]), body[nl + 1:], end - pos


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EdgeGateway:
    """Publishes what is in `spool` with QoS 1, in order, at most `window` messages awaiting PUBACK.

    The paho callbacks only hand PUBACK message ids to the sender thread (no locks taken in paho's
    thread); the sender maps them to spool records. Messages in flight when the connection drops are
    kept by paho and sent again (DUP) on reconnect, ahead of anything newer."""

    def __init__(self, cfg: MqttConfig, plant: str, gw: str, spool: Spool, window: int = 100,
                 client_factory: Callable = mqtt.Client):
        self.cfg, self.plant, self.gw, self.spool, self.window = cfg, plant, gw, spool, window
        self.topic = status_topic(plant, gw)
        self.connected = threading.Event()
        self.published = 0  # messages acknowledged by the broker
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._inflight: dict[int, int] = {}  # paho mid -> record id
        self._last_sent = spool.next_unacked - 1
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.client = mqtt_client(cfg, f"cems-gw-{gw}"[:64], max_delay_s=5, client_factory=client_factory)
        self.client.max_queued_messages_set(0)
        self.client.will_set(self.topic, orjson.dumps({"gw": gw, "status": "offline", "reason": "connection lost"}),
                             qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self._thread = threading.Thread(target=self._send_loop, name=f"edge-{gw}", daemon=True)

    # ---- paho callbacks (network thread) ---------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker %s:%s refused gateway %s: %s", self.cfg.host, self.cfg.port, self.gw, reason_code)
            return
        status = {"gw": self.gw, "status": "online", "since": _iso(time.time()), "buffered": self.spool.pending_count}
        client.publish(self.topic, orjson.dumps(status), qos=1, retain=True)
        self.connected.set()
        self._wake.set()
        log.info("gateway %s connected to %s:%s, %d message(s) buffered", self.gw, self.cfg.host, self.cfg.port,
                 self.spool.pending_count)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if self.connected.is_set():
            log.warning("gateway %s lost the broker (%s); buffering to %s", self.gw, reason_code, self.spool.dir)
        self.connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self._acks.put(mid)
        self._wake.set()

    # ---- sender thread ---------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.05)
            self._wake.clear()
            self._take_acks()
            if not self.connected.is_set() or len(self._inflight) >= self.window:
                continue
            for rec in self.spool.pending_after(self._last_sent, self.window - len(self._inflight)):
                info = self.client.publish(rec.topic, rec.payload, qos=1)
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    log.warning("gateway %s: publish of record %d failed (%s); retrying", self.gw, rec.id, info.rc)
                    break
                self._inflight[info.mid] = rec.id
                self._last_sent = rec.id
            self._take_acks()
        self._take_acks()

    def _take_acks(self) -> None:
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            rid = self._inflight.pop(mid, None)
            if rid is not None:  # else the status message
                self.spool.ack(rid)
                self.published += 1

    # ---- public ----------------------------------------------------------------------------------
    def submit(self, messages: list[tuple[str, bytes, dict]]) -> list[int]:
        """Take messages into the spool (raises `SpoolFull`); they are sent as soon as the broker allows."""
        ids = self.spool.append(messages)
        self._wake.set()
        return ids

    def start(self) -> "EdgeGateway":
        log.info("gateway %s: spool %s holds %d message(s) from before; they go first", self.gw, self.spool.dir,
                 self.spool.pending_count)
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        self._thread.start()
        return self

    def drain(self, timeout_s: float) -> bool:
        """Wait until the spool is empty (True) or `timeout_s` passed (False)."""
        end = time.monotonic() + timeout_s
        while self.spool.pending_count and time.monotonic() < end:
            time.sleep(0.05)
        return not self.spool.pending_count

    def stop(self, drain_s: float = 10.0) -> None:
        """Send what is buffered (for up to `drain_s`), say `offline`, disconnect; the rest stays on disk."""
        drained = self.drain(drain_s)
        if not drained:
            log.warning("gateway %s stops with %d message(s) still in %s; they are sent at the next start",
                        self.gw, self.spool.pending_count, self.spool.dir)
        self._stop.set()
        self._wake.set()
        self._thread.join(5)
        if self.connected.is_set():
            body = {"gw": self.gw, "status": "offline", "reason": "stopped", "buffered": self.spool.pending_count}
            info = self.client.publish(self.topic, orjson.dumps(body), qos=1, retain=True)
            info.wait_for_publish(3)
        self.client.disconnect()
        self.client.loop_stop()
        self.spool.close()


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")
