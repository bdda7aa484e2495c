"""Two modes of `cems simulate` end to end on real parts (mosquitto, `cems serve`, InfluxDB):

- `--load N`: the benchmark fleet of N clean stacks `load-0001..` on the first configured plant. Every
  reading the simulator says it took arrives and is stored once, with the values its pure generator gives;
  a configured stack beyond N gets nothing.
- `--replay FILE.csv`: the stored reading points are the CSV's rows exactly (per stack, per timestamp,
  values and flag), and the minutes the file covers get their figures.
"""

import datetime as dt
import re
import subprocess
import sys
import time

import numpy as np
import orjson
import pytest

from cems.ingest.simulator import Scenario, StackSim, generate
from tests.conftest import close, rate_kg_h_closed_form

from .conftest import STACKS, start_service

pytestmark = pytest.mark.integration
LOAD_N, RATE_HZ, DURATION_S, SPEEDUP, BATCH, SEED = 3, 2, 4, 10, 7, 5
LOAD_PLANT = '[[plants]]\nid = "ld"\nname = "Load plant"\ntimezone = "Asia/Shanghai"\n' + "".join(
    f'\n[[plants.stacks]]\nid = "load-{i:04d}"\nname = "Load stack {i}"\n' for i in range(1, LOAD_N + 2))
TZ = dt.timezone(dt.timedelta(hours=8))
K2_AREA_M2, K2_KV = 30.0, 0.95  # as conftest.STACKS configures k2
FIXED = {"temp_c": 50.0, "press_kpa": 101.1, "h2o_pct": 10.0}  # constant, so a minute's Qsn is Qsn(mean flow)


def simulate(config, *args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "cems.cli", "simulate", "--config", str(config), *args],
                       capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "still in" not in p.stdout + p.stderr, p.stdout + p.stderr  # the edge spool drained before exit
    return p.stdout


def health(run) -> dict:
    return (run.get("/health")[1] or {}).get("checks", {}).get("pipeline", {})


def test_load_fleet_every_reading_is_stored(backends, tmp_path):
    run = start_service(backends, tmp_path, plants=LOAD_PLANT, prefix="load")
    try:
        spool = tmp_path / "spool"
        out = simulate(run.config, "--load", str(LOAD_N), "--rate", str(RATE_HZ), "--duration", str(DURATION_S),
                       "--speedup", str(SPEEDUP), "--batch", str(BATCH), "--seed", str(SEED),
                       "--spool-dir", str(spool))

        # What the run should have produced: duration x speed-up x rate readings per stack, no events.
        per_stack = DURATION_S * SPEEDUP * RATE_HZ
        stacks = [f"load-{i:04d}" for i in range(1, LOAD_N + 1)]
        done = re.search(r"simulate: done, (\d+) reading index\(es\) taken: (.*)", out)
        assert done, out
        assert int(done[1]) == LOAD_N * per_stack
        assert dict(kv.split("=") for kv in done[2].split(", ")) == {f"ld/{s}": str(per_stack) for s in stacks}

        state = orjson.loads((spool / "load-ld" / "simulator.json").read_bytes())
        ts = state["start_ms"] + np.arange(per_stack, dtype=np.int64) * (1000 // RATE_HZ)
        expected = {s: generate(StackSim("ld", s, "Asia/Shanghai"), ts, Scenario(seed=SEED, events=False))
                    for s in stacks}
        assert all(len(r) == per_stack and set(r.status) == {"N"} for r in expected.values())

        total = LOAD_N * per_stack
        run.wait_stored("ld", dict.fromkeys(stacks, per_stack))  # load-0004 is configured, not in the fleet
        rows = run.influx_query("SELECT count(co2_pct), sum(co2_pct), sum(flow_m3h) FROM reading "
                                "WHERE plant = 'ld' GROUP BY stack")
        got = {r["stack"]: r for r in rows}
        assert sorted(got) == stacks  # load-0004 is configured but not part of the fleet
        for s, r in expected.items():
            assert got[s]["count"] == per_stack, s
            assert got[s]["sum"] == pytest.approx(float(r.values["co2_pct"].sum()), rel=1e-9)
            assert got[s]["sum_1"] == pytest.approx(float(r.values["flow_m3h"].sum()), rel=1e-9)
        first = run.influx_query("SELECT first(co2_pct) FROM reading WHERE plant = 'ld' GROUP BY stack")
        assert {r["stack"]: r["time"] for r in first} == dict.fromkeys(stacks, state["start_ms"])
        pipe = health(run)
        assert (pipe["accepted"], pipe["duplicates"], pipe["corrections"], pipe["rejected"]) == (total, 0, 0, 0)
    finally:
        run.stop()


def replay_rows(t0: int) -> list[dict]:
    """Three complete minutes and 25 s of a fourth at 5 s sampling, for k1 (flow meter, epoch-second `ts`) and
    k2 (velocity, ISO 8601 `ts`, 2 s later); one k2 reading in the second minute flagged C (calibration)."""
    rows = []
    for j in range(3 * 12 + 5):
        t = t0 + 5 * j
        rows.append({"ms": t * 1000, "plant": "it", "stack": "k1", "ts": str(t), "flow_m3h": 1.30e6 + 1000 * j,
                     "co2_pct": round(12.0 + 0.013 * j, 3), "status": "", **FIXED})
        iso = dt.datetime.fromtimestamp(t + 2, TZ).isoformat()
        rows.append({"ms": (t + 2) * 1000, "plant": "it", "stack": "k2", "ts": iso,
                     "velocity_ms": round(14.0 + 0.01 * j, 2), "co2_pct": round(13.0 - 0.007 * j, 3),
                     "status": "C" if j == 15 else "N", **FIXED})
    return rows


def test_replay_stores_the_csv_rows_exactly(backends, tmp_path):
    run = start_service(backends, tmp_path, plants=STACKS, prefix="replay")
    try:
        t0 = (int(time.time()) // 60 - 30) * 60  # a whole minute half an hour ago
        rows = replay_rows(t0)
        cols = ["plant", "stack", "ts", "flow_m3h", "velocity_ms", "co2_pct", *FIXED, "status"]
        csv = tmp_path / "replay.csv"
        csv.write_text(",".join(cols) + "\n" + "".join(",".join(str(r.get(c, "")) for c in cols) + "\n"
                                                        for r in rows))
        out = simulate(run.config, "--replay", str(csv), "--spool-dir", str(tmp_path / "spool"))
        assert "simulate: done, 82 reading index(es) taken: it/k1=41, it/k2=41" in out, out

        run.wait_stored("it", {"k1": 41, "k2": 41})
        for stack, flow in (("k1", "flow_m3h"), ("k2", "velocity_ms")):
            want = {r["ms"]: (r["co2_pct"], r[flow], r["status"] or "N", r["temp_c"])
                    for r in rows if r["stack"] == stack}
            got = run.influx_query(f"SELECT co2_pct, {flow}, status, temp_c FROM reading "
                                   f"WHERE plant = 'it' AND stack = '{stack}'")
            assert {g["time"]: (g["co2_pct"], g[flow], g["status"], g["temp_c"]) for g in got} == want
            assert len(got) == 41
        pipe = health(run)
        assert (pipe["accepted"], pipe["duplicates"], pipe["rejected"]) == (len(rows), 0, 0)

        start = dt.datetime.fromtimestamp(t0, TZ)
        for stack, area, kv, flow in (("k1", None, 1.0, "flow_m3h"), ("k2", K2_AREA_M2, K2_KV, "velocity_ms")):
            def minutes(stack=stack):
                code, body = run.get(f"/stacks/it/{stack}/minutes", start=start.isoformat(),
                                     end=(start + dt.timedelta(minutes=4)).isoformat())
                return code == 200 and [m["readings"] for m in body["items"]] == [12, 12, 12, 5] and body["items"]

            items = run.wait(minutes, 60, f"{stack}'s minute figures")
            assert [m["start"] for m in items] == [(start + dt.timedelta(minutes=m)).isoformat() for m in range(4)]
            mine = [r for r in rows if r["stack"] == stack]
            for m, item in enumerate(items[:3]):
                chunk = [r for r in mine[12 * m:12 * m + 12] if r["status"] in ("", "N")]
                assert item["valid_readings"] == len(chunk)
                if len(chunk) < 12:  # k2's second minute: 11 valid readings, below minute_min_samples
                    assert (stack, m, item["status"], item["co2_kg"]) == ("k2", 1, "invalid", None)
                    continue
                mean = {k: float(np.mean([r[k] for r in chunk])) for k in ("co2_pct", flow)} | FIXED
                assert item["status"] == "valid"
                assert close(item["co2_kg"], rate_kg_h_closed_form(mean, area, kv) / 60, rel=1e-6), (stack, m)
            assert items[3]["status"] == "invalid"  # the fourth minute holds only 5 readings

        # The file edited and replayed again on the same spool: a new run (not the finished one resumed), so
        # every reading goes again and comes in as a correction.
        for r in rows:
            r["co2_pct"] = round(r["co2_pct"] + 0.5, 3)
        csv.write_text(",".join(cols) + "\n" + "".join(",".join(str(r.get(c, "")) for c in cols) + "\n"
                                                        for r in rows))
        simulate(run.config, "--replay", str(csv), "--spool-dir", str(tmp_path / "spool"))
        run.wait(lambda: health(run).get("corrections", 0) >= len(rows), 60, "the edited readings as corrections")
        want = sum(r["co2_pct"] for r in rows)
        # Handled is not yet stored (the writer thread follows): wait for the corrected sum, then check it.
        co2_sum = lambda: run.influx_query("SELECT sum(co2_pct) FROM reading WHERE plant = 'it'")[0]["sum"]  # noqa: E731
        run.wait(lambda: co2_sum() == pytest.approx(want, rel=1e-9), 30, "the corrected readings stored")
        assert co2_sum() == pytest.approx(want, rel=1e-9)
    finally:
        run.stop()
