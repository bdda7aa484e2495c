"""Logging set-up: one line per event, to stderr."""

import logging
import sys


def configure(level: str = "INFO") -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per HTTP request to InfluxDB would drown everything else.
    logging.getLogger("httpx").setLevel(logging.WARNING)
