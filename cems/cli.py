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
    from cems.ingest.simulator import run_simulator

    return run_simulator(load_config(a.config), rate_hz=a.rate, batch=a.batch, duration_s=a.duration,
                         stacks=a.stack, seed=a.seed)


def _hj212(a) -> int:
    from cems.ingest.hj212_bridge import run_bridge

    return run_bridge(load_config(a.config))


def _demo(a) -> int:
    from cems.demo import run_demo

    return run_demo(workdir=a.dir, api_port=a.port)


def _check(a) -> int:
    cfg = load_config(a.config)
    n = sum(len(p.stacks) for p in cfg.plants)
    print(f"ok: {len(cfg.plants)} plant(s), {n} stack(s), {len(cfg.api.tokens)} token(s)")
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
    s.add_argument("--rate", type=float, default=1.0, help="readings per second per stack (default 1)")
    s.add_argument("--batch", type=int, default=10, help="readings per MQTT message (default 10)")
    s.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    s.add_argument("--stack", action="append", help="plant/stack to simulate (default: all)")
    s.add_argument("--seed", type=int, default=None)
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
