"""The `cems` command (DESIGN §7a, §3a): serve, simulate, hj212, demo, check-config."""

import argparse
import sys

from cems.config import ConfigError, load_config
from cems.logs import configure


def _serve(a) -> int:
    from cems.service import Service

    Service(load_config(a.config)).run()
    return 0


def _simulate(a) -> int:
    if a.protocol == "hj212":
        from cems.ingest.hj212_sim import run_hj212_simulator

        return run_hj212_simulator(load_config(a.config), rate_hz=a.rate, duration_s=a.duration, stacks=a.stack,
                                   seed=a.seed)
    from cems.ingest.replay import ReplayError, parse_ts_ms
    from cems.ingest.simulator import RunOptions, Scenario, run_simulator

    try:
        start = None if a.start is None else parse_ts_ms(a.start) / 1000
    except ValueError as e:
        print(f"cems simulate: --start: {e}", file=sys.stderr)
        return 2
    speedup = a.speedup if a.speedup is not None else (0.0 if a.replay else 1.0)
    scenario = Scenario(seed=a.seed or 0, events=not a.no_events, faults_per_day=a.faults_per_day,
                        gaps_per_day=a.gaps_per_day, stops_per_day=a.stops_per_day,
                        calibration_local_s=_hhmm(a.calibration_at), calibration_s=round(a.calibration_min * 60))
    opts = RunOptions(rate_hz=a.rate, batch=a.batch, duration_s=a.duration, speedup=speedup, start_s=start,
                      scenario=scenario)
    try:
        return run_simulator(load_config(a.config), opts, stacks=a.stack, replay=a.replay, load=a.load, gw=a.gw,
                             spool_dir=a.spool_dir)
    except ReplayError as e:
        print(f"cems simulate: --replay: {e}", file=sys.stderr)
        return 2


def _hhmm(text: str) -> int:
    h, _, m = text.partition(":")
    return int(h) * 3600 + int(m or 0) * 60


def _hj212(a) -> int:
    from cems.ingest.hj212_bridge import run_bridge

    return run_bridge(load_config(a.config))


def _demo(a) -> int:
    from cems.demo import run_demo

    return run_demo(workdir=a.dir, api_port=a.port)


def _check(a) -> int:
    cfg = load_config(a.config)
    n = sum(len(p.stacks) for p in cfg.plants)
    m, i = cfg.mqtt, cfg.influx
    print(f"ok: {len(cfg.plants)} plant(s), {n} stack(s), {len(cfg.api.tokens)} token(s); "
          f"broker mqtt{'s' if m.tls else ''}://{m.host}:{m.port}, database {i.url.rstrip('/')} ({i.database})")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cems", description="carbon-cems: online CO2 emissions monitoring")
    ap.add_argument("--log-level", default="INFO")
    ap.add_argument("--log-format", choices=("text", "json"), default=None,
                    help="text (default) or json: one object per line (also CEMS_LOG_FORMAT)")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the service (collector, pipeline, API)")
    s.add_argument("--config", help="TOML config (default: $CEMS_CONFIG)")
    s.set_defaults(fn=_serve)
    s = sub.add_parser("simulate", help="run simulated gateways for the configured stacks")
    s.add_argument("--config", help="TOML config (default: $CEMS_CONFIG)")
    s.add_argument("--rate", "--rate-hz", dest="rate", type=float, default=1.0,
                   help="readings per second per stack (default 1)")
    s.add_argument("--batch", type=int, default=10, help="readings per MQTT message (default 10)")
    s.add_argument("--duration", type=float, default=None, help="stop after this many (wall-clock) seconds")
    s.add_argument("--speedup", type=float, default=None,
                   help="simulated time runs this many times faster (default 1; a replay goes as fast as it can)")
    s.add_argument("--start", help="simulated start, epoch s or ISO 8601 (default now, or now - duration x speedup)")
    s.add_argument("--stack", action="append", help="plant/stack to simulate (default: all)")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--no-events", action="store_true", help="clean data: no calibration, faults, gaps or stops")
    s.add_argument("--faults-per-day", type=float, default=1.0, help="analyser faults (D) per stack per day")
    s.add_argument("--gaps-per-day", type=float, default=1.0, help="communication gaps per stack per day")
    s.add_argument("--stops-per-day", type=float, default=1 / 30, help="unit stops (F) per stack per day")
    s.add_argument("--calibration-at", default="03:00", help="daily zero/span calibration, local HH:MM")
    s.add_argument("--calibration-min", type=float, default=15.0, help="calibration window length [min]")
    s.add_argument("--replay", metavar="FILE.csv", help="replay readings from a CSV (plant, stack, ts, channels...)")
    s.add_argument("--load", type=int, default=0, metavar="N",
                   help="benchmark fleet: N clean stacks load-0001.. on the first configured plant")
    s.add_argument("--gw", help="gateway id (default sim-<plant>[-<stacks>])")
    s.add_argument("--spool-dir", help="store-and-forward directory (default <storage.data_dir>/gateways)")
    s.add_argument("--protocol", choices=["mqtt", "hj212"], default="mqtt",
                   help="mqtt gateways, or HJ 212 data loggers sending to the bridge (default mqtt)")
    s.set_defaults(fn=_simulate)
    s = sub.add_parser("hj212", help="run the HJ 212 bridge: data loggers over TCP -> MQTT readings")
    s.add_argument("--config", help="TOML config (default: $CEMS_CONFIG)")
    s.set_defaults(fn=_hj212)
    s = sub.add_parser("demo", help="start broker, database, service and a simulated plant locally")
    s.add_argument("--dir", default="var/demo", help="where the demo keeps its data (default var/demo)")
    s.add_argument("--port", type=int, default=8080, help="API and dashboard port (default 8080)")
    s.set_defaults(fn=_demo)
    s = sub.add_parser("check-config", help="validate a config file and exit")
    s.add_argument("--config", help="TOML config (default: $CEMS_CONFIG)")
    s.set_defaults(fn=_check)
    a = ap.parse_args(argv)
    configure(a.log_level, a.log_format)
    try:
        return a.fn(a)
    except ConfigError as e:
        print(f"cems: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
