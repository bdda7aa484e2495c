"""Scale-out: two `cems serve` collectors on one broker and one database, each owning some plants
(`mqtt.subscribe = "configured"`), give the figures of one process owning them all, and one of them
killed and restarted mid-stream loses and doubles nothing."""

import json
import uuid

import pytest

from cems import localservices as ls
from tests.integration.conftest import Running, write_config
from tests.integration.faultkit import Publisher, hour_diffs, settled_hours, stream_start

pytestmark = pytest.mark.integration
PLANTS = {"pa": ("s1", "s2"), "pb": ("s1",)}
VALUES = {"flow_m3h": 1.3e6, "co2_pct": 12.5, "temp_c": 50.0, "press_kpa": 101.0, "h2o_pct": 10.0}


def plants_toml(plants) -> str:
    out = ""
    for p in plants:
        out += f'\n[[plants]]\nid = "{p}"\ntimezone = "Asia/Shanghai"\nsettle_s = 2\n'
        out += "".join(f'\n[[plants.stacks]]\nid = "{s}"\n' for s in PLANTS[p])
    return out


def start(backends, tmp, db: str, plants, subscribe: str) -> Running:
    name = uuid.uuid4().hex[:8]
    port = ls.free_port()
    d = tmp / name
    d.mkdir()
    cfg = write_config(d / "cems.toml", backends, port, d / "data", db, f"cems-so-{name}", plants_toml(plants))
    cfg.write_text(cfg.read_text().replace('client_id = "', f'subscribe = "{subscribe}"\nclient_id = "', 1))
    run = Running(backends, cfg, port, d / "data", db, d / "service.log")
    run.start()
    return run


def stream(t0: int) -> list[tuple[str, str]]:
    msgs = []
    # Two hours, interleaved across plants and stacks as gateways send them; pb/s1 has a 10-minute fault.
    for m in range(120):
        for p, stacks in PLANTS.items():
            for k, s in enumerate(stacks):
                body = {"ts": [t0 + m * 60 + i for i in range(60)], **VALUES,
                        "co2_pct": [12.0 + k + (m * 60 + i) % 7 / 10 for i in range(60)],
                        "status": "D" if (p, s, m // 60) == ("pb", "s1", 1) and m % 60 < 10 else "N"}
                msgs.append((f"cems/v1/{p}/{s}/readings", json.dumps(body)))
    return msgs


def figures(run: Running, start, plants=tuple(PLANTS)) -> dict:
    return {(p, s): settled_hours(run, s, start, plant=p, n=2) for p in plants for s in PLANTS[p]}


def test_two_collectors_split_the_plants_and_agree_with_one(backends, tmp_path):
    start_dt = stream_start()
    t0 = int(start_dt.timestamp())
    msgs = stream(t0)
    shared_db = "so_" + uuid.uuid4().hex[:8]
    a = start(backends, tmp_path, shared_db, ["pa"], "configured")
    b = start(backends, tmp_path, shared_db, ["pb"], "configured")
    single = start(backends, tmp_path, "so1_" + uuid.uuid4().hex[:8], ["pa", "pb"], "all")
    try:
        pub = Publisher(backends.mqtt_port, msgs, chunk=40, pause_s=0.05)
        pub.start()
        a.wait(lambda: a.get("/health")[1]["checks"]["pipeline"]["accepted"] > 60 * 40, 60, "a under way")
        a.stop(kill=True)  # one collector dies mid-stream; the broker holds its plants' messages
        a.start()
        pub.finish()
        want = figures(single, start_dt)
        got = figures(a, start_dt, ["pa"]) | figures(b, start_dt, ["pb"])
        assert got.keys() == want.keys()
        for key, hours in got.items():
            diffs = hour_diffs(hours, want[key])
            assert not diffs, f"{key}: split collectors differ from one process:\n" + "\n".join(diffs)
        rows = a.influx_query("SELECT count(co2_pct) FROM reading GROUP BY plant, stack")
        assert {(r["plant"], r["stack"]): r["count"] for r in rows} == {k: 7200 for k in want}, rows
        # Each process saw only its own plants: nothing of the other's was rejected as unknown.
        for run in (a, b):
            assert run.get("/health")[1]["checks"]["pipeline"]["rejected"] == 0
    finally:
        for run in (a, b, single):
            run.stop()
