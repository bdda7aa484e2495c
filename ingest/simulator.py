"""Simulated plant gateways (`cems simulate`): a deterministic scenario generator and the run loop.

Values follow a daily load curve of a 320 MW coal-fired CHP unit (the demo plant of DESIGN §7a: about
1.2-1.6 million m3/h actual wet flow at full load, 12-14 % CO2 dry, ~10 % moisture, 45-55 degC) with
measurement noise. On top of that, per stack and per UTC day, seeded events (`Scenario`):
- a daily zero/span calibration window at a fixed local time (plant timezone), flagged `C`: zero gas for
  the first third (CO2 ~ 0 %), span gas for the second (`span_co2_pct`), purge for the last;
- analyser faults, flagged `D`, CO2 and O2 frozen at the value the fault began with (minutes long);
- communication gaps: no readings at all (minutes long);
- unit stops, flagged `F`: fan coasting, ambient air in the stack (hours long).
Precedence where they overlap: gap > stop > calibration > fault.

Everything is a pure function of (seed, plant, stack, reading time): the same options give the same
readings, which is what lets a killed gateway resume exactly where its spool says it was and lets tests
count what should have arrived. Reading `k` of a run is at `start_ms + k * period_ms`.
"""

import functools
import hashlib
import math
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from cems.config import StackConfig

CHANNELS = ("flow_m3h", "velocity_ms", "co2_pct", "o2_pct", "temp_c", "press_kpa", "h2o_pct")
DAY_MS = 86_400_000
FULL_LOAD_FLOW_M3H = 1.6e6  # actual wet, DESIGN §7a
EVENT_KINDS = ("fault", "gap", "stop")


def load_fraction(t: float | np.ndarray, phase_h: float, utc_offset_h: float = 8.0):
    """Unit load [0..1] at epoch time `t` [s]: low at night, two daytime peaks, shifted by `phase_h`."""
    h = ((t / 3600.0) + utc_offset_h + phase_h) % 24.0  # local hour
    return 0.78 + 0.17 * np.sin(2 * math.pi * (h - 9.0) / 24.0) + 0.05 * np.sin(2 * math.pi * h / 12.0)


def simulated_reading(stack: StackConfig, t: float, rng: np.random.Generator, phase_h: float = 0.0) -> dict:
    """One normal reading of the contract payload's channels for `stack` at time `t` (used by the HJ 212 sim)."""
    load = float(load_fraction(t, phase_h))
    flow = FULL_LOAD_FLOW_M3H * load * (1 + rng.normal(0, 0.01))
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


def _key_int(plant: str, stack: str) -> int:
    return int(hashlib.sha256(f"{plant}/{stack}".encode()).hexdigest()[:12], 16)


@dataclass(frozen=True)
class Scenario:
    """What happens besides normal operation. Rates are expected events per stack per day (Poisson)."""
    seed: int = 0
    events: bool = True
    calibration_local_s: int = 3 * 3600  # window start, seconds after local midnight
    calibration_s: int = 15 * 60
    span_co2_pct: float = 15.0
    faults_per_day: float = 1.0
    fault_s: tuple[int, int] = (2 * 60, 20 * 60)
    gaps_per_day: float = 1.0
    gap_s: tuple[int, int] = (60, 10 * 60)
    stops_per_day: float = 1 / 30
    stop_s: tuple[int, int] = (2 * 3600, 12 * 3600)  # at most a day (events are looked up one day back)


@dataclass(frozen=True)
class StackSim:
    """The generator's view of one stack."""
    plant: str
    stack: str
    timezone: str = "Asia/Shanghai"
    area_m2: float | None = None
    kv: float = 1.0

    @classmethod
    def of(cls, plant_id: str, timezone: str, s: StackConfig) -> "StackSim":
        return cls(plant_id, s.id, timezone, s.area_m2, s.kv or 1.0)

    @property
    def key(self) -> str:
        return f"{self.plant}/{self.stack}"


@dataclass
class Readings:
    """Columnar readings of one stack: times [ms], channel values (NaN = missing), HJ 212 flags."""
    ts_ms: np.ndarray
    values: dict[str, np.ndarray]
    status: np.ndarray = field(default_factory=lambda: np.array([], dtype="<U1"))

    def __len__(self) -> int:
        return len(self.ts_ms)

    def take(self, idx) -> "Readings":
        return Readings(self.ts_ms[idx], {k: v[idx] for k, v in self.values.items()}, self.status[idx])


@functools.lru_cache(maxsize=4096)
def events_on_day(sim: StackSim, day: int, scen: Scenario) -> tuple[tuple[str, int, int], ...]:
    """(kind, start_ms, end_ms) of the faults, gaps and stops that begin on UTC day `day` (epoch days)."""
    if not scen.events:
        return ()
    out = []
    for code, (kind, rate, (lo, hi)) in enumerate((("fault", scen.faults_per_day, scen.fault_s),
                                                  ("gap", scen.gaps_per_day, scen.gap_s),
                                                  ("stop", scen.stops_per_day, scen.stop_s))):
        rng = np.random.default_rng([scen.seed, _key_int(sim.plant, sim.stack), day, code])
        for _ in range(rng.poisson(rate)):
            start = day * DAY_MS + int(rng.integers(0, DAY_MS // 1000)) * 1000
            out.append((kind, start, start + int(rng.integers(lo, hi + 1)) * 1000))
    return tuple(out)


def utc_offset_ms(timezone: str, ts_ms: np.ndarray) -> np.ndarray:
    """The zone's UTC offset [ms] at each time (looked up once unless the batch crosses a change)."""
    zone = zoneinfo.ZoneInfo(timezone)

    def off(t):
        return int(zone.utcoffset(_dt_utc(int(t))).total_seconds() * 1000)

    first, last = off(ts_ms[0]), off(ts_ms[-1])
    if first == last:
        return np.full(len(ts_ms), first, dtype=np.int64)
    return np.array([off(t) for t in ts_ms], dtype=np.int64)


def _dt_utc(t_ms: int):
    import datetime as dt

    return dt.datetime.fromtimestamp(t_ms / 1000, dt.UTC)


def calibration_phase(sim: StackSim, ts_ms: np.ndarray, scen: Scenario) -> np.ndarray:
    """0 outside the daily calibration window; 1 zero gas, 2 span gas, 3 purge inside it."""
    if not scen.events or scen.calibration_s <= 0:
        return np.zeros(len(ts_ms), dtype=np.int8)
    local_s = ((ts_ms + utc_offset_ms(sim.timezone, ts_ms)) % DAY_MS) // 1000
    into = (local_s - scen.calibration_local_s) % 86400
    inside = into < scen.calibration_s
    return np.where(inside, 1 + np.minimum(into * 3 // scen.calibration_s, 2), 0).astype(np.int8)


def generate(sim: StackSim, ts_ms: np.ndarray, scen: Scenario) -> Readings:
    """The readings of `sim` at times `ts_ms` [ms] (sorted), without those lost in communication gaps."""
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    n = len(ts_ms)
    if n == 0:
        return Readings(ts_ms, {}, np.array([], dtype="<U1"))
    base = _key_int(sim.plant, sim.stack) ^ (scen.seed * 0x9E3779B97F4A7C15 % 2**64)

    def noise(sd: float, stream: int, m=slice(None)) -> np.ndarray:
        return sd * _normal(base, ts_ms[m], stream)

    t = ts_ms / 1000.0
    offset_h = utc_offset_ms(sim.timezone, ts_ms) / 3.6e6
    phase = _phase(sim.plant, sim.stack)
    load = load_fraction(t, phase, offset_h)
    flow = FULL_LOAD_FLOW_M3H * load * (1 + noise(0.01, 0))
    co2 = 12.0 + 2.0 * (load - 0.55) / 0.45 + noise(0.05, 1)
    o2 = 8.5 - 3.0 * load + noise(0.05, 2)
    temp = 45.0 + 10.0 * load + noise(0.2, 3)
    press = 101.0 + noise(0.05, 4)
    h2o = 10.0 + noise(0.1, 5)
    status = np.full(n, "N", dtype="<U1")
    keep = np.ones(n, dtype=bool)

    days = range(int(ts_ms[0] // DAY_MS) - 1, int(ts_ms[-1] // DAY_MS) + 1)
    first, last = int(ts_ms[0]), int(ts_ms[-1])
    events = [e for d in days for e in events_on_day(sim, d, scen) if e[1] <= last and e[2] > first]
    for kind, start, end in events:
        if kind == "fault":
            m = (ts_ms >= start) & (ts_ms < end)
            if m.any():
                frozen = load_fraction(start / 1000.0, phase, offset_h[0])
                status[m] = "D"
                co2[m] = 12.0 + 2.0 * (frozen - 0.55) / 0.45
                o2[m] = 8.5 - 3.0 * frozen
    cal = calibration_phase(sim, ts_ms, scen)
    status[cal > 0] = "C"
    co2[cal == 1] = np.abs(noise(0.02, 6, cal == 1))
    o2[cal == 1] = np.abs(noise(0.02, 7, cal == 1))
    co2[cal == 2] = scen.span_co2_pct + noise(0.02, 6, cal == 2)
    for kind, start, end in events:
        m = (ts_ms >= start) & (ts_ms < end)
        if kind == "stop" and m.any():
            status[m] = "F"
            flow[m] = FULL_LOAD_FLOW_M3H * 0.01 * (1 + noise(0.1, 8, m))
            co2[m] = np.abs(0.04 + noise(0.01, 9, m))
            o2[m] = 20.9 + noise(0.02, 10, m)
            temp[m] = 30.0 + noise(0.2, 11, m)
            h2o[m] = 2.0 + noise(0.05, 12, m)
        elif kind == "gap":
            keep &= ~m
    values = {"co2_pct": np.round(co2, 3), "o2_pct": np.round(o2, 3), "temp_c": np.round(temp, 2),
              "press_kpa": np.round(press, 3), "h2o_pct": np.round(h2o, 3)}
    if sim.area_m2:
        values["velocity_ms"] = np.round(flow / (3600.0 * sim.area_m2 * sim.kv), 3)
    else:
        values["flow_m3h"] = np.round(flow, 0)
    out = Readings(ts_ms, values, status)
    return out if keep.all() else out.take(keep)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _normal(base: int, ts_ms: np.ndarray, stream: int) -> np.ndarray:
    """Standard normal noise that depends on (base, reading time, stream) only, never on how readings are
    batched, so a resumed gateway sends exactly the values an uninterrupted one would (Box-Muller over a
    counter-based hash)."""
    with np.errstate(over="ignore"):
        x = _mix64(ts_ms.astype(np.uint64) ^ np.uint64(base) ^ np.uint64((stream * 0x632BE59BD9B4E019) % 2**64))
        y = _mix64(x)
    u1 = ((x >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53
    u2 = (y >> np.uint64(11)).astype(np.float64) / 2.0**53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2 * math.pi * u2)


def batch_payload(r: Readings, gw: str, seq: int) -> bytes:
    """A columnar batch message (DESIGN §3): `ts` in epoch seconds, NaN as null, `status` scalar when uniform."""
    body: dict = {"ts": [t / 1000 if t % 1000 else t // 1000 for t in r.ts_ms.tolist()]}
    for k, v in r.values.items():
        body[k] = [None if math.isnan(x) else x for x in v.tolist()]
    flags = r.status.tolist()
    body["status"] = flags[0] if len(set(flags)) == 1 else flags
    body["gw"], body["seq"] = gw, seq
    return orjson.dumps(body)


# ---- the run loop ------------------------------------------------------------------------------------
@dataclass
class Source:
    """One stack's readings by index: generated (`sim` set) or replayed (`replay` set)."""
    sim: StackSim
    total: int | None  # readings in the run; None = unbounded
    start_ms: int = 0
    period_ms: int = 1000
    scenario: Scenario = Scenario()
    replay: Readings | None = None

    @property
    def topic(self) -> str:
        return f"cems/v1/{self.sim.plant}/{self.sim.stack}/readings"

    def available(self, sim_now_ms: float) -> int:
        """Readings due by simulated time `sim_now_ms` (inf = all of them)."""
        if self.replay is not None:
            if math.isinf(sim_now_ms):
                return len(self.replay)
            return int(np.searchsorted(np.maximum.accumulate(self.replay.ts_ms), sim_now_ms, "right"))
        n = max(0, int((sim_now_ms - self.start_ms) // self.period_ms) + 1)
        return n if self.total is None else min(n, self.total)

    def rows(self, k0: int, k1: int) -> Readings:
        if self.replay is not None:
            return self.replay.take(slice(k0, k1))
        return generate(self.sim, self.start_ms + np.arange(k0, k1, dtype=np.int64) * self.period_ms, self.scenario)


@dataclass
class RunOptions:
    rate_hz: float = 1.0
    batch: int = 10
    duration_s: float | None = None  # wall-clock seconds; simulated time covers duration x speed-up
    speedup: float = 1.0
    start_s: float | None = None  # simulated start [epoch s]; default now (or now - duration x speed-up)
    scenario: Scenario = Scenario()
    max_backfill_s: float = 3600.0  # an unbounded run resumed after a longer stop starts afresh


def plan_start(opts: RunOptions, now_s: float) -> float:
    """The simulated start [s]: `start_s`, or now; with a speed-up and a duration, so that the run ends now
    (the service rejects readings more than 5 minutes in the future)."""
    if opts.start_s is not None:
        return opts.start_s
    if opts.speedup != 1.0:
        if opts.duration_s is None:
            raise SystemExit("simulate: --speedup needs --duration or --start (simulated time must not run "
                             "ahead of the clock: the service rejects readings > 5 min in the future)")
        return math.floor(now_s - opts.duration_s * opts.speedup)
    return math.ceil(now_s)


class _Stop(Exception):
    pass


def _run_id(parts: dict) -> str:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _load_state(path) -> dict:
    try:
        return orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {}


def _save_state(path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(state))
    tmp.replace(path)  # survives a kill of this process; the spool's record headers cover a lost write anyway


def run_sources(cfg, groups: dict[tuple[str, str], list[Source]], opts: RunOptions, spool_dir, run_parts: dict,
                clock=None, max_spool_bytes: int = 1 << 30) -> dict[str, int]:
    """Publish `groups` ({(plant, gw): sources}) through one store-and-forward edge gateway each.

    The simulated clock is `start + (wall - wall0) x speedup`; a gateway started again on the same spool
    directory with the same run options resumes the run (same start and clock) after the last reading its
    spool took, so a kill loses nothing. Returns the readings taken per stack key."""
    import logging
    import signal
    import time

    from cems.ingest.edge import EdgeGateway, Spool, SpoolFull

    log = logging.getLogger("cems.simulate")
    clock = clock or time.time
    paced = opts.speedup > 0
    gws, states, cursors, seqs, state_paths = {}, {}, {}, {}, {}
    taken: dict[str, int] = {}
    for (plant, gw), sources in groups.items():
        spool = Spool(Path(spool_dir) / gw, max_bytes=max_spool_bytes)
        state_paths[gw] = spool.dir / "simulator.json"
        st = _load_state(state_paths[gw])
        run = _run_id({**run_parts, "gw": gw, "stacks": [s.sim.key for s in sources]})
        cur = {s.sim.key: max(st.get("cursor", {}).get(s.sim.key, 0), spool.last_meta.get(s.sim.key, {}).get("next", 0))
               for s in sources}
        seq = max([st.get("seq", 0), *[spool.last_meta.get(s.sim.key, {}).get("seq", 0) for s in sources]])
        resumable = st.get("run") == run
        if resumable and opts.duration_s is None and sources[0].replay is None:
            lag_s = (clock() - st["wall0"]) * opts.speedup - (min(cur.values()) * sources[0].period_ms) / 1000
            resumable = lag_s <= opts.max_backfill_s
        if resumable:
            log.info("gateway %s resumes its run (simulated start %s) after reading(s) %s", gw, st["start_ms"], cur)
        else:
            st = {"run": run, "start_ms": None, "wall0": clock(), "cursor": {}, "seq": seq}
            cur = dict.fromkeys(cur, 0)
        states[gw], cursors[gw], seqs[gw] = st, cur, seq
        gws[gw] = EdgeGateway(cfg.mqtt, plant, gw, spool)
    for (_plant, gw), sources in groups.items():
        st = states[gw]
        if st["start_ms"] is None:
            first_replay = sources[0].replay
            st["start_ms"] = (int(min(s.replay.ts_ms.min() for s in sources)) if first_replay is not None
                              else sources[0].start_ms)
        for s in sources:
            if s.replay is None:
                s.start_ms = st["start_ms"]
        _save_state(state_paths[gw], {**st, "cursor": cursors[gw], "seq": seqs[gw]})
    for g in gws.values():
        g.start()

    def _term(signum, frame):
        raise _Stop

    old = signal.signal(signal.SIGTERM, _term) if _main_thread() else None
    last_report = clock()
    finished = False
    try:
        while not finished:
            finished = True
            for (_plant, gw), sources in groups.items():
                st = states[gw]
                sim_now = st["start_ms"] + (clock() - st["wall0"]) * opts.speedup * 1000 if paced else math.inf
                finished &= _step(gws[gw], gw, sources, cursors[gw], seqs, sim_now, opts.batch, final=False,
                                  full=SpoolFull)
                _save_state(state_paths[gw], {**st, "cursor": cursors[gw], "seq": seqs[gw]})
            if clock() - last_report >= 10:
                log.info("simulate: %s", ", ".join(f"{gw}: {g.published} message(s) acknowledged, "
                                                   f"{g.spool.pending_count} buffered" for gw, g in gws.items()))
                last_report = clock()
            if not finished:
                time.sleep(0.05 if opts.speedup != 1 else 0.2)
    except (KeyboardInterrupt, _Stop):
        log.info("simulate: stopping")
    finally:
        for (_plant, gw), sources in groups.items():
            st = states[gw]
            sim_now = st["start_ms"] + (clock() - st["wall0"]) * opts.speedup * 1000 if paced else math.inf
            try:
                _step(gws[gw], gw, sources, cursors[gw], seqs, sim_now, opts.batch, final=True, full=SpoolFull)
            except SpoolFull:
                pass
            _save_state(state_paths[gw], {**st, "cursor": cursors[gw], "seq": seqs[gw]})
        for g in gws.values():
            g.stop(drain_s=30.0 if finished else 10.0)
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    for (_plant, gw), sources in groups.items():
        for s in sources:
            taken[s.sim.key] = cursors[gw][s.sim.key]
    return taken


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _step(gateway, gw: str, sources: list[Source], cursor: dict, seqs: dict, sim_now: float, batch: int,
          final: bool, full, max_messages: int = 2000) -> bool:
    """Take every complete batch due by `sim_now` (and, if `final`, the partial ones) into the spool in one
    write; True when every source has ended. When the spool is full, nothing is taken (cursors unchanged)."""
    new_cursor, seq, msgs = dict(cursor), seqs[gw], []
    done = True
    for s in sources:
        k, avail = new_cursor[s.sim.key], s.available(sim_now)
        ended = s.total is not None and avail >= s.total if s.replay is None else avail >= len(s.replay)
        while k < avail and len(msgs) < max_messages and (avail - k >= batch or ended or final):
            k1 = min(k + batch, avail)
            r = s.rows(k, k1)
            if len(r):
                seq += 1
                msgs.append((s.topic, batch_payload(r, gw, seq), {"key": s.sim.key, "next": k1, "seq": seq}))
            k = k1
        new_cursor[s.sim.key] = k
        done &= ended and k >= avail
    if msgs:
        try:
            gateway.submit(msgs)
        except full:
            return False
    cursor.update(new_cursor)
    seqs[gw] = seq
    return done


def _gw_id(prefix: str, plant, chosen_ids: list[str]) -> str:
    every = [s.id for s in plant.stacks]
    name = f"{prefix}-{plant.id}" + ("" if chosen_ids == every else "-" + "-".join(chosen_ids))
    return name[:64]


def run_simulator(cfg, opts: RunOptions, stacks: list[str] | None = None, replay: str | None = None,
                  load: int = 0, gw: str | None = None, spool_dir: str | None = None, clock=None) -> int:
    """`cems simulate`: one edge gateway per plant for the chosen stacks, the `--load` fleet, or a CSV replay."""
    import time

    from cems.ingest.replay import parse_replay_csv

    now = (clock or time.time)()
    period_ms = max(1, round(1000 / opts.rate_hz))
    total = None if opts.duration_s is None else int(opts.duration_s * opts.speedup * 1000 // period_ms)
    groups: dict[tuple[str, str], list[Source]] = {}
    parts = {"rate": period_ms, "batch": opts.batch, "duration": opts.duration_s, "speedup": opts.speedup,
             "start": opts.start_s, "scenario": repr(opts.scenario)}
    if replay:
        known = {(p.id, s.id) for p in cfg.plants for s in p.stacks}
        data = parse_replay_csv(replay, known)
        tz = {p.id: p.timezone for p in cfg.plants}
        for (plant_id, stack_id), r in data.items():
            gid = gw or f"replay-{plant_id}"
            groups.setdefault((plant_id, gid), []).append(
                Source(StackSim(plant_id, stack_id, tz[plant_id]), len(r), replay=r))
        # The file's contents name the run, not only its path: an edited file is a new run, not the resumption
        # of one already sent.
        parts |= {"replay": str(replay), "rows": sum(len(r) for r in data.values()),
                  "sha256": hashlib.sha256(Path(replay).read_bytes()).hexdigest()}
    elif load:
        plant = cfg.plants[0]
        start_ms = round(plan_start(opts, now) * 1000)
        sources = [Source(StackSim(plant.id, f"load-{i:04d}", plant.timezone), total, start_ms, period_ms,
                          Scenario(seed=opts.scenario.seed, events=False)) for i in range(1, load + 1)]
        groups[(plant.id, gw or f"load-{plant.id}")] = sources
        parts["load"] = load
    else:
        start_ms = round(plan_start(opts, now) * 1000)
        for p in cfg.plants:
            chosen = [s for s in p.stacks if not stacks or f"{p.id}/{s.id}" in stacks]
            if chosen:
                gid = gw or _gw_id("sim", p, [s.id for s in chosen])
                groups[(p.id, gid)] = [Source(StackSim.of(p.id, p.timezone, s), total, start_ms, period_ms,
                                              opts.scenario) for s in chosen]
        if not groups:
            raise SystemExit(f"simulate: no configured stack matches {stacks}")
        end_s = start_ms / 1000 + (opts.duration_s or 0) * opts.speedup
        if opts.duration_s is not None and end_s > now + opts.duration_s + 300:
            print(f"simulate: warning: simulated time ends {end_s - now:.0f} s after the run starts; readings more "
                  "than 5 minutes in the future are rejected by the service", flush=True)
    if gw and len(groups) > 1:
        raise SystemExit("simulate: --gw names one gateway, but the chosen stacks are on several plants")
    spool = spool_dir or str(cfg.storage.data_dir / "gateways")
    n = sum(len(v) for v in groups.values())
    print(f"simulate: {len(groups)} gateway(s), {n} stack(s) -> {cfg.mqtt.host}:{cfg.mqtt.port}, "
          f"{opts.rate_hz:g} Hz x speed-up {opts.speedup:g}, {opts.batch} readings per message, spool {spool}",
          flush=True)
    taken = run_sources(cfg, groups, opts, spool, parts, clock=clock)
    print(f"simulate: done, {sum(taken.values())} reading index(es) taken: "
          + ", ".join(f"{k}={v}" for k, v in taken.items()), flush=True)
    return 0
