"""`cems serve`: the collector, the processor and the API in one process (DESIGN §2)."""

import gc
import logging
import queue
import threading
import time

import uvicorn

from cems.api.app import create_app
from cems.api.routes.ingest import IngestBusy
from cems.config import Config, tls_context
from cems.ingest.collector import Collector, topic_filters
from cems.ingest.message import Message
from cems.ingest.pipeline import Pipeline
from cems.ingest.processor import Intake, Processor
from cems.store.deadletter import DeadLetters
from cems.store.influx import Influx
from cems.store.journal import Journal
from cems.store.spool import WRITE_BUCKETS_S, SpooledInflux

# Python's cyclic collector, tuned for a service that holds a large, long-lived state (the in-memory window)
# and allocates many short-lived objects a message: a young generation of 50,000 container objects rather
# than 700, so the older generations (the window) are traversed far less often; what start-up built (the
# modules, the app) is moved out of the collector's sight (`gc.freeze`). The pipeline makes next to no
# reference cycles: what it frees goes at once, by reference counting. Measured: in process (`python -m
# bench.pipeline`) the collector took about a quarter of the time at single-reading messages at the
# default thresholds; end to end, five alternating pairs of runs stored on average 10 % more single-reading
# messages and 16 % more readings in 60-reading messages, at a few tens of MB more RSS (docs/performance.md).
GC_THRESHOLDS = (50_000, 20, 20)

log = logging.getLogger("cems.service")


def influx_from(cfg: Config) -> Influx:
    i = cfg.influx
    return Influx(i.url, i.database, i.username, i.password, i.token, i.timeout_s, tls=tls_context(i))


def write_latency_rows(store: SpooledInflux) -> list[tuple]:
    """The InfluxDB write-latency histogram (successful direct writes) as `/metrics` rows."""
    help_ = "duration of direct InfluxDB write requests"
    name = "cems_influx_write_duration_seconds"
    rows = [(f"{name}_bucket", "histogram", help_, n, {"le": repr(le)})
            for le, n in zip(WRITE_BUCKETS_S, store.write_le, strict=True)]
    return rows + [(f"{name}_bucket", "histogram", help_, store.writes, {"le": "+Inf"}),
                   (f"{name}_sum", "histogram", help_, store.write_seconds, {}),
                   (f"{name}_count", "histogram", help_, store.writes, {})]


class Service:
    """Everything `cems serve` runs, wired together; `run()` blocks until SIGINT/SIGTERM."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        if cfg.unknown_token_plants():
            log.warning("tokens name plants not in this config: %s", ", ".join(cfg.unknown_token_plants()))
        st = cfg.storage
        self.inbox: queue.Queue = queue.Queue(maxsize=cfg.mqtt.queue_messages)
        plants = None if cfg.mqtt.subscribe == "all" else [p.id for p in cfg.plants]
        self.collector = Collector(cfg.mqtt, self.inbox, topic_filters(plants))
        self.deadletters = DeadLetters(st.data_dir)
        self.journal = Journal(st.data_dir, max_bytes=st.journal_max_mb << 20)
        self.store = SpooledInflux(influx_from(cfg), st.data_dir, self.deadletters, max_bytes=st.spool_max_mb << 20)
        self.intake = Intake(self.inbox, self.journal, ack=self.collector.ack_all)
        self.pipeline = Pipeline(cfg, self.store, self.deadletters, publish=self.collector.publish)
        self.processor = Processor(self.pipeline, self.journal)
        self.store.on_drained = self.processor.wake.set  # what waited for the database goes on at once
        self._stop_drain = threading.Event()
        self.drain = threading.Thread(target=self.store.run_drain, args=(self._stop_drain,), name="cems-spool",
                                      daemon=True)
        self._stop_writer = threading.Event()
        self.writer = threading.Thread(target=self.store.run_writer, args=(self._stop_writer,), name="cems-writer",
                                       daemon=True)
        self.started_at = time.time()
        self.app = create_app(cfg, influx_from(cfg), self._live, self.health, self.ingest_http, self.metrics)

    def ingest_http(self, topic: str, payload: bytes, wait_s: float = 30.0):
        """HTTP ingest: the same intake (journal first), then wait for the pipeline's outcome."""
        seq: list[int] = []
        journaled = threading.Event()
        msg = Message(topic, payload, time.time(), source="http",
                      on_journaled=lambda s: (seq.append(s), journaled.set()))
        try:
            self.inbox.put(msg, timeout=10)
        except queue.Full:
            raise IngestBusy("intake queue full; try again shortly") from None
        if not journaled.wait(wait_s):
            raise IngestBusy("the journal did not take the message in time (full?); try again shortly")
        return self.processor.replies.take(seq[0], wait_s)

    def _live(self, plant: str, stack: str) -> dict | None:
        return self.pipeline.live(plant, stack) if self.processor.ready.is_set() else None

    def health(self) -> dict:
        p = self.processor
        return {
            "pipeline": {"ok": p.ready.is_set() and p.is_alive(), "ready": p.ready.is_set(),
                         "queued_messages": self.inbox.qsize(), "waiting_for_store": len(p.waiting),
                         **self.pipeline.snapshot_counters()},
            "mqtt": {"ok": self.collector.connected.is_set(),
                     "broker": f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}", "tls": self.cfg.mqtt.tls,
                     "error": self.collector.error},
            "influx": {"ok": p.last_error is None and self.store.last_error is None, "url": self.cfg.influx.url,
                       "error": self.store.last_error or p.last_error},
            "journal": {**self.journal.status(), "journaled": self.intake.journaled, "error": self.intake.last_error},
            "spool": self.store.status(),
            "deadletters": {"ok": True, "count": self.deadletters.count},
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def metrics(self) -> list[tuple[str, str, str, float | None, dict[str, str]]]:
        """Rows for Prometheus (`/metrics`): counters and gauges of intake, pipeline, journal and spool."""
        c = self.pipeline.snapshot_counters()
        j, sp = self.journal.status(), self.store.status()
        rows = [("cems_messages_total", "counter", "messages handled by the pipeline", c["messages"], {})]
        for k in ("accepted", "duplicates", "corrections", "invalid"):
            rows.append(("cems_readings_total", "counter", "readings handled, by outcome", c[k], {"outcome": k}))
        return rows + [
            ("cems_messages_rejected_total", "counter", "messages rejected (dead-lettered)", c["rejected"], {}),
            ("cems_reported_total", "counter", "gateway-reported interval figures stored", c["reported"], {}),
            ("cems_journaled_messages_total", "counter", "messages journaled and acknowledged",
             self.intake.journaled, {}),
            ("cems_journal_unprocessed_messages", "gauge", "journaled messages not yet handled", j["unprocessed"], {}),
            ("cems_journal_bytes", "gauge", "bytes in the journal's segments", j["bytes"], {}),
            ("cems_messages_waiting_for_store", "gauge", "messages of stacks waiting for old hours to be read "
             "back from InfluxDB", len(self.processor.waiting), {}),
            ("cems_processing_lag_seconds", "gauge", "receipt to handling, of the last message handled",
             self.processor.lag_s, {}),
            ("cems_spool_points", "gauge", "database points waiting in the spool", sp["lines"], {}),
            ("cems_spool_bytes", "gauge", "bytes in the spool", sp["bytes"], {}),
            ("cems_spool_oldest_age_seconds", "gauge", "age of the oldest spooled write", sp["oldest_age_s"], {}),
            ("cems_influx_refused_writes_total", "counter", "writes InfluxDB refused (dead-lettered)",
             sp["refused"], {}),
            ("cems_influx_write_seconds_total", "counter", "time spent in direct InfluxDB write requests",
             self.store.write_seconds, {}),
            ("cems_influx_writes_total", "counter", "direct InfluxDB write requests", self.store.writes, {}),
            *write_latency_rows(self.store),
            ("cems_influx_points_written_total", "counter", "points written directly to InfluxDB",
             self.store.points_written, {}),
            ("cems_mqtt_connected", "gauge", "1 while connected to the broker", self.collector.connected.is_set(),
             {}),
            ("cems_deadletters_total", "counter", "dead-letter records written", self.deadletters.count, {}),
        ]

    def run(self) -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        # Intake needs only the journal: messages are taken and acknowledged even while InfluxDB is away.
        self.drain.start()
        self.writer.start()
        self.intake.start()
        self.processor.start()
        self.collector.start()
        api = self.cfg.api
        log.info("API on http://%s:%s/ (docs at /docs)", api.host, api.port)
        server = uvicorn.Server(uvicorn.Config(self.app, host=api.host, port=api.port, log_level="warning"))
        try:
            server.run()
        finally:
            log.info("stopping: collector, intake, processor, spool")
            self.collector.stop()
            self.intake.stop()
            self.processor.stop()
            if self.store.wait_written(10):  # what the processor handled last, then its checkpoint
                self.journal.commit(self.processor.stored_seq)
            self._stop_writer.set()
            self.writer.join(10)
            self._stop_drain.set()
            self.drain.join(10)
            self.journal.close()
            self.store.close()
