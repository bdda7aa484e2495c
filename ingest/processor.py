"""The processor thread: takes messages from the collector's queue, runs the pipeline, acknowledges.

While InfluxDB refuses writes the processor retries with backoff and acknowledges nothing, so the broker
keeps everything not yet stored (issue 4 adds an on-disk journal and spool in front of this).
"""

import logging
import queue
import threading
import time
from collections.abc import Callable

from cems.ingest.pipeline import Message, Outcome, Pipeline
from cems.store.influx import InfluxError

log = logging.getLogger("cems.processor")


class Processor(threading.Thread):
    def __init__(self, pipeline: Pipeline, inbox: "queue.Queue[Message]", ack: Callable[[Message], None],
                 clock: Callable[[], float] = time.time, tick_s: float = 1.0):
        super().__init__(name="cems-processor", daemon=True)
        self.pipeline = pipeline
        self.inbox = inbox
        self.ack = ack
        self.clock = clock
        self.tick_s = tick_s
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def _retry(self, what: str, fn):
        delay = 0.5
        while not self.stopping.is_set():
            try:
                result = fn()
                self.last_error = None
                return result
            except InfluxError as e:
                self.last_error, self.last_error_at = str(e), self.clock()
                log.warning("%s failed, retrying in %.1f s: %s", what, delay, e)
                self.stopping.wait(delay)
                delay = min(delay * 2, 15.0)
        return None

    def run(self) -> None:
        self._retry("start-up (InfluxDB)", lambda: self.pipeline.start(self.clock()))
        if self.stopping.is_set():
            return
        self.ready.set()
        last_tick = 0.0
        while not self.stopping.is_set():
            try:
                msg = self.inbox.get(timeout=min(0.2, self.tick_s))
            except queue.Empty:
                msg = None
            if msg is not None:
                out = self._retry("storing a message", lambda m=msg: self._handle(m))
                if out is None:
                    return  # stopping before it was stored: not acknowledged, the broker keeps it
                self.ack(msg)
                self.on_outcome(msg, out)
            now = self.clock()
            if now - last_tick >= self.tick_s:
                try:
                    self._retry("closing periods", lambda: self.pipeline.tick(self.clock()))
                except Exception:
                    log.exception("closing periods failed; carrying on")
                last_tick = now

    def _handle(self, msg: Message) -> Outcome:
        try:
            return self.pipeline.handle(msg, self.clock())
        except InfluxError:
            raise
        except Exception as e:
            # A bug must not stop the pipeline or lose the message: it goes to the dead-letter store
            # whole, from where it can be replayed once fixed.
            log.exception("internal error on %s; message kept in the dead-letter store", msg.topic)
            self.pipeline.deadletters.record(received_at=msg.received_at, source=f"{msg.source}:{msg.topic}",
                                             reason=f"internal error: {type(e).__name__}: {e}",
                                             payload=msg.payload)
            return Outcome(rejected=f"internal error: {type(e).__name__}")

    def on_outcome(self, msg: Message, out: Outcome) -> None:
        """Hook for callers (HTTP ingest waits on it); nothing to do by default."""

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.join(timeout)
