"""A basic plant gateway simulator: one gateway per configured stack, plausible coal-unit readings.

Each gateway publishes batches of 1 Hz (configurable) readings for "now" on the contract topic with
QoS 1, `gw` and an increasing `seq`. Values follow a daily load curve of a 320 MW coal unit (the demo
plant of DESIGN §7a: about 1.2-1.6 million m3/h actual wet flow, 12-14 % CO2 dry, ~10 % moisture,
45-55 degC, 250-300 t CO2/h at full load) with measurement noise. Issue 6 extends this with calibration
periods, faults, stops and replay.
"""

import hashlib
import logging
import math
import time

import numpy as np
import orjson

from cems.config import Config, StackConfig
from cems.ingest.collector import mqtt_client

log = logging.getLogger("cems.simulate")


def load_fraction(t: float, phase_h: float) -> float:
    """Unit load [0..1] at epoch time `t`: low at night, two daytime peaks, shifted by `phase_h`."""
    h = ((t / 3600.0) + 8.0 + phase_h) % 24.0  # local hour in UTC+8
    return 0.78 + 0.17 * math.sin(2 * math.pi * (h - 9.0) / 24.0) + 0.05 * math.sin(2 * math.pi * h / 12.0)


def simulated_reading(stack: StackConfig, t: float, rng: np.random.Generator, phase_h: float = 0.0) -> dict:
    """One reading of the contract payload's channels for `stack` at time `t`."""
    load = load_fraction(t, phase_h)
    flow = 1.6e6 * load * (1 + rng.normal(0, 0.01))
    r = {
        "co2_pct": round(12.0 + 2.0 * (load - 0.55) / 0.45 + rng.normal(0, 0.05), 3),
        "o2_pct": round(8.5 - 3.0 * load + rng.normal(0, 0.05), 3),
        "temp_c": round(45.0 + 10.0 * load + rng.normal(0, 0.2), 2),
        "press_kpa": round(101.0 + rng.normal(0, 0.05), 3),
        "h2o_pct": round(10.0 + rng.normal(0, 0.1), 3),
    }
    if stack.area_m2:
        r["velocity_ms"] = round(flow / (3600.0 * stack.area_m2 * (stack.kv or 1.0)), 3)
    else:
        r["flow_m3h"] = round(flow, 0)
    return r


def _phase(plant: str, stack: str) -> float:
    return int(hashlib.sha256(f"{plant}/{stack}".encode()).hexdigest()[:4], 16) % 6 - 3.0


def batch_payload(rows: list[tuple[float, dict]], gw: str, seq: int) -> bytes:
    """A columnar batch (DESIGN §3) from (ts, channels) rows."""
    keys = list(rows[0][1])
    body = {"ts": [round(t, 3) for t, _ in rows], **{k: [r[k] for _, r in rows] for k in keys},
            "gw": gw, "seq": seq}
    return orjson.dumps(body)


def run_simulator(cfg: Config, rate_hz: float = 1.0, batch: int = 10, duration_s: float | None = None,
                  stacks: list[str] | None = None, seed: int | None = None) -> int:
    chosen = [(p, s) for p in cfg.plants for s in p.stacks if not stacks or f"{p.id}/{s.id}" in stacks]
    if not chosen:
        raise SystemExit(f"simulate: no configured stack matches {stacks}")
    rng = np.random.default_rng(seed)
    client = mqtt_client(cfg.mqtt, f"cems-sim-{int(time.time())}")
    client.connect(cfg.mqtt.host, cfg.mqtt.port)
    client.loop_start()
    buffers: dict[tuple[str, str], list] = {(p.id, s.id): [] for p, s in chosen}
    seqs = dict.fromkeys(buffers, 0)
    period = 1.0 / rate_hz
    start = time.time()
    next_t = math.ceil(start)
    published = 0
    last_report = start
    print(f"simulate: {len(chosen)} gateway(s) -> {cfg.mqtt.host}:{cfg.mqtt.port}, {rate_hz:g} Hz, "
          f"{batch} readings per message", flush=True)
    try:
        while duration_s is None or next_t < start + duration_s:
            delay = next_t - time.time()
            if delay > 0:
                time.sleep(delay)
            for p, s in chosen:
                key = (p.id, s.id)
                buffers[key].append((next_t, simulated_reading(s, next_t, rng, _phase(*key))))
                if len(buffers[key]) >= batch:
                    seqs[key] += 1
                    gw = f"sim-{p.id}-{s.id}"
                    client.publish(f"cems/v1/{p.id}/{s.id}/readings", batch_payload(buffers[key], gw, seqs[key]),
                                   qos=1)
                    published += len(buffers[key])
                    buffers[key] = []
            next_t += period
            if time.time() - last_report >= 10:
                print(f"simulate: {published} readings published", flush=True)
                last_report = time.time()
    except KeyboardInterrupt:
        pass
    finally:
        for (plant, stack), rows in buffers.items():
            if rows:
                seqs[(plant, stack)] += 1
                info = client.publish(f"cems/v1/{plant}/{stack}/readings",
                                      batch_payload(rows, f"sim-{plant}-{stack}", seqs[(plant, stack)]), qos=1)
                info.wait_for_publish(5)
                published += len(rows)
        client.loop_stop()
        client.disconnect()
    print(f"simulate: done, {published} readings published", flush=True)
    return 0
