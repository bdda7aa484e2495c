"""What ships in deploy/ and the demo: configs that load, a compose file that holds together."""

import shutil
import subprocess
from pathlib import Path

import yaml

from cems import localservices as ls
from cems.config import load_config, parse_config
from cems.demo import demo_config

ROOT = Path(__file__).resolve().parents[1]


def test_docker_config_loads():
    cfg = load_config(ROOT / "deploy" / "docker.toml")
    assert [(p.id, s.id) for p in cfg.plants for s in p.stacks] == [("wusha", "u1"), ("wusha", "u2")]
    assert cfg.mqtt.host == "mosquitto" and cfg.influx.url == "http://influxdb:8086"


def test_demo_config_is_the_design_demo_plant(tmp_path):
    cfg = parse_config(demo_config(1883, 8086, 8080, tmp_path, {"operator": "op-token-123", "admin": "ad-token-123"}))
    [plant] = cfg.plants
    assert (plant.id, plant.timezone, [s.id for s in plant.stacks]) == ("wusha", "Asia/Shanghai", ["u1", "u2"])
    assert {t.role for t in cfg.api.tokens} == {"operator", "admin"}


def test_compose_file_services_and_volumes():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert set(services) == {"mosquitto-init", "mosquitto", "influxdb", "cems", "simulator"}
    assert services["mosquitto"]["depends_on"]["mosquitto-init"]["condition"] == "service_completed_successfully"
    assert services["cems"]["environment"]["CEMS_MQTT_USERNAME"] == "cems"
    assert services["simulator"]["environment"]["CEMS_MQTT_USERNAME"] == "wusha"
    assert services["influxdb"]["image"] == "influxdb:1.11"
    assert services["simulator"]["profiles"] == ["demo"]
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            assert vol.count(":") <= 2, f"{name}: {vol}"
            if src.startswith("./"):
                assert (ROOT / src).exists(), f"{name}: {src} missing"
            else:
                assert src in doc["volumes"], f"{name}: named volume {src} not declared"
        if "build" in svc:
            assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).exists()


def test_broker_configs_keep_the_guarantees():
    for text in ((ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text(), ls.mosquitto_conf(1883, Path("/x"))):
        assert "persistence true" in text
        assert "max_queued_messages 0" in text


def test_broker_needs_a_login():
    text = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in text
    assert "password_file /mosquitto/config/passwd" in text and "acl_file /mosquitto/config/acl" in text
    env = (ROOT / "deploy" / "env.example").read_text()
    for key in ("CEMS_MQTT_PASSWORD", "CEMS_GATEWAY_PASSWORDS", "CEMS_WUSHA_GATEWAY_PASSWORD"):
        assert f"{key}=" in env


def _compose_cli() -> list[str]:
    """A compose implementation that can check a file without an engine: the docker plugin, or docker-compose
    (Debian's package, installed when neither is here, so the check never silently skips)."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if not shutil.which("docker-compose"):
        ls.apt_install(["docker-compose"], ["docker-compose"], quiet=True, recommends=False)  # not the engine
    return ["docker-compose"]


def test_compose_config_validates_with_the_example_env(tmp_path):
    """`compose config` (no engine needed) accepts the file with .env from deploy/env.example, the demo profile
    too, and refuses it without the passwords .env must set."""
    cli = _compose_cli()
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    run = lambda *args: subprocess.run([*cli, *args], cwd=tmp_path, capture_output=True, text=True)  # noqa: E731
    assert run("config", "-q").returncode != 0  # no .env: the passwords are missing
    shutil.copy(ROOT / "deploy" / "env.example", tmp_path / ".env")
    tls = ("-f", "docker-compose.yml", "-f", "deploy/compose.tls.yml")
    for args in (("config", "-q"), ("--profile", "demo", "config", "-q"), (*tls, "config", "-q")):
        p = run(*args)
        assert p.returncode == 0, p.stderr
    services = run("--profile", "demo", "config", "--services").stdout.split()
    assert set(services) == {"mosquitto-init", "mosquitto", "influxdb", "cems", "simulator"}

    # The TLS override adds the 8883 listener, its file and the certificates to the broker, and nothing else.
    base, merged = (yaml.safe_load(run(*args, "config").stdout)["services"]["mosquitto"] for args in ((), tls))
    assert sorted(str(p.get("published", p)) for p in merged["ports"]) == ["1883", "8883"]
    targets = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in merged["volumes"]}
    assert {"/cfg/tls.conf", "/mosquitto/certs"} <= targets
    assert merged["command"][-1] == base["command"][-1].replace(
        " && exec", " && cat /cfg/tls.conf >> /mosquitto/config/mosquitto.conf && exec")
    assert {k: v for k, v in merged.items() if k not in ("ports", "volumes", "command")} == \
        {k: v for k, v in base.items() if k not in ("ports", "volumes", "command")}


def test_demo_status_line_shows_readings_per_second_over_the_last_minute(monkeypatch):
    """Gateways send batches (u1: ten readings every 10 s), so the rate is taken over a minute, not between lines."""
    from cems import demo

    accepted = {"n": 0}
    answers = {
        "/api/v1/health": lambda: {"status": "ok", "checks": {"pipeline": {"accepted": accepted["n"], "rejected": 1}}},
        "/api/v1/stacks": lambda: {"items": [{"plant": "wusha", "stack": "u1"}, {"plant": "wusha", "stack": "u2"}]},
        "/api/v1/stacks/wusha/u1/live": lambda: {"rate_t_h": 223.61, "hour_to_date_t": 3.734},
        "/api/v1/stacks/wusha/u2/live": lambda: {},
        "/api/v1/stacks/wusha/u1/hours": lambda: {"items": [
            {"start": "2026-11-26T12:00:00+08:00", "co2_t": 250.04}, {"start": "2026-11-26T13:00:00+08:00",
                                                                        "co2_t": 268.16}]},
        "/api/v1/stacks/wusha/u2/hours": lambda: {"items": []},
    }
    monkeypatch.setattr(demo, "_get", lambda url, token=None: answers[url.removeprefix("http://x").split("?")[0]]())
    last: dict = {}
    lines = []
    for t in range(0, 125, 5):  # two stacks at 1 Hz, one of them arriving 10 at a time
        accepted["n"] = t + (t // 10) * 10
        lines.append(demo._status_line("http://x", "tok", last, now=1000.0 + t))
    assert lines[0] == ("ok | 0 readings | 2 stacks | 1 rejected | u1: 223.6 t/h, this hour 3.73 t, last hour "
                        "(13:00) 268.2 t | u2: waiting for the first minute")
    rates = [float(line.split("(")[1].split("/s")[0]) for line in lines[13:]]  # a minute and more in
    assert all(1.9 <= r <= 2.1 for r in rates), rates
    assert len(last["samples"]) <= 14  # a minute of samples at most, not the whole run


def test_the_installed_package_holds_every_module_the_image_runs(tmp_path):
    """The image installs the project with `pip install .` (deploy/Dockerfile), not in editable mode: every
    module of the source folders must be in the wheel, and the service must import from the wheel alone."""
    import re
    import sys
    import zipfile

    # What the Dockerfile copies, and nothing else (no build/ left over from an earlier build).
    src = tmp_path / "src"
    src.mkdir()
    copies = re.findall(r"^COPY (.+) \S+$", (ROOT / "deploy" / "Dockerfile").read_text(), re.M)
    for name in " ".join(copies).split():
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, src / name)
    wheels = tmp_path / "wheel"
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(wheels), str(src)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    [wheel] = wheels.glob("carbon_cems-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = {n for n in z.namelist() if n.startswith("cems/")}
        z.extractall(tmp_path / "site")
    folders = {"cems": "cems", "ingest": "cems/ingest", "compute": "cems/compute", "store": "cems/store",
               "api": "cems/api"}
    expected = {f"{dest}/{f.relative_to(ROOT / src).as_posix()}" for src, dest in folders.items()
                for f in (ROOT / src).rglob("*") if f.is_file() and (f.suffix == ".py" or "static" in f.parts)
                and "__pycache__" not in f.parts}
    assert not expected - shipped, f"not in the wheel: {sorted(expected - shipped)}"

    site = str(tmp_path / "site")
    code = f"""
import importlib, pkgutil, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path.insert(0, {site!r})
import cems
names = [m.name for m in pkgutil.walk_packages(cems.__path__, "cems.")]
for name in ["cems", *names]:
    module = importlib.import_module(name)
    assert module.__file__.startswith({site!r}), (name, module.__file__)
import cems.service, cems.api.app
from cems.cli import main
sys.exit(main(["check-config", "--config", {str(ROOT / "deploy" / "docker.toml")!r}]))
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.startswith("ok: 1 plant(s), 2 stack(s)"), p.stdout + p.stderr[-3000:]
