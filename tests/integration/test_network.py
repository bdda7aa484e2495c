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
import time
import uuid

import pytest

from cems import localservices as ls
from cems.ingest.simulator import Scenario

from .conftest import Backends, GatewayRun, check_stored, expected_run, start_service, wait_for

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
    gw = GatewayRun(cmd, tmp_path / "simulate.log", port)
    accepted = run.accepted
    try:
        gw.start()
        wait_for(lambda: accepted() > 0, 30, "first readings stored")

        n_clean = accepted()
        gateway_net.drop(20)
        time.sleep(LOSSY_S)  # the lossy stretch's length, not a synchronisation
        n_lossy = accepted()
        assert n_lossy > n_clean, "nothing arrived over the lossy link"
        gateway_net.drop(100)
        will = gw.wait_status("offline", 3 * KEEPALIVE_S, "the broker's last will for the silent gateway")
        assert will["reason"] == "connection lost"
        n_cut = accepted()
        time.sleep(max(0.0, CUT_S - 1.5 * KEEPALIVE_S))
        assert accepted() == n_cut, "readings arrived over a link that drops every packet"
        gateway_net.drop(0)
        gw.wait_status("online", 40, "online again after the cut")
        assert gw.running(), "the run ended before the link was back: lengthen DURATION_S"
        gw.finish()

        n_readings = DURATION_S * RATE_HZ
        expected = expected_run(spool / "sim-it" / "simulator.json", run.config, n_readings, 1000 // RATE_HZ,
                                Scenario(seed=SEED, events=False))
        assert sum(len(r) for r in expected.values()) == 2 * n_readings
        check_stored(run, expected)
    finally:
        gw.close()
        run.stop()
        broker.stop()
