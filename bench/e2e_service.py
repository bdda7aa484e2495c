"""The parts under test in the end-to-end benchmark: mosquitto and InfluxDB (`cems.localservices`) on free
loopback ports, and `cems serve` as a subprocess with a generated config; CPU time and memory from /proc.
"""

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt

from cems import localservices as ls

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int, tid: int | None = None) -> float:
    """User + system CPU time of a process (all its threads), or of one of its threads, so far [s]."""
    with open(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15 of proc(5))


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU time of each thread of a process so far [s], by thread id."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[int(tid)] = cpu_s(pid, int(tid))
        except OSError:  # the thread has ended
            pass
    return out


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Backends(ls.Backends):
    """A private mosquitto and InfluxDB for one benchmark run."""

    @classmethod
    def start(cls) -> "Backends":
        return cls.start_private("cems-bench-e2e-")


def write_config(path: Path, b: Backends, api_port: int, database: str, client_id: str, data_dir: Path,
                 plant: str, stacks: list[str], settle_s: float) -> Path:
    """One plant of `stacks` flow-meter stacks with the default regime (china) and ranges."""
    stack_tables = "".join(f'\n[[plants.stacks]]\nid = "{s}"\n' for s in stacks)
    path.write_text(f"""[mqtt]
host = "127.0.0.1"
port = {b.mqtt_port}
client_id = "{client_id}"

[influx]
url = "http://127.0.0.1:{b.influx_port}"
database = "{database}"

[api]
host = "127.0.0.1"
port = {api_port}

[storage]
data_dir = "{data_dir}"

[[plants]]
id = "{plant}"
name = "Benchmark plant"
timezone = "Asia/Shanghai"
settle_s = {settle_s}
{stack_tables}""")
    return path


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the benchmark goes, however it goes (Linux prctl)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class ServiceProcess:
    """`cems serve --config FILE` in a subprocess, its output in `log`."""

    def __init__(self, config: Path, api_port: int, log: Path):
        self.config = config
        self.api_port = api_port
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, timeout_s: float = 300.0) -> float:
        """Start and wait until the pipeline is ready; returns the seconds that took."""
        t = time.monotonic()
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "cems.cli", "serve", "--config", str(self.config)],
                                         stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         preexec_fn=_die_with_parent)
        while time.monotonic() - t < timeout_s:
            self.check_alive("starting")
            if ((self.health() or {}).get("checks") or {}).get("pipeline", {}).get("ready"):
                return time.monotonic() - t
            time.sleep(0.2)
        raise RuntimeError(f"cems serve not ready after {timeout_s:.0f} s; log:\n{self.tail()}")

    def health(self) -> dict | None:
        """The service's own /health checks (for a diagnosis only; rates never come from here)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/api/v1/health", timeout=5) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def check_alive(self, what: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"cems serve exited ({self.proc.returncode}) while {what}; log:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def forget_session(mqtt_port: int, client_id: str) -> None:
    """End a persistent MQTT session, so the broker stops keeping messages for a service that is gone."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True,
                    protocol=mqtt.MQTTv311)
    try:
        c.connect("127.0.0.1", mqtt_port)
        c.loop_start()
        time.sleep(0.2)
        c.disconnect()
        c.loop_stop()
    except OSError:
        pass


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"
