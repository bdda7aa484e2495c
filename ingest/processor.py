"""The intake and processor threads: journal, acknowledge, then handle in journal order.

`Intake` takes messages from the collector's queue in batches, appends each batch to the journal with one
fsync and only then acknowledges them to the broker (DESIGN §1 principle 2). It never waits for InfluxDB:
while the database is away, messages are still journaled and acknowledged, and the pipeline's writes
spool on disk (`store/spool.py`). It waits only when the journal is at its size limit, and then the
broker holds the messages.

`Processor` reads the journal from its checkpoint (so after a crash it handles again what it had not
finished; duplicates change nothing), runs the pipeline, checkpoints, and closes periods on the clock.
"""

import logging
import queue
import threading
import time
from collections.abc import Callable

from cems.ingest.message import Message
from cems.ingest.pipeline import Outcome, Pipeline
from cems.store.influx import InfluxError
from cems.store.journal import Journal
from cems.store.segmentlog import LogFull

log = logging.getLogger("cems.processor")
# Messages waiting for a read from the store (`Pipeline.waiting`) are held in memory up to this many; past
# it, no new message is read from the journal (which keeps them) until the store answers again.
MAX_WAITING = 20_000


class Intake(threading.Thread):
    def __init__(self, inbox: "queue.Queue[Message]", journal: Journal, ack: Callable[[list[Message]], None],
                 batch: int = 2000):
        super().__init__(name="cems-intake", daemon=True)
        self.inbox = inbox
        self.journal = journal
        self.ack = ack
        self.batch = batch
        self.stopping = threading.Event()
        self.journaled = 0
        self.last_error: str | None = None

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                batch = [self.inbox.get(timeout=0.2)]
            except queue.Empty:
                continue
            batch += _take(self.inbox, self.batch - 1)
            last = self._append(batch)
            if last is None:
                return  # stopping: not journaled, not acknowledged; the broker delivers them again
            brokered = []
            for i, m in enumerate(batch):
                if m.on_journaled is not None:
                    m.on_journaled(last - len(batch) + 1 + i)
                else:
                    brokered.append(m)
            if brokered:
                self.ack(brokered)
            self.journaled += len(batch)

    def _append(self, batch: list[Message]) -> int | None:
        delay = 0.5
        while not self.stopping.is_set():
            try:
                last = self.journal.append(batch)
                self.last_error = None
                return last
            except LogFull as e:
                self.last_error = str(e)
                log.warning("journal full: not acknowledging until the processor catches up (%s)", e)
                self.journal.log.wait_for_room(1.0)
            except OSError as e:
                self.last_error = f"journal write failed: {e}"
                log.error("journal write failed, retrying in %.1f s: %s", delay, e)
                self.stopping.wait(delay)
                delay = min(delay * 2, 15.0)
        return None

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.join(timeout)


def _take(q: queue.Queue, n: int) -> list:
    """Up to `n` items waiting in `q`, taken under one lock (not one `get` each)."""
    with q.mutex:
        k = min(n, len(q.queue))
        items = [q.queue.popleft() for _ in range(k)]
        if k:
            q.not_full.notify(k)
    return items


class Replies:
    """Outcomes of HTTP-ingested messages by journal seq, for the requests waiting on them (bounded)."""

    def __init__(self, keep: int = 10_000):
        self._cond = threading.Condition()
        self._done: dict[int, Outcome] = {}
        self.keep = keep

    def put(self, seq: int, out: Outcome) -> None:
        with self._cond:
            self._done[seq] = out
            while len(self._done) > self.keep:  # nobody waited (a replay after a restart, a timeout)
                del self._done[next(iter(self._done))]
            self._cond.notify_all()

    def take(self, seq: int, timeout: float) -> Outcome | None:
        with self._cond:
            self._cond.wait_for(lambda: seq in self._done, timeout)
            return self._done.pop(seq, None)


class Processor(threading.Thread):
    def __init__(self, pipeline: Pipeline, journal: Journal, clock: Callable[[], float] = time.time,
                 tick_s: float = 1.0, batch: int = 500, replies: Replies | None = None, minute_tick_s: float = 0.25):
        super().__init__(name="cems-processor", daemon=True)
        self.pipeline = pipeline
        self.journal = journal
        self.replies = replies or Replies()
        self.clock = clock
        self.tick_s = tick_s  # everything the clock closes: minutes, hours, finality, eviction, live totals
        self.minute_tick_s = minute_tick_s  # minutes alone, more often: a minute's figure soon after its end
        self.batch = batch
        self.gather_s = 0.01
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.wake = threading.Event()  # set to retry at once (the spool has drained, or stopping)
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.lag_s: float | None = None  # from receipt to handling, of the last message handled
        self.stored_seq = 0  # the journal seq through which every batch is stored (set by the writer thread)
        self.waiting: list = []  # records whose stack waits for a read from the store, in journal order
        # flush -> the seq the checkpoint stays at until that flush is stored: messages handled after waiting
        # lie behind newer ones already stored
        self._floors: dict[int, int] = {}
        self._floors_lock = threading.Lock()
        self._flushes = 0
        self._floor: int | None = None  # such a floor for the next flush (kept if a flush fails)
        self._unflushed: int | None = None  # the last seq handled whose points no flush has taken yet

    def _retry(self, what: str, fn):
        delay = 0.5
        while not self.stopping.is_set():
            self.wake.clear()  # before trying, so a drain that ends while this attempt fails is not missed
            try:
                result = fn()
                self.last_error = None
                return result
            except (InfluxError, OSError) as e:
                self.last_error, self.last_error_at = str(e), self.clock()
                log.warning("%s failed, retrying in %.1f s: %s", what, delay, e)
                self.wake.wait(delay)
                delay = min(delay * 2, 15.0)
        return None

    def run(self) -> None:
        try:
            self._run()
        except BaseException:
            log.critical("the processor stopped on an unexpected error; nothing more is handled until the "
                         "service restarts (the journal keeps every message)", exc_info=True)
            raise
        if not self.stopping.is_set():
            log.critical("the processor ended without being told to stop; the journal keeps every message")

    def _run(self) -> None:
        self._retry("start-up (InfluxDB)", lambda: self.pipeline.start(self.clock()))
        if self.stopping.is_set():
            return
        backlog = self.journal.status()["unprocessed"]
        if backlog:
            log.info("journal: %d messages received before the restart are handled first", backlog)
        self.ready.set()
        last_tick = last_minutes = 0.0
        while not self.stopping.is_set():
            handled: list = []
            if self.waiting and self.wake.is_set():
                self.pipeline.resume_reads()  # the spool has drained: the store is complete again
            if self.waiting and not self.pipeline.reads_paused(self.clock()):
                # The store may answer again: the waiting messages first, in order.
                self.pipeline.retry_waiting()
                retried, self.waiting = self.waiting, []
                got = self._hand(retried)
                if got is None:
                    break  # stopping: the journal still holds them
                handled += got
                if got:
                    floor = got[0][0] - 1
                    self._floor = floor if self._floor is None else min(self._floor, floor)
                    log.info("%d waiting message(s) handled, %d still wait for the store", len(got),
                             len(self.waiting))
            room = min(self.batch, MAX_WAITING - len(self.waiting))
            records = []
            if room > 0:
                records = self.journal.read(room, timeout=min(0.2, self.tick_s, self.minute_tick_s))
                if 0 < len(records) < room:
                    # A short batch: gather for a moment, so that a stream of small messages is handled (and
                    # written to InfluxDB) in batches rather than a few at a time.
                    self.stopping.wait(self.gather_s)
                    records += self.journal.read(room - len(records))
            elif not handled:
                self.stopping.wait(0.2)  # full of waiting messages: the journal keeps the rest meanwhile
            if records:
                got = self._hand(records)
                if got is None:
                    break
                handled += got
            if handled:
                self._unflushed = max(self._unflushed or 0, max(seq for seq, _ in handled))
                self.lag_s = self.clock() - handled[-1][1].received_at
            if self._unflushed is not None:
                done = self._unflushed
                self._flushes += 1
                token = self._flushes
                with self._floors_lock:
                    if self._floor is not None:
                        self._floors[token] = self._floor
                try:
                    self._retry("storing", lambda s=done, t=token: self.pipeline.flush(lambda: self._stored(s, t)))
                    self._floor = self._unflushed = None
                except Exception:
                    # The points stay queued in the pipeline; the next round flushes again and that flush
                    # takes the floor over.
                    with self._floors_lock:
                        self._floors.pop(token, None)
                    log.exception("storing failed; the journal keeps the messages until it succeeds")
                    self.stopping.wait(1.0)
                    continue
            # The checkpoint moves (on this thread, which reads the journal) past the batches now stored, and
            # never past a message still waiting or handled after waiting but not yet stored.
            self.journal.commit(self._checkpoint())
            now = self.clock()
            if now - last_tick >= self.tick_s:
                self._on_clock("closing periods", self.pipeline.tick)
                last_tick = last_minutes = now
            elif now - last_minutes >= self.minute_tick_s:
                self._on_clock("closing minutes", self.pipeline.close_minutes)
                last_minutes = now

    def _hand(self, records: list) -> list | None:
        """Hand journal records to the pipeline: those handled, in order (their HTTP replies posted); those
        whose stack waits for the store join `waiting`. None if stopping before they were handled."""
        msgs = [rec for _, rec in records]  # a Record has what the pipeline reads of a Message
        outs = self._retry("handling messages", lambda m=msgs: self._handle_batch(m))
        if outs is None:
            return None
        handled = []
        for (seq, rec), out in zip(records, outs, strict=True):
            if out is None:
                self.waiting.append((seq, rec))
                continue
            handled.append((seq, rec))
            if rec.source == "http":
                self.replies.put(seq, out)
        return handled

    def _checkpoint(self) -> int:
        limit = self.stored_seq
        if self.waiting:
            limit = min(limit, self.waiting[0][0] - 1)
        if self._floor is not None:
            limit = min(limit, self._floor)
        with self._floors_lock:
            return min(limit, *self._floors.values()) if self._floors else limit

    def _stored(self, seq: int, token: int) -> None:
        """A flush is stored (the writer thread): the checkpoint may pass its messages."""
        with self._floors_lock:
            self.stored_seq = max(self.stored_seq, seq)
            self._floors.pop(token, None)

    def _on_clock(self, what: str, fn) -> None:
        try:
            self._retry(what, lambda: fn(self.clock()))
        except Exception:
            log.exception("%s failed; carrying on", what)

    def _handle_batch(self, msgs: list[Message]) -> list[Outcome | None]:
        try:
            return self.pipeline.handle_batch(msgs, self.clock())
        except (InfluxError, OSError):
            raise
        except Exception:
            # A bug must not stop the pipeline or lose a message: the messages are taken again one by one
            # (what the batch already applied comes back as duplicates, changing nothing), so that only the
            # one that fails goes to the dead-letter store.
            log.exception("internal error in a batch of %d messages; taking them one by one", len(msgs))
            return [self._handle(m) for m in msgs]

    def _handle(self, msg: Message) -> Outcome | None:
        try:
            return self.pipeline.handle(msg, self.clock())
        except (InfluxError, OSError):
            raise
        except Exception as e:
            # A bug must not stop the pipeline or lose the message: it goes to the dead-letter store
            # whole, from where it can be replayed once fixed.
            log.exception("internal error on %s; message kept in the dead-letter store", msg.topic)
            self.pipeline.deadletters.record(received_at=msg.received_at, source=f"{msg.source}:{msg.topic}",
                                             reason=f"internal error: {type(e).__name__}: {e}",
                                             payload=msg.payload)
            return Outcome(rejected=f"internal error: {type(e).__name__}")

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.wake.set()
        self.join(timeout)
