"""The edge gateway on a network of its own: `cems simulate` runs in a network namespace joined to this host by
a veth pair, and reaches mosquitto only over that link. Mid-run the link first drops a fifth of its packets
each way (nftables in the namespace), then goes silent altogether: no FIN, no RST, so each side learns of
it only when its keepalive lapses, as with a cut cable or a dead cellular modem. The broker publishes the
gateway's last will; the gateway buffers on disk, reconnects when the link is back and sends the rest.
Every reading it took is stored once, with the values the simulator's pure generator gives.

Traffic stays on this machine: loopback and the namespace's link (DESIGN: no other address)."""

import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest

from cems import localservices as ls
from cems.config import load_config
from cems.ingest.simulator import Scenario, StackSim, generate

from .conftest import Backends, StatusWatch, start_service, wait_for

pytestmark = pytest.mark.integration
RATE_HZ, BATCH, DURATION_S, SEED, KEEPALIVE_S = 4, 4, 45, 11, 5
LOSSY_S, CUT_S = 10, 15  # a lossy stretch, then a silent cut longer than 1.5 keepalives (the broker's limit)


class GatewayNet:
    """A network namespace with one veth link to this host (a /30 of 10.231.0.0/16), and nftables rules in
    the namespace that drop some or all of its packets."""

    def __init__(self):
        for tool, pkg in (("ip", "iproute2"), ("nft", "nftables")):
            if shutil.which(tool) is None:
                ls.apt_install([pkg], [tool], quiet=True)
        tag = uuid.uuid4().hex[:6]
        self.ns, self.host_if, self.gw_if = f"cems-{tag}", f"vc{tag}h", f"vc{tag}g"
        used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
        net = next(n for n in random.sample(range(256 * 64), 200) if f" 10.231.{n // 64}.{(n % 64) * 4}" not in used)
        base = f"10.231.{net // 64}.{(net % 64) * 4}"
        self.host_ip = base[:base.rindex(".") + 1] + str(int(base.rsplit(".", 1)[1]) + 1)
        self.gw_ip = base[:base.rindex(".") + 1] + str(int(base.rsplit(".", 1)[1]) + 2)
        try:
            self._sh("ip", "netns", "add", self.ns)
            self._sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.gw_if)
            self._sh("ip", "link", "set", self.gw_if, "netns", self.ns)
            self._sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            self._sh("ip", "link", "set", self.host_if, "up")
            self.exec_sh("ip", "addr", "add", f"{self.gw_ip}/30", "dev", self.gw_if)
            self.exec_sh("ip", "link", "set", self.gw_if, "up")
            self.exec_sh("ip", "link", "set", "lo", "up")
            self.exec_sh("nft", "add table inet cems; "
                         "add chain inet cems in { type filter hook input priority 0; }; "
                         "add chain inet cems out { type filter hook output priority 0; }")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _sh(*cmd: str) -> None:
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()} (network namespaces need root)")

    def exec_sh(self, *cmd: str) -> None:
        self._sh("ip", "netns", "exec", self.ns, *cmd)

    def prefix(self) -> list[str]:
        """Run a command inside the namespace."""
        return ["ip", "netns", "exec", self.ns]

    def drop(self, percent: int) -> None:
        """Drop `percent` % of the gateway's packets each way (100: a silent cut; 0: a clean link)."""
        rule = "drop" if percent >= 100 else f"numgen random mod 100 < {percent} drop"
        script = "flush chain inet cems in; flush chain inet cems out"
        if percent > 0:
            script += f"; add rule inet cems in {rule}; add rule inet cems out {rule}"
        self.exec_sh("nft", script)

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


@pytest.fixture
def gateway_net():
    net = GatewayNet()
    yield net
    net.close()


@pytest.fixture
def broker_dir():
    """A directory mosquitto can persist sessions in even after dropping root (tmp_path is private)."""
    wd = Path(tempfile.mkdtemp(prefix="cems-net-broker-"))
    (wd / "mosquitto").mkdir()
    for d in (wd, wd / "mosquitto"):
        d.chmod(0o777)
    yield wd
    shutil.rmtree(wd, ignore_errors=True)


def test_a_lossy_then_silent_link_loses_no_readings(backends, tmp_path, broker_dir, gateway_net):
    port, gw_port = ls.free_port(), ls.free_port()
    # The service and the test's watcher on loopback; the gateway on the namespace's link only.
    broker = ls.start_mosquitto(broker_dir, port, listener_conf=f"listener {gw_port} {gateway_net.host_ip}\n")
    run = start_service(Backends(broker_dir, broker, backends.influxd), tmp_path, prefix="net")
    service_mqtt = f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
    text = run.config.read_text()
    assert text.count(service_mqtt) == 1
    gw_config = tmp_path / "gateway.toml"
    gw_config.write_text(text.replace(service_mqtt, f'[mqtt]\nhost = "{gateway_net.host_ip}"\nport = {gw_port}\n'
                                                    f"keepalive_s = {KEEPALIVE_S}\n"))
    spool = tmp_path / "spool"
    cmd = [*gateway_net.prefix(), sys.executable, "-m", "cems.cli", "simulate", "--config", str(gw_config),
           "--no-events", "--rate", str(RATE_HZ), "--batch", str(BATCH), "--duration", str(DURATION_S),
           "--seed", str(SEED), "--spool-dir", str(spool)]
    log_path = tmp_path / "simulate.log"
    logf = open(log_path, "ab")  # noqa: SIM115
    watch = StatusWatch(port, "it")
    sim = None

    def accepted() -> int:
        return ((run.get("/health")[1] or {}).get("checks", {}).get("pipeline", {}).get("accepted") or 0)

    try:
        sim = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
        wait_for(lambda: (watch.last() or {}).get("status") == "online", 30, "the gateway's online status")
        wait_for(lambda: accepted() > 0, 30, "first readings stored")

        n_clean = accepted()
        gateway_net.drop(20)
        time.sleep(LOSSY_S)  # the lossy stretch's length, not a synchronisation
        n_lossy = accepted()
        gateway_net.drop(100)
        wait_for(lambda: (watch.last() or {}).get("status") == "offline", 3 * KEEPALIVE_S,
                 "the broker's last will for the silent gateway")
        assert watch.last()["reason"] == "connection lost"
        n_cut = accepted()
        time.sleep(max(0.0, CUT_S - 1.5 * KEEPALIVE_S))
        assert accepted() == n_cut, "readings arrived over a link that drops every packet"
        gateway_net.drop(0)
        wait_for(lambda: (watch.last() or {}).get("status") == "online", 40, "online again after the cut")
        assert sim.poll() is None, "the run ended before the link was back: lengthen DURATION_S"

        assert sim.wait(120) == 0, log_path.read_text()[-3000:]
        out = log_path.read_text()
        assert "still in" not in out, out[-3000:]  # the gateway's spool drained before it stopped
        assert watch.last()["status"] == "offline" and watch.last()["reason"] == "stopped"
        assert n_lossy > n_clean, "nothing arrived over the lossy link"

        # What the generator produced for this run (the same pure function, the same seed and start).
        state = orjson.loads((spool / "sim-it" / "simulator.json").read_bytes())
        cfg = load_config(run.config)
        n_readings = DURATION_S * RATE_HZ
        ts = state["start_ms"] + np.arange(n_readings, dtype=np.int64) * (1000 // RATE_HZ)
        expected = {s.id: generate(StackSim.of("it", "Asia/Shanghai", s), ts, Scenario(seed=SEED, events=False))
                    for s in cfg.plants[0].stacks}
        total = sum(len(r) for r in expected.values())
        assert total == 2 * n_readings
        run.wait(lambda: accepted() >= total, 60, "every reading accepted")
        rows = run.influx_query("SELECT count(co2_pct), sum(co2_pct) FROM reading WHERE plant = 'it' GROUP BY stack")
        by_stack = {r["stack"]: r for r in rows}
        for s, r in expected.items():
            assert by_stack[s]["count"] == len(r), s
            assert by_stack[s]["sum"] == pytest.approx(float(np.nansum(r.values["co2_pct"])), rel=1e-9), s
        pipe = run.get("/health")[1]["checks"]["pipeline"]
        assert pipe["accepted"] == total and pipe["corrections"] == 0 and pipe["rejected"] == 0
    finally:
        if sim is not None and sim.poll() is None:
            sim.kill()
            sim.wait()
        logf.close()
        watch.close()
        run.stop()
        broker.stop()
