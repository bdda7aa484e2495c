"""The store-and-forward edge gateway on real parts: `cems simulate` -> private mosquitto -> `cems serve` ->
InfluxDB, with the broker stopped mid-run and the gateway killed (-9) mid-run and started again."""

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from cems import localservices as ls
from cems.config import load_config
from cems.ingest.simulator import Scenario, StackSim, generate

from .conftest import Backends, StatusWatch, start_service, wait_for

SPEEDUP, DURATION_S, SEED, EVENTS_PER_DAY = 60, 40, 7, 300  # long enough to be killed mid-run


@pytest.fixture
def broker_dir():
    """A directory mosquitto can persist sessions in even after dropping root (tmp_path is private)."""
    wd = Path(tempfile.mkdtemp(prefix="cems-edge-broker-"))
    (wd / "mosquitto").mkdir()
    for d in (wd, wd / "mosquitto"):
        d.chmod(0o777)
    yield wd
    shutil.rmtree(wd, ignore_errors=True)


def test_broker_outage_and_killed_gateway_lose_no_readings(backends, tmp_path, broker_dir):
    port = ls.free_port()
    broker = ls.start_mosquitto(broker_dir, port)
    run = start_service(Backends(broker_dir, broker, backends.influxd), tmp_path, prefix="edge")
    spool = tmp_path / "spool"
    cmd = [sys.executable, "-m", "cems.cli", "simulate", "--config", str(run.config), "--speedup", str(SPEEDUP),
           "--duration", str(DURATION_S), "--seed", str(SEED), "--spool-dir", str(spool),
           "--faults-per-day", str(EVENTS_PER_DAY), "--gaps-per-day", str(EVENTS_PER_DAY)]
    logf = open(tmp_path / "simulate.log", "ab")  # noqa: SIM115
    watch = StatusWatch(port, "it")
    sim = None

    def accepted() -> int:
        return ((run.get("/health")[1] or {}).get("checks", {}).get("pipeline", {}).get("accepted") or 0)

    try:
        sim = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
        wait_for(lambda: (watch.last() or {}).get("status") == "online", 30, "the gateway's online status")
        wait_for(lambda: accepted() > 100, 30, "first readings stored")

        broker.stop()  # an outage: the gateway keeps taking readings into its spool
        time.sleep(3)  # the outage's length, not a synchronisation
        n_down = accepted()
        broker = ls.start_mosquitto(broker_dir, port)
        # How many readings a given stretch holds depends on the day's seeded gaps and stops: wait for
        # progress, not a count. Every reading is counted exactly at the end.
        wait_for(lambda: accepted() > n_down, 60, "readings from the outage to arrive")

        assert sim.poll() is None, "the gateway finished before it could be killed mid-run"
        sim.send_signal(signal.SIGKILL)
        sim.wait(10)
        wait_for(lambda: (watch.last() or {}).get("status") == "offline", 30, "the last will (offline)")
        assert watch.last()["reason"] == "connection lost"
        time.sleep(1)  # readings the analysers take while the gateway is dead are backfilled after the restart

        sim = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
        wait_for(lambda: (watch.last() or {}).get("status") == "online", 30, "online again after the restart")
        assert sim.wait(120) == 0, (tmp_path / "simulate.log").read_text()[-3000:]
        assert watch.last()["status"] == "offline" and watch.last()["reason"] == "stopped"

        # What the generator produced for this run (the same pure function, the same seed and start).
        state = orjson.loads((spool / "sim-it" / "simulator.json").read_bytes())
        cfg = load_config(run.config)
        scen = Scenario(seed=SEED, faults_per_day=EVENTS_PER_DAY, gaps_per_day=EVENTS_PER_DAY)
        n_readings = DURATION_S * SPEEDUP
        ts = state["start_ms"] + np.arange(n_readings, dtype=np.int64) * 1000
        expected = {s.id: generate(StackSim.of("it", "Asia/Shanghai", s), ts, scen) for s in cfg.plants[0].stacks}
        total = sum(len(r) for r in expected.values())
        assert total < 2 * n_readings  # the gaps did remove some
        assert {s: int((r.status == "D").sum()) for s, r in expected.items()} != {"k1": 0, "k2": 0}
        run.wait(lambda: accepted() >= total, 60, "every reading accepted")

        rows = run.influx_query("SELECT count(co2_pct), sum(co2_pct) FROM reading WHERE plant = 'it' GROUP BY stack")
        # A stack whose whole window falls in one of the day's seeded gaps has no readings, and no row here.
        by_stack = {r["stack"]: r for r in rows}
        for s, r in expected.items():
            got = by_stack.get(s, {"count": 0, "sum": 0.0})
            assert got["count"] == len(r), s
            assert got["sum"] == pytest.approx(float(np.nansum(r.values["co2_pct"])), rel=1e-9, abs=1e-9), s
        for s, r in expected.items():  # `status` is a field: one query per flag
            for flag, n in zip(*np.unique(r.status, return_counts=True), strict=True):
                [row] = run.influx_query(f"SELECT count(co2_pct) FROM reading WHERE plant = 'it' AND stack = '{s}' "
                                         f"AND status = '{flag}'")
                assert row["count"] == n, (s, flag)
        pipe = run.get("/health")[1]["checks"]["pipeline"]
        assert pipe["accepted"] == total and pipe["corrections"] == 0  # resends were identical duplicates
    finally:
        if sim is not None and sim.poll() is None:
            sim.kill()
            sim.wait()
        logf.close()
        watch.close()
        run.stop()
        broker.stop()
