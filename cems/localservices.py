#!/usr/bin/env python3
"""Local mosquitto and InfluxDB on loopback, with their data under a directory of ours.

Standard library only, so it runs before the project is installed:

    python3 cems/localservices.py start [--dir var/services] [--mqtt-port 1883] [--influx-port 8086]
    python3 cems/localservices.py stop|status [--dir var/services]
    python3 cems/localservices.py install      # apt-get install mosquitto influxdb when missing

The test fixtures use the same functions to start private instances on free ports.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PACKAGES = {"mosquitto": "mosquitto", "influxd": "influxdb"}


class ServiceError(RuntimeError):
    pass


def missing_binaries() -> list[str]:
    return [b for b in PACKAGES if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()]


def binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def ensure_installed(quiet: bool = False) -> None:
    """Install mosquitto and InfluxDB from Debian's packages when they are missing."""
    missing = missing_binaries()
    if missing:
        apt_install(sorted({PACKAGES[b] for b in missing}), missing, quiet, missing_binaries)


def apt_install(packages: list[str], wanted: list[str], quiet: bool = False, still_missing=None,
                recommends: bool = True) -> None:
    """Install Debian `packages` (as root, or through sudo) for the programs `wanted`; an error naming what is
    still missing after (`still_missing()`, default: those of `wanted` not on PATH). `recommends=False`
    leaves out the packages only recommended (docker-compose recommends the whole Docker engine)."""
    still_missing = still_missing or (lambda: [w for w in wanted if shutil.which(w) is None])
    if shutil.which("apt-get") is None:
        raise ServiceError(f"{', '.join(wanted)} not found and no apt-get here: install {', '.join(packages)}")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    if not quiet:
        print(f"installing {' '.join(packages)} from Debian packages ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    out = None if not quiet else subprocess.DEVNULL
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env, stdout=out)
    extra = [] if recommends else ["--no-install-recommends"]
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *extra, *packages], check=True, env=env, stdout=out)
    still = still_missing()
    if still:
        raise ServiceError(f"{', '.join(still)} still missing after installing {', '.join(packages)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), 0.5).close()
        return True
    except OSError:
        return False


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if port_open(port):
            return
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{proc.args[0]} exited with {proc.returncode} before listening on {port}")
        time.sleep(0.1)
    raise ServiceError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


@dataclass
class Service:
    name: str
    port: int
    proc: subprocess.Popen
    log: Path

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def mosquitto_conf(port: int, data: Path, host: str = "127.0.0.1") -> str:
    # persistence keeps sessions and queued QoS 1 messages across broker restarts; max_queued_messages 0
    # lifts mosquitto's default cap of 1000, beyond which it silently drops QoS 1 messages of a
    # persistent session that is offline (DESIGN §3).
    return (f"listener {port} {host}\nallow_anonymous true\npersistence true\n"
            f"persistence_location {data}/\nautosave_interval 10\nmax_queued_messages 0\n"
            f"max_inflight_messages 1000\nlog_dest stdout\nlog_type error\nlog_type warning\n")


INFLUXD_GOGC = "400"


def influx_conf(port: int, data: Path, tls: tuple[Path, Path] | None = None) -> str:
    https = (f'  https-enabled = true\n  https-certificate = "{tls[0]}"\n  https-private-key = "{tls[1]}"\n'
             if tls else "")
    return (f'reporting-disabled = true\nbind-address = "127.0.0.1:{free_port()}"\n'
            f'[meta]\n  dir = "{data}/meta"\n'
            f'[data]\n  dir = "{data}/data"\n  wal-dir = "{data}/wal"\n  query-log-enabled = false\n'
            f'[monitor]\n  store-enabled = false\n'
            f'[http]\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n{https}'
            f'[logging]\n  level = "warn"\n')


def _spawn(name: str, cmd: list[str], port: int, workdir: Path, detach: bool, env: dict | None = None) -> Service:
    log = workdir / f"{name}.log"
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=detach, env=env)
    try:
        wait_port(port, proc)
    except ServiceError as e:
        raise ServiceError(f"{name}: {e}; see {log}") from None
    (workdir / f"{name}.pid").write_text(str(proc.pid))
    return Service(name, port, proc, log)


def start_mosquitto(workdir: Path, port: int, detach: bool = False, listener_conf: str = "") -> Service:
    """`listener_conf`: more settings for the listener (e.g. `certfile`, `keyfile`, `require_certificate`)."""
    data = workdir / "mosquitto"
    data.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(mosquitto_conf(port, data) + listener_conf)
    return _spawn("mosquitto", [binary("mosquitto"), "-c", str(conf)], port, workdir, detach)


def start_influxd(workdir: Path, port: int, detach: bool = False, tls: tuple[Path, Path] | None = None) -> Service:
    """`tls`: (certificate, key) PEM files to serve https rather than http."""
    data = workdir / "influxdb"
    data.mkdir(parents=True, exist_ok=True)
    conf = workdir / "influxdb.conf"
    conf.write_text(influx_conf(port, data, tls))
    # Go's collector at GOGC=400 rather than 100: at high write rates influxd spends a good share of its CPU
    # collecting garbage; this trades heap for it (15-20 % more points per CPU second in quick `make bench-e2e` runs).
    env = {**os.environ, "GOGC": os.environ.get("GOGC", INFLUXD_GOGC)}
    svc = _spawn("influxd", [binary("influxd"), "run", "-config", str(conf)], port, workdir, detach, env)
    _wait_influx_ready(port, https=tls is not None)
    return svc


def _wait_influx_ready(port: int, timeout: float = 30.0, https: bool = False) -> None:
    import ssl
    import urllib.request

    context = None
    if https:  # whether it answers, not whom it is: the certificate is the caller's to check
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http{'s' if https else ''}://127.0.0.1:{port}/ping", timeout=2,
                                        context=context) as r:
                if r.status == 204:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise ServiceError(f"InfluxDB on port {port} did not answer /ping")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def stop_dir(workdir: Path) -> list[str]:
    stopped = []
    for name in ("mosquitto", "influxd"):
        pidfile = workdir / f"{name}.pid"
        if not pidfile.exists():
            continue
        pid = int(pidfile.read_text())
        if _pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            for _ in range(150):
                if not _pid_alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
            stopped.append(name)
        pidfile.unlink()
    return stopped


@dataclass
class Backends:
    """A mosquitto and an InfluxDB on loopback with their data under `workdir` (tests and benchmarks)."""

    workdir: Path
    mosquitto: Service | None = None
    influxd: Service | None = None

    @property
    def mqtt_port(self) -> int:
        return self.mosquitto.port

    @property
    def influx_port(self) -> int:
        return self.influxd.port

    @classmethod
    def start_private(cls, prefix: str = "cems-services-") -> "Backends":
        """Both on free ports in a new temporary directory, world-writable because mosquitto drops root for
        its own user and must still write its persistence file there."""
        ensure_installed(quiet=True)
        wd = Path(tempfile.mkdtemp(prefix=prefix))
        (wd / "mosquitto").mkdir()
        for d in (wd, wd / "mosquitto"):
            d.chmod(0o777)
        b = cls(wd)
        try:
            b.mosquitto = start_mosquitto(wd, free_port())
            b.influxd = start_influxd(wd, free_port())
        except BaseException:
            b.stop(keep=True)
            raise
        return b

    def stop(self, keep: bool = False) -> None:
        for svc in (self.mosquitto, self.influxd):
            if svc is not None:
                svc.stop()
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["install", "start", "stop", "status"])
    ap.add_argument("--dir", default="var/services", help="where data, logs and pid files go")
    ap.add_argument("--mqtt-port", type=int, default=1883)
    ap.add_argument("--influx-port", type=int, default=8086)
    a = ap.parse_args(argv)
    workdir = Path(a.dir).resolve()
    try:
        if a.action == "install":
            ensure_installed()
        elif a.action == "start":
            ensure_installed()
            workdir.mkdir(parents=True, exist_ok=True)
            for name, port, fn in (("mosquitto", a.mqtt_port, start_mosquitto),
                                   ("influxd", a.influx_port, start_influxd)):
                if port_open(port):
                    print(f"{name}: port {port} already in use; assuming it is running")
                    continue
                svc = fn(workdir, port, detach=True)
                print(f"{name}: 127.0.0.1:{port} (pid {svc.proc.pid}, data in {workdir}, log {svc.log})")
        elif a.action == "stop":
            print("stopped: " + (", ".join(stop_dir(workdir)) or "nothing was running"))
        else:
            for name in ("mosquitto", "influxd"):
                pidfile = workdir / f"{name}.pid"
                alive = pidfile.exists() and _pid_alive(int(pidfile.read_text()))
                print(f"{name}: {'running' if alive else 'stopped'}")
    except (ServiceError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
