"""A message as received, from MQTT or (later) HTTP: what the journal keeps and the pipeline handles."""

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Message:
    topic: str
    payload: bytes
    received_at: float
    mid: int = 0  # the broker's message id, for the acknowledgement (not journaled)
    qos: int = 0
    source: str = "mqtt"  # "mqtt" or "http"
    # Called with the journal seq once the message is on disk, instead of a broker acknowledgement
    # (HTTP ingest waits on it; not journaled).
    on_journaled: Callable[[int], None] | None = None
