"""The store-and-forward edge gateway on real parts: `cems simulate` -> private mosquitto -> `cems serve` ->
InfluxDB, with the broker stopped mid-run and the gateway killed (-9) mid-run and started again."""

import signal
import sys
import time

from cems import localservices as ls
from cems.ingest.simulator import Scenario

from .conftest import Backends, GatewayRun, check_stored, expected_run, start_service, wait_for

SPEEDUP, DURATION_S, SEED, EVENTS_PER_DAY = 60, 40, 7, 300  # long enough to be killed mid-run


def test_broker_outage_and_killed_gateway_lose_no_readings(backends, tmp_path, broker_dir):
    port = ls.free_port()
    broker = ls.start_mosquitto(broker_dir, port)
    run = start_service(Backends(broker_dir, broker, backends.influxd), tmp_path, prefix="edge")
    spool = tmp_path / "spool"
    cmd = [sys.executable, "-m", "cems.cli", "simulate", "--config", str(run.config), "--speedup", str(SPEEDUP),
           "--duration", str(DURATION_S), "--seed", str(SEED), "--spool-dir", str(spool),
           "--faults-per-day", str(EVENTS_PER_DAY), "--gaps-per-day", str(EVENTS_PER_DAY)]
    gw = GatewayRun(cmd, tmp_path / "simulate.log", port)
    accepted = run.accepted
    try:
        gw.start()
        wait_for(lambda: accepted() > 100, 30, "first readings stored")

        broker.stop()  # an outage: the gateway keeps taking readings into its spool
        time.sleep(3)  # the outage's length, not a synchronisation
        n_down = accepted()
        broker = ls.start_mosquitto(broker_dir, port)
        # How many readings a given stretch holds depends on the day's seeded gaps and stops: wait for
        # progress, not a count. Every reading is counted exactly at the end.
        wait_for(lambda: accepted() > n_down, 60, "readings from the outage to arrive")

        assert gw.running(), "the gateway finished before it could be killed mid-run"
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait(10)
        assert gw.wait_status("offline", 30, "the last will (offline)")["reason"] == "connection lost"
        time.sleep(1)  # readings the analysers take while the gateway is dead are backfilled after the restart

        gw.start()  # the same command and spool: it resumes its run
        gw.finish()

        scen = Scenario(seed=SEED, faults_per_day=EVENTS_PER_DAY, gaps_per_day=EVENTS_PER_DAY)
        n_readings = DURATION_S * SPEEDUP
        expected = expected_run(spool / "sim-it" / "simulator.json", run.config, n_readings, 1000, scen)
        assert sum(len(r) for r in expected.values()) < 2 * n_readings  # the gaps did remove some
        assert {s: int((r.status == "D").sum()) for s, r in expected.items()} != {"k1": 0, "k2": 0}
        check_stored(run, expected)
    finally:
        gw.close()
        run.stop()
        broker.stop()
