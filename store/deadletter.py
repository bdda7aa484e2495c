"""The dead-letter store: every rejected message, whole, with its reason, in daily JSON-lines files.

Files live under ``{data_dir}/deadletter/YYYY-MM-DD.jsonl`` (UTC date of receipt). Each record is fsync'd
before the journal's checkpoint passes the message, so a rejection is never lost even while InfluxDB is
down (and a message handled twice after a crash may be recorded twice: the same payload and reason).
"""

import base64
import datetime as dt
import os
import threading
from pathlib import Path

import orjson


class DeadLetters:
    def __init__(self, data_dir: Path):
        self.dir = Path(data_dir) / "deadletter"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.count = 0

    def record(self, *, received_at: float, source: str, reason: str, payload: bytes,
               gw: str | None = None, seq: int | None = None) -> dict:
        """Append one rejection durably; returns the record (without the payload)."""
        rec = {
            "received_at": dt.datetime.fromtimestamp(received_at, dt.UTC).isoformat(),
            "source": source,
            "reason": reason,
            "gw": gw,
            "seq": seq,
        }
        try:
            text = payload.decode("utf-8")
            full = {**rec, "payload": text}
        except UnicodeDecodeError:
            full = {**rec, "payload_b64": base64.b64encode(payload).decode()}
        path = self.dir / (rec["received_at"][:10] + ".jsonl")
        with self._lock:
            with open(path, "ab") as f:
                f.write(orjson.dumps(full) + b"\n")
                f.flush()
                os.fsync(f.fileno())
            self.count += 1
        return rec
