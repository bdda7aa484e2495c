"""InfluxDB writes that survive an outage (DESIGN §6): straight through while the database takes them; on
a failure to reach it, into an fsync'd on-disk spool, and so is every later write until the spool has
drained, in order, into the database again.

`SpooledInflux` stands where the pipeline had the plain client: `write` returns once the points are in
the database or on disk, and `query` refuses (`InfluxError`) while the spool holds points, because the
database is then missing some of what the pipeline wrote and a recomputation from it would be wrong.
A write the database refuses outright (a 4xx: a field type conflict, a malformed point) is retried by
nobody: it goes whole to the dead-letter store with the database's answer, so nothing is dropped without
a record saying so.

A spool record is ``f64 spooled_at | u8 len(precision) | precision | lines joined by \\n``.
"""

import bisect
import logging
import queue
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cems.store.deadletter import DeadLetters
from cems.store.influx import Influx, InfluxError
from cems.store.segmentlog import LogFull, SegmentLog, Timestamps

log = logging.getLogger("cems.spool")
_HEAD = struct.Struct("<dB")
BATCH = 20000  # points per write request: InfluxDB recommends 5,000-10,000
IN_FLIGHT = 4  # batches queued for the writer thread (taken together) while the processor handles the next
# Concurrent write requests of one batch. InfluxDB parses and indexes requests in parallel, so one request at
# a time leaves it (and the pipeline, waiting for it) half idle. The points of one series always take the
# same lane, in order, so a correction can never overtake the point it corrects.
LANES = 2
GATHER_S = 0.05  # how long the writer waits for more points when it has fewer than GATHER_POINTS
GATHER_POINTS = 5000
# Upper bounds [s] of the write-latency histogram (`/metrics`): a healthy write of a few thousand points
# takes tens of ms; seconds mean a struggling database (the request times out at influx.timeout_s).
WRITE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def series_lanes(lines: list[str], n: int) -> list[list[str]]:
    """Lines split into `n` lanes by series (the measurement and tags, before the first space: the same text
    for every point of a series), each lane in the order given."""
    lanes: list[list[str]] = [[] for _ in range(n)]
    for ln in lines:
        lanes[hash(ln[:ln.find(" ")]) % n].append(ln)
    return [lane for lane in lanes if lane] or [[]]


def encode(lines: list[str], precision: str, at: float) -> bytes:
    p = precision.encode()
    return _HEAD.pack(at, len(p)) + p + "\n".join(lines).encode()


def decode(body: bytes) -> tuple[float, str, bytes]:
    at, n = _HEAD.unpack_from(body)
    a = _HEAD.size
    return at, body[a:a + n].decode(), body[a + n:]


class SpooledInflux:
    def __init__(self, db: Influx, data_dir: Path, deadletters: DeadLetters, max_bytes: int = 4 << 30,
                 segment_bytes: int = 64 << 20, clock=time.time):
        self.db = db
        self.deadletters = deadletters
        self.clock = clock
        self.log = SegmentLog(Path(data_dir) / "spool", "spool", segment_bytes, max_bytes)
        self.waiting = Timestamps()
        self._lines = 0  # points waiting in the spool
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.last_error: str | None = None
        self.on_drained = lambda: None  # called (from the drain thread) when the spool has just emptied
        self._queue: queue.Queue = queue.Queue(maxsize=IN_FLIGHT)  # batches for the writer thread
        self.refused = 0  # writes the database refused, kept in the dead-letter store
        self.writes = 0  # direct write requests that succeeded, their points and their total time
        self.points_written = 0
        self.write_seconds = 0.0
        self.write_le = [0] * len(WRITE_BUCKETS_S)  # requests that took at most each bucket's bound, cumulative
        self._pool: ThreadPoolExecutor | None = None  # the lanes beyond the writer thread's own
        pending = self.log.status()["records"]
        if pending:
            for seq, body in self.log.read(max_records=pending):
                at, _, data = decode(body)
                self.waiting.add(seq, at)
                self._lines += data.count(b"\n") + 1
            self.log.rewind()
            log.warning("spool holds %d writes (%d points) from before the restart; draining them first",
                        pending, self._lines)

    # ---- the Influx interface the pipeline uses --------------------------------------------------------
    @property
    def url(self) -> str:
        return self.db.url

    @property
    def spooling(self) -> bool:
        return self.log.last_seq > self.log.committed

    def create_database(self) -> None:
        self.db.create_database()

    def query(self, q: str) -> list[dict]:
        self.wait_written()  # read what was written: every submitted batch first
        if self.spooling:
            raise InfluxError(f"{self._lines} points still spooled; the database is not yet complete")
        return self.db.query(q)

    def ping(self) -> bool:
        return self.db.ping()

    def write(self, lines: list[str], precision: str = "ms") -> None:
        """Store points in the database, or durably in the spool if it cannot be reached: in requests of at
        most `BATCH` points, up to `LANES` at a time, each series' points in order."""
        if len(lines) <= BATCH or LANES == 1:
            self._write_in_order(lines, precision)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(LANES - 1, thread_name_prefix="cems-write-lane")
        lanes = series_lanes(lines, LANES)
        others = [self._pool.submit(self._write_in_order, lane, precision) for lane in lanes[1:]]
        try:
            self._write_in_order(lanes[0], precision)
        finally:
            for f in others:
                f.result()  # raises what the lane raised

    def _write_in_order(self, lines: list[str], precision: str) -> None:
        for i in range(0, len(lines), BATCH):
            self._write(lines[i:i + BATCH], precision)

    def _write(self, lines: list[str], precision: str) -> None:
        if not lines:
            return
        with self._lock:
            spooling = self.spooling
        if not spooling:
            try:
                t = time.perf_counter()
                self.db.write(lines, precision)
                took = time.perf_counter() - t
                with self._lock:
                    self.write_seconds += took
                    self.writes += 1
                    for i in range(bisect.bisect_left(WRITE_BUCKETS_S, took), len(WRITE_BUCKETS_S)):
                        self.write_le[i] += 1
                    self.points_written += len(lines)
                self.last_error = None
                return
            except InfluxError as e:
                if not e.transient:
                    self._refused(lines, precision, e)
                    return
                self.last_error = str(e)
                log.warning("InfluxDB write failed, spooling to disk until it is back: %s", e)
        self._spool(lines, precision)

    def _spool(self, lines: list[str], precision: str) -> None:
        body = encode(lines, precision, self.clock())
        while True:
            try:
                with self._lock:
                    seq = self.log.append([body])
                    self.waiting.add(seq, self.clock())
                    self._lines += len(lines)
                self._wake.set()
                return
            except LogFull:
                log.error("spool full (%d bytes); holding the pipeline until InfluxDB takes writes again",
                          self.log.bytes)
                self.log.wait_for_room(5.0)

    def _refused(self, lines: list[str], precision: str, e: InfluxError) -> None:
        self.refused += 1
        log.error("InfluxDB refused %d points, kept in the dead-letter store: %s", len(lines), e)
        self.deadletters.record(received_at=self.clock(), source="store:influx", reason=f"database refused: {e}",
                                payload=(f"precision={precision}\n" + "\n".join(lines)).encode())

    # ---- draining ---------------------------------------------------------------------------------------
    def drain_once(self, max_records: int = 50) -> bool:
        """Write the oldest spooled batches; True when the spool is empty. Raises nothing."""
        batch = self.log.read(max_records)
        for seq, body in batch:
            _, precision, data = decode(body)
            lines = data.decode().split("\n")
            try:
                self.db.write(lines, precision)
            except InfluxError as e:
                if e.transient:
                    self.last_error = str(e)
                    self.log.rewind()  # read this record again next time
                    return False
                self._refused(lines, precision, e)
            with self._lock:
                self.log.commit(seq)
                self.waiting.drop_through(seq)
                self._lines -= len(lines)
            self.last_error = None
        if batch and not self.spooling:
            log.info("spool drained: InfluxDB has everything again")
            self.on_drained()
        return not self.spooling

    def run_drain(self, stop: threading.Event) -> None:
        """The drain thread: retry with backoff while the database is away, stop when `stop` is set."""
        delay = 0.5
        while not stop.is_set():
            if not self.spooling:
                self._wake.wait(1.0)
                self._wake.clear()
                delay = 0.5
                continue
            if self.drain_once():
                delay = 0.5
            elif self.last_error:
                stop.wait(delay)
                delay = min(delay * 2, 15.0)

    # ---- writing in the background ----------------------------------------------------------------------
    def submit(self, ms: list[str], ns: list[str], on_done=None) -> None:
        """Queue a batch for the writer thread, in order (blocks while `IN_FLIGHT` batches wait: backpressure);
        `on_done()` runs once the points are in the database or in the spool."""
        self._queue.put((ms, ns, on_done))

    def wait_written(self, timeout: float | None = None) -> bool:
        """Until every submitted batch is written (or spooled); False on timeout."""
        with self._queue.all_tasks_done:
            return self._queue.all_tasks_done.wait_for(lambda: not self._queue.unfinished_tasks, timeout)

    def run_writer(self, stop: threading.Event) -> None:
        """The writer thread: submitted batches in order; a failure (the disk) is retried, never skipped."""
        while True:
            try:
                taken = [self._queue.get(timeout=0.2)]
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            # What else is queued goes in the same requests, in order; a small batch waits up to
            # `GATHER_S` for more (a stream of small messages makes many small batches, and each request
            # costs the service far more than its points do).
            until = time.monotonic() + GATHER_S
            points = len(taken[0][0]) + len(taken[0][1])
            while len(taken) < 2 * IN_FLIGHT:
                wait = until - time.monotonic() if points < GATHER_POINTS else 0.0
                try:
                    item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                taken.append(item)
                points += len(item[0]) + len(item[1])
            ms = [x for t in taken for x in t[0]]
            ns = [x for t in taken for x in t[1]]
            dones = [t[2] for t in taken if t[2] is not None]
            delay = 0.5
            while True:
                try:
                    self.write(ms)
                    self.write(ns, precision="ns")
                    ms = ns = []  # written: a retry after a failing callback writes nothing twice
                    for on_done in dones:
                        on_done()
                    break
                except Exception as e:
                    log.error("writing a batch failed, retrying in %.1f s: %s", delay, e)
                    self.last_error = f"writing failed: {e}"
                    if stop.wait(delay):
                        break  # stopping: what was not written stays in the journal (not checkpointed)
                    delay = min(delay * 2, 15.0)
            for _ in taken:
                self._queue.task_done()

    def status(self) -> dict:
        s = self.log.status()
        return {"ok": s["records"] == 0, "records": s["records"], "lines": self._lines, "bytes": s["bytes"],
                "oldest_age_s": self.waiting.oldest_age(self.clock()), "refused": self.refused,
                "max_bytes": self.log.max_bytes}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        self.log.close()
