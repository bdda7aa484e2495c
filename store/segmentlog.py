"""An append-only log in fsync'd segment files, read in order and compacted behind a checkpoint.

The intake journal and the InfluxDB spool are both one of these (`store/journal.py`, `store/spool.py`).

Layout under the log's directory:

- ``{first_seq:016d}.seg``: records framed as ``u32 length | u32 crc32(body) | body``; a record's sequence
  number is the segment's first seq plus its index in the segment. Seqs start at 1 and never repeat.
- ``checkpoint``: the seq through which the consumer is done (``u64 seq | u32 crc32``). Segments wholly at
  or below it are deleted. It is written without fsync: after a power cut it may lag, and the consumer
  then sees a few records again, which both consumers tolerate (duplicates change nothing).

`append` writes a batch with one write and one fsync and returns only then: a record `append` returned
is on disk. A torn tail (a crash mid-append, never acknowledged) is cut off when the log is opened.
One thread appends, one thread reads and commits; `status` may be called from any thread.
"""

import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from pathlib import Path

log = logging.getLogger("cems.store")
_HEAD = struct.Struct("<II")
_CHECK = struct.Struct("<QI")
MAX_RECORD = 64 << 20


class LogFull(Exception):
    """The log holds `max_bytes` already; the appender waits (backpressure) until the consumer commits."""


def _segments(d: Path) -> list[tuple[int, Path]]:
    out = []
    for p in d.glob("*.seg"):
        try:
            out.append((int(p.stem), p))
        except ValueError:
            log.warning("%s: not a segment name, ignored", p)
    return sorted(out)


def _scan(path: Path) -> tuple[list[int], int]:
    """Sizes of the whole, intact records at the start of a segment, and the byte length they span."""
    sizes, pos = [], 0
    data = path.read_bytes()
    while pos + _HEAD.size <= len(data):
        n, crc = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + n
        if n > MAX_RECORD or end > len(data) or zlib.crc32(data[pos + _HEAD.size:end]) != crc:
            break
        sizes.append(end - pos)
        pos = end
    return sizes, pos


class SegmentLog:
    def __init__(self, directory: Path, name: str, segment_bytes: int = 64 << 20, max_bytes: int = 1 << 30):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self._cond = threading.Condition()
        self._checkpoint_path = self.dir / "checkpoint"
        self.committed = self._read_checkpoint()
        # seg first seq -> (path, records, bytes); the last one is the active segment
        self._segs: dict[int, list] = {}
        for first, path in _segments(self.dir):
            sizes, good = _scan(path)
            if good != path.stat().st_size:
                if first != max(f for f, _ in _segments(self.dir)):
                    log.error("%s: segment %s is damaged after %d records; the rest of it is unreadable",
                              name, path.name, len(sizes))
                else:
                    log.warning("%s: cutting a torn tail of %d bytes from %s (never acknowledged)",
                                name, path.stat().st_size - good, path.name)
                    with open(path, "r+b") as f:
                        f.truncate(good)
                        os.fsync(f.fileno())
            self._segs[first] = [path, len(sizes), good]
        last_first = max(self._segs, default=None)
        self.last_seq = (last_first + self._segs[last_first][1] - 1) if last_first is not None else self.committed
        self.last_seq = max(self.last_seq, self.committed)
        if self._segs and min(self._segs) > self.committed + 1:
            log.error("%s: records %d..%d are missing (segments deleted by hand?)", name, self.committed + 1,
                      min(self._segs) - 1)
            self.committed = min(self._segs) - 1
        self._fd: int | None = None
        self._active: int | None = None
        # reader position
        self._rseq = self.committed  # last seq returned by read
        self._rfile = None
        self._rfirst: int | None = None
        self._rindex = 0
        self._compact()

    # ---- checkpoint -------------------------------------------------------------------------------
    def _read_checkpoint(self) -> int:
        try:
            raw = self._checkpoint_path.read_bytes()
            seq, crc = _CHECK.unpack(raw[: _CHECK.size])
            if zlib.crc32(raw[:8]) == crc:
                return seq
            log.error("%s: checkpoint damaged; reading the log from its start", self.name)
        except FileNotFoundError:
            pass
        except struct.error:
            log.error("%s: checkpoint truncated; reading the log from its start", self.name)
        return 0

    def commit(self, seq: int) -> None:
        """The consumer is done with every record through `seq`: compact behind it."""
        seq = min(seq, self.last_seq)
        if seq <= self.committed:
            return
        raw = struct.pack("<Q", seq)
        fd = os.open(self._checkpoint_path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, raw + struct.pack("<I", zlib.crc32(raw)), 0)
        finally:
            os.close(fd)
        with self._cond:
            self.committed = seq
            self._compact()
            self._cond.notify_all()

    def _compact(self) -> None:
        firsts = sorted(self._segs)
        for i, first in enumerate(firsts):
            nxt = firsts[i + 1] if i + 1 < len(firsts) else None
            if nxt is None or nxt - 1 > self.committed or first == self._active:
                break
            path = self._segs.pop(first)[0]
            if self._rfirst == first and self._rfile is not None:
                self._rfile.close()
                self._rfile, self._rfirst = None, None
            path.unlink(missing_ok=True)

    # ---- appending ----------------------------------------------------------------------------------
    @property
    def bytes(self) -> int:
        return sum(s[2] for s in self._segs.values())

    def wait_for_room(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.bytes < self.max_bytes, timeout)

    def append(self, bodies: list[bytes]) -> int:
        """Write records durably (one fsync); returns the last seq. Raises `LogFull` when over `max_bytes`."""
        if not bodies:
            return self.last_seq
        if self.bytes >= self.max_bytes:
            raise LogFull(f"{self.name}: {self.bytes} bytes held, limit {self.max_bytes}")
        if self._fd is None or self._segs[self._active][2] >= self.segment_bytes:
            self._roll()
        parts = []
        for b in bodies:
            if len(b) > MAX_RECORD:
                raise ValueError(f"{self.name}: record of {len(b)} bytes over the {MAX_RECORD} limit")
            parts += [_HEAD.pack(len(b), zlib.crc32(b)), b]
        data = b"".join(parts)
        seg = self._segs[self._active]
        written = 0
        try:
            while written < len(data):
                written += os.pwrite(self._fd, data[written:], seg[2] + written)
            os.fsync(self._fd)
        except OSError:
            os.ftruncate(self._fd, seg[2])  # nothing of a failed batch stays (it was not acknowledged)
            raise
        with self._cond:
            seg[1] += len(bodies)
            seg[2] += len(data)
            self.last_seq += len(bodies)
            self._cond.notify_all()
        return self.last_seq

    def _roll(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        first = self.last_seq + 1
        path = self.dir / f"{first:016d}.seg"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the new file's name is durable before any record in it is acknowledged
        finally:
            os.close(dfd)
        with self._cond:  # compaction is left to `commit`, on the reading thread, which may hold a file open
            self._segs[first] = [path, 0, 0]
            self._active = first

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._rfile is not None:
            self._rfile.close()
            self._rfile = None

    # ---- reading --------------------------------------------------------------------------------------
    def read(self, max_records: int = 1000, timeout: float = 0.0) -> list[tuple[int, bytes]]:
        """The next records after the last one read, up to `max_records`; waits up to `timeout` for one."""
        with self._cond:
            if self._rseq >= self.last_seq and timeout > 0:
                self._cond.wait_for(lambda: self._rseq < self.last_seq, timeout)
            last = self.last_seq
        out = []
        while self._rseq < last and len(out) < max_records:
            want = self._rseq + 1
            if self._rfile is None or self._rfirst is None or want >= self._rfirst + self._rindex_limit():
                if not self._open_reader(want):
                    break
            head = self._rfile.read(_HEAD.size)
            n, crc = _HEAD.unpack(head)
            body = self._rfile.read(n)
            if zlib.crc32(body) != crc:
                raise OSError(f"{self.name}: record {want} damaged on disk")
            self._rindex += 1
            self._rseq = want
            out.append((want, body))
        return out

    def _rindex_limit(self) -> int:
        with self._cond:
            return self._segs[self._rfirst][1] if self._rfirst in self._segs else 0

    def _open_reader(self, want: int) -> bool:
        with self._cond:
            firsts = sorted(f for f in self._segs if f <= want)
            if not firsts:
                nxt = min((f for f in self._segs if f > want), default=None)
                if nxt is None:
                    return False
                log.error("%s: records %d..%d missing; going on from %d", self.name, want, nxt - 1, nxt)
                self._rseq = nxt - 1
                want, first = nxt, nxt
            else:
                first = firsts[-1]
            path, count, _ = self._segs[first]
            if want >= first + count:
                return False
        if self._rfile is not None:
            self._rfile.close()
        self._rfile = open(path, "rb")  # noqa: SIM115 - kept open across calls
        self._rfirst, self._rindex = first, 0
        while self._rindex < want - first:  # skip to `want`
            n, _ = _HEAD.unpack(self._rfile.read(_HEAD.size))
            self._rfile.seek(n, os.SEEK_CUR)
            self._rindex += 1
        return True

    def rewind(self) -> None:
        """Read again from just after the checkpoint (a consumer that restarts its work)."""
        if self._rfile is not None:
            self._rfile.close()
        self._rfile, self._rfirst, self._rseq = None, None, self.committed

    # ---- status ----------------------------------------------------------------------------------------
    def status(self) -> dict:
        with self._cond:
            return {"bytes": self.bytes, "segments": len(self._segs), "records": self.last_seq - self.committed,
                    "last_seq": self.last_seq, "committed": self.committed}


class Timestamps:
    """Arrival times of the records not yet committed, for "how old is the oldest waiting record"."""

    def __init__(self):
        self._q: deque[tuple[int, float]] = deque()
        self._lock = threading.Lock()

    def add(self, seq: int, t: float) -> None:
        with self._lock:
            self._q.append((seq, t))

    def drop_through(self, seq: int) -> None:
        with self._lock:
            while self._q and self._q[0][0] <= seq:
                self._q.popleft()

    def oldest_age(self, now: float | None = None) -> float | None:
        with self._lock:
            return None if not self._q else max(0.0, (time.time() if now is None else now) - self._q[0][1])
