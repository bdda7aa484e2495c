"""The live body (DESIGN §7 `/live`) is rebuilt only when what it shows changes, and it does change when it
should (in-process store)."""

import orjson

from cems.ingest.message import Message
from tests.ingest.test_pipeline_batch import T0, make_pipeline
from tests.ingest.test_raw_window import ROW, minute_msg


def test_live_body_follows_readings_totals_and_the_clock(tmp_path):
    """The live body is rebuilt only when what it shows changes, and it does change: with a closed minute's
    mass, with a new reading, and with the clock alone (pending -> stale after 5 minutes of silence)."""
    p, _ = make_pipeline(tmp_path)
    now = T0 + 30.0
    p.start(now)
    assert p.live("p", "a")["status"] == "no_data"
    p.handle(minute_msg("a", [T0 + k for k in range(30)]), now)
    p.tick(now)
    first = p.live("p", "a")
    assert first["status"] == "pending" and first["day_to_date_t"] == 0.0
    p.tick(now + 0.5)
    assert p.live("p", "a") is first  # nothing it shows changed: the same body
    p.handle(minute_msg("a", [T0 + k for k in range(30, 60)]), now + 31)
    p.tick(T0 + 61.0)  # the minute closes: its mass counts
    closed = p.live("p", "a")
    assert closed["day_to_date_t"] > 0 and closed["status"] == "valid"
    assert closed["last_reading_at"] != first["last_reading_at"]
    p.handle(minute_msg("a", [T0 + 60 + k for k in range(60)]), T0 + 120)
    p.tick(T0 + 121.0)  # a second minute, now the latest
    closed = p.live("p", "a")
    body = {"ts": T0 + 0.5, **ROW, "co2_pct": 14.0}  # a late, higher reading for the first minute
    p.handle(Message("cems/v1/p/a/readings", orjson.dumps(body), T0, source="mqtt"), T0 + 122)
    p.tick(T0 + 123.0)
    late = p.live("p", "a")  # only the totals move
    assert late["day_to_date_t"] != closed["day_to_date_t"]
    assert {k: v for k, v in late.items() if "_to_date_" not in k} == {k: v for k, v in closed.items()
                                                                       if "_to_date_" not in k}
    p.tick(T0 + 119 + 301.0)  # five minutes without a reading
    assert p.live("p", "a")["status"] == "stale"
    assert p.live("p", "a")["day_to_date_t"] == late["day_to_date_t"]
