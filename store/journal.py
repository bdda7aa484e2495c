"""The intake journal (DESIGN §1 principle 2): every message received is appended here, fsync'd, before
the broker gets its acknowledgement; the processor reads it in order and checkpoints what it has handled.

A record is the message as received: ``f64 received_at | u16 len(source) | u16 len(topic) | source |
topic | payload``. Rejected messages are journaled too: the processor, not the collector, judges them.
After a crash the processor reads again from the checkpoint; a message handled twice changes nothing
(duplicates are recognised), so the checkpoint need not be exact.
"""

import struct
from pathlib import Path
from typing import NamedTuple, Protocol

from cems.store.segmentlog import SegmentLog, Timestamps

_HEAD = struct.Struct("<dHH")


class Received(Protocol):
    topic: str
    payload: bytes
    received_at: float
    source: str


class Record(NamedTuple):
    topic: str
    payload: bytes
    received_at: float
    source: str


def encode(m: Received) -> bytes:
    src, topic = m.source.encode(), m.topic.encode()
    return _HEAD.pack(m.received_at, len(src), len(topic)) + src + topic + m.payload


def decode(body: bytes) -> Record:
    t, ns, nt = _HEAD.unpack_from(body)
    a = _HEAD.size
    return Record(body[a + ns:a + ns + nt].decode(), body[a + ns + nt:], t, body[a:a + ns].decode())


class Journal:
    def __init__(self, data_dir: Path, max_bytes: int = 1 << 30, segment_bytes: int = 64 << 20):
        self.log = SegmentLog(Path(data_dir) / "journal", "journal", segment_bytes, max_bytes)
        self.arrivals = Timestamps()

    def append(self, msgs: list[Received]) -> int:
        """Durably append; returns the last seq. Raises `segmentlog.LogFull` at the size limit."""
        last = self.log.append([encode(m) for m in msgs])
        for i, m in enumerate(msgs):
            self.arrivals.add(last - len(msgs) + 1 + i, m.received_at)
        return last

    def read(self, max_records: int = 500, timeout: float = 0.0) -> list[tuple[int, Record]]:
        return [(seq, decode(b)) for seq, b in self.log.read(max_records, timeout)]

    def commit(self, seq: int) -> None:
        self.log.commit(seq)
        self.arrivals.drop_through(seq)

    def status(self) -> dict:
        s = self.log.status()
        return {"ok": s["bytes"] < self.log.max_bytes, "bytes": s["bytes"], "segments": s["segments"],
                "unprocessed": s["records"], "oldest_unprocessed_age_s": self.arrivals.oldest_age(),
                "max_bytes": self.log.max_bytes}

    def close(self) -> None:
        self.log.close()
