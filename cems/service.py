"""`cems serve`: the collector, the processor and the API in one process (DESIGN §2)."""

import logging
import queue
import threading
import time

import uvicorn

from cems.api.app import create_app
from cems.config import Config
from cems.ingest.collector import Collector
from cems.ingest.pipeline import Pipeline
from cems.ingest.processor import Processor
from cems.store.deadletter import DeadLetters
from cems.store.influx import Influx

log = logging.getLogger("cems.service")


def influx_from(cfg: Config) -> Influx:
    i = cfg.influx
    return Influx(i.url, i.database, i.username, i.password, i.token, i.timeout_s)


class Service:
    """Everything `cems serve` runs, wired together; `run()` blocks until SIGINT/SIGTERM."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        if cfg.unknown_token_plants():
            log.warning("tokens name plants not in this config: %s", ", ".join(cfg.unknown_token_plants()))
        self.inbox: queue.Queue = queue.Queue(maxsize=cfg.mqtt.queue_messages)
        self.collector = Collector(cfg.mqtt, self.inbox)
        self.deadletters = DeadLetters(cfg.storage.data_dir)
        self.pipeline = Pipeline(cfg, influx_from(cfg), self.deadletters, publish=self.collector.publish)
        self.processor = Processor(self.pipeline, self.inbox, ack=self.collector.ack)
        self.started_at = time.time()
        self.app = create_app(cfg, influx_from(cfg), self._live, self.health)

    def _live(self, plant: str, stack: str) -> dict | None:
        return self.pipeline.live(plant, stack) if self.processor.ready.is_set() else None

    def health(self) -> dict:
        p = self.processor
        return {
            "pipeline": {"ok": p.ready.is_set() and p.is_alive(), "ready": p.ready.is_set(),
                         "queued_messages": self.inbox.qsize(), **self.pipeline.snapshot_counters()},
            "mqtt": {"ok": self.collector.connected.is_set(),
                     "broker": f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}"},
            "influx": {"ok": p.last_error is None, "url": self.cfg.influx.url, "error": p.last_error},
            "deadletters": {"ok": True, "count": self.deadletters.count},
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def _connect_when_ready(self) -> None:
        # Take messages from the broker only once the pipeline can store them.
        while not self.processor.ready.wait(0.5):
            if self.processor.stopping.is_set():
                return
        self.collector.start()

    def run(self) -> None:
        self.processor.start()
        threading.Thread(target=self._connect_when_ready, name="cems-connect", daemon=True).start()
        api = self.cfg.api
        log.info("API on http://%s:%s/ (docs at /docs)", api.host, api.port)
        server = uvicorn.Server(uvicorn.Config(self.app, host=api.host, port=api.port, log_level="warning"))
        try:
            server.run()
        finally:
            log.info("stopping: collector, then processor")
            self.collector.stop()
            self.processor.stop()
