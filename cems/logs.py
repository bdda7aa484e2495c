"""Logging set-up: one line per event, to stderr; plain text, or JSON for log collectors.

`--log-format json` (or `CEMS_LOG_FORMAT=json`) writes one JSON object per line: `time` (ISO 8601 UTC),
`level`, `logger`, `message`, `thread`, and `exc` with the traceback when there is one.
"""

import datetime as dt
import logging
import os
import sys

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "message": record.getMessage(),
               "thread": record.threadName}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def configure(level: str = "INFO", fmt: str | None = None) -> None:
    fmt = (fmt or os.environ.get("CEMS_LOG_FORMAT") or "text").lower()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True)
    # One line per HTTP request to InfluxDB would drown everything else.
    logging.getLogger("httpx").setLevel(logging.WARNING)
