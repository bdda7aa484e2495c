"""End-to-end benchmark: `make bench-e2e` (or `python -m bench.e2e`). Prints rates and latencies; asserts nothing.

N simulated stacks publish through a real mosquitto to a real `cems serve`, which writes to a real InfluxDB,
all on this machine (broker and database private, on free loopback ports, data in a temporary directory).
Every rate is counted back from InfluxDB, never from the service's own counters.

Time scheme. A fleet at 1 Hz makes N readings/s, so rates of 100,000 readings/s need simulated time to run
faster than the wall clock. Reading times start a little over `rate x duration / N` seconds ago (at most
3.5 h, so they stay inside the service's in-memory window of lateness + 2 h and never take its path for
late data) and each publisher walks them minute by minute: for each minute, each of its stacks in turn
sends that minute's 60 readings in messages of `--batch` readings. A stack's minute is thus complete a few
milliseconds after its first reading and every minute has already ended by the wall clock, so the service
closes it once, at its next tick, as it would in real time. What the speed-up does change: the hours being
filled have ended too, so the service re-derives them while they fill (a cost real-time operation pays
once an hour), and the RSS reached is that of `duration x rate / N` seconds of each stack's history, not
of a service that has run for hours. A publisher never sends a minute before it has ended; if it has to
wait for that ("caught up with the clock"), the run was limited by real time, not by the pipeline.

Runs, each with a fresh database, data directory and `cems serve` (broker and database stay up), after a
short unreported run over 10 stacks that fills numba's on-disk caches, so that no measured run compiles:
  1. for each batch size, a throughput run. With `--rate 0` (the default) it is as fast as the pipeline
     keeps up with: the publishers may run at most 2 s (of the current stored rate) ahead of what InfluxDB
     holds, so the backlog stays bounded; with `--rate R` they publish R readings/s whatever happens.
  2. then a latency run with that batch size at half the stored rate of the throughput run (or
     `--latency-rate`): from publishing a minute's last reading to the minute's complete figure (`n` = 60)
     being queryable, for the minutes of sampled stacks (about 128; all when minutes are few), found by
     one query every 50 ms for all pending minutes.
  3. last, the database's ceiling: the same raw `reading` points, in the service's exact line shape,
     written straight to InfluxDB by two plain writer processes in 5,000-point requests; no broker, no
     service.

Rates are over the steady window (publishing time after `--warmup`): messages/s as published and
acknowledged by the broker; readings/s and minute figures/s as the growth of what InfluxDB holds, read by
polling the last reading and last minute figure of probe stacks spread through each publisher's walk
(everything before a stored probe reading is stored: the service handles a publisher's messages in
order). After publishing stops, `drain` is how long until InfluxDB holds the last reading and the last
minute figure; then exact counts (`SELECT count(...)`) are compared with what was published. CPU seconds
are from /proc (utime + stime) from the start of publishing to the end of the drain, per process.
"""

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from bench.e2e_influx import InfluxQL, LatencyPoller, Progress, ceiling_writer, interpolate
from bench.e2e_publish import UNLIMITED, Share, run_publisher
from bench.e2e_service import (
    Backends,
    ServiceProcess,
    cpu_s,
    forget_session,
    rss_mb,
    thread_cpu_s,
    unique,
    write_config,
)
from cems.localservices import binary, free_port

PLANT = "bench"
MAX_SPAN_S = 3.5 * 3600  # inside the service's in-memory window (lateness 2 h + 2 h)
GUESS = {1: 20_000, 10: 120_000, 60: 250_000}  # readings/s, to place reading times when the rate is unknown
LATENCY_STACKS = 128
LATENCY_MINUTES = 300  # at least, if there are enough stacks
LEAD_S = 2.0
CEILING_POINTS = 5000
CEILING_WRITERS = 2


@dataclass
class PhaseResult:
    batch: int
    target: float  # readings/s asked for; 0: as fast as the pipeline keeps up
    stacks: int
    window_s: float
    msgs_s: float
    readings_s: float
    minutes_s: float
    drain_s: float  # inf: did not drain within the timeout
    published: int
    stored: int
    minutes_expected: int
    minutes_stored: int
    elapsed_s: float
    cpu_s: dict[str, float]
    rss_mb: tuple[float, float, float]
    rss_series: list[tuple[float, float]]  # (seconds into the run, service RSS [MB]), about 20 through the run
    start_s: float
    clock_wait_s: float
    threads_cpu_s: list[float]  # the service's busiest threads
    latencies_s: list[float] = field(default_factory=list)
    latency_pending: int = 0
    problem: str | None = None  # what went wrong, with the service's log


def split(stacks: list[str], parts: int) -> list[list[str]]:
    size = math.ceil(len(stacks) / parts)
    return [stacks[i:i + size] for i in range(0, len(stacks), size)]


def plan(stacks: list[str], publishers: int, mqtt_port: int, batch: int, rate: float, duration_s: float,
         latency: bool, behind_s: float | None = None) -> list[Share]:
    """The publishers' shares: reading times ending about two minutes ago (see the time scheme above), or
    starting `behind_s` behind the clock, and the stacks whose minutes are timed in a latency run."""
    span_s = min(MAX_SPAN_S, (rate or GUESS[batch]) * duration_s / len(stacks) * 1.2)
    t0 = int(time.time() // 60 * 60 - math.ceil(span_s / 60) * 60 - 120)
    if behind_s is not None:
        t0 = int((time.time() - behind_s) // 60 * 60)
    every = max(1, min(len(stacks) // LATENCY_STACKS, int(rate * duration_s / 60 / LATENCY_MINUTES) if rate else 1))
    parts = split(stacks, publishers)
    return [Share(mqtt_port, PLANT, tuple(ss), batch, t0, rate / len(parts), duration_s,
                  tuple(j for j, s in enumerate(ss) if latency and int(s[1:]) % every == 0), index=k)
            for k, ss in enumerate(parts)]


def run_phase(b: Backends, a, batch: int, rate: float, duration_s: float, latency: bool,
              n_stacks: int | None = None) -> PhaseResult:
    ctx = mp.get_context("spawn")
    name = unique(f"e2e_b{batch}_{'lat' if latency else 'tput'}")
    n_stacks = n_stacks or a.stacks
    stacks = [f"s{i:04d}" for i in range(n_stacks)]
    shares = plan(stacks, a.publishers, b.mqtt_port, batch, rate, duration_s, latency, a.behind_s)
    min_credit = max(200, 20 * batch)  # readings per publisher

    pdir = b.workdir / name
    pdir.mkdir()
    api_port, client_id = free_port(), f"cems-{name}"
    cfg = write_config(pdir / "cems.toml", b, api_port, name, client_id, pdir / "data", PLANT, stacks, a.settle_s)
    svc = ServiceProcess(cfg, api_port, pdir / "service.log")
    positions = [ctx.RawValue("q", 0) for _ in shares]
    allowed = [ctx.RawValue("q", UNLIMITED if rate else min_credit) for _ in shares]
    start, stop = ctx.Event(), ctx.Event()
    results, samples = ctx.Queue(), (ctx.Queue() if latency else None)
    procs = [ctx.Process(target=run_publisher, args=(sh, positions[k], allowed[k], start, stop, samples, results),
                         daemon=True, name=f"bench-pub-{k}") for k, sh in enumerate(shares)]
    progress = Progress(b.influx_port, name, PLANT, shares, positions, allowed,
                        None if rate else a.lead_s, min_credit)
    poller = LatencyPoller(b.influx_port, name, PLANT, samples) if latency else None
    db = InfluxQL(b.influx_port, name)
    what = f"batch {batch}, {'latency' if latency else 'throughput'}, " + (f"{rate:,.0f} readings/s"
                                                                           if rate else "as fast as it keeps up")
    print(f"  {what}: starting cems serve ({n_stacks} stacks) ...", end="", flush=True)
    try:
        start_s = svc.start()
        print(f" ready in {start_s:.1f} s; publishing for {duration_s:.0f} s ...", end="", flush=True)
        for p in procs:
            p.start()
        _wait_ready(results, procs, svc)
        progress.start()
        if poller:
            poller.start()
        pids = {"broker": b.mosquitto.proc.pid, "service": svc.pid, "db": b.influxd.proc.pid}
        cpu0 = {k: cpu_s(pid) for k, pid in pids.items()}
        threads0 = thread_cpu_s(svc.pid)
        rss0 = rss_mb(svc.pid)
        start.set()
        t_start = time.time()
        series: list[tuple[float, float]] = []
        every = max(5.0, duration_s / 20)
        _sleep_watching(t_start + duration_s / 2, svc, progress, series, every, t_start)
        rss1 = rss_mb(svc.pid)
        _sleep_watching(t_start + duration_s, svc, progress, series, every, t_start)
        outs = sorted(_collect(results, procs, svc, timeout_s=120), key=lambda o: o["publisher"])
        t_end = max(o["t_end"] for o in outs)
        drained_at = _drain(db, shares, outs, svc, timeout_s=max(60.0, 2 * duration_s))
        cpu1 = {k: cpu_s(pid) for k, pid in pids.items()}
        threads1 = thread_cpu_s(svc.pid)
        rss2 = rss_mb(svc.pid)
        t_done = time.time() if drained_at is None else drained_at
        problem = None
        if drained_at is None:
            problem = (f"InfluxDB did not get everything within the drain timeout; the service's /health: "
                       f"{json.dumps((svc.health() or {}).get('checks'))}\nservice log ({svc.log}), last lines:\n"
                       + "\n".join([ln for ln in svc.tail(20000).splitlines() if " recovered: " not in ln][-15:]))
        print(" drained" if drained_at is not None else " NOT drained", flush=True)
        progress.stop()
        if poller:
            poller.stop()
        for th in (progress, poller):
            if th is not None and th.error:
                raise RuntimeError(f"{th.name}: {th.error}")
        published = sum(o["readings"] for o in outs)
        stored = db.count("reading", "co2_pct")
        if stored != published:  # a write still on its way (the drain check sees each publisher's last one)?
            time.sleep(5.0)
            again = db.count("reading", "co2_pct")
            counters = ((svc.health() or {}).get("checks") or {}).get("pipeline")
            warned = [ln for ln in svc.tail(200000).splitlines() if "WARNING" in ln or "ERROR" in ln][-5:]
            print(f" [{published:,} readings published, {stored:,} in InfluxDB, {again:,} five seconds later; "
                  f"the pipeline's counters: {json.dumps(counters)}; the service's last warnings: "
                  f"{warned or 'none'}]", end="", flush=True)
            stored = again
        minutes_stored = db.count("minute", "n")
        minutes_expected = sum(_last_of(sh, o["readings"])[3] for sh, o in zip(shares, outs, strict=True))
    finally:
        stop.set()
        _end_processes(procs)
        progress.halt.set()
        if poller:
            poller.halt.set()
        svc.stop()
        forget_session(b.mqtt_port, client_id)
        try:
            db.drop()
        except Exception:  # InfluxDB is gone already (Ctrl-C reaches it too); its directory goes anyway
            pass
        db.close()
    ta, tb = t_start + min(a.warmup, duration_s / 3), t_end
    window = tb - ta
    s = progress.samples

    def slope(pick) -> float:
        return (interpolate(s, tb, pick) - interpolate(s, ta, pick)) / window

    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0} | {"publishers": sum(o["cpu_s"] for o in outs)}
    return PhaseResult(
        batch=batch, target=rate, stacks=n_stacks, window_s=window,
        msgs_s=slope(lambda x: sum(x[1])) / batch, readings_s=slope(lambda x: sum(x[2])),
        minutes_s=slope(lambda x: sum(x[3])),
        drain_s=math.inf if drained_at is None else max(0.0, drained_at - t_end),
        published=published, stored=stored, minutes_expected=minutes_expected, minutes_stored=minutes_stored,
        elapsed_s=t_done - t_start, cpu_s=cpu, rss_mb=(rss0, rss1, rss2), rss_series=series, start_s=start_s,
        clock_wait_s=max(o["waited_for_clock_s"] for o in outs),
        threads_cpu_s=sorted((threads1[t] - threads0.get(t, 0.0) for t in threads1), reverse=True)[:3],
        latencies_s=sorted(lat for t, lat in poller.seen if t >= ta) if poller else [],
        latency_pending=len(poller.pending) if poller else 0, problem=problem)


def _end_processes(procs: list) -> None:
    for p in procs:
        if p.pid is None:
            continue  # never started
        p.join(5)
        if p.is_alive():
            p.terminate()
            p.join(5)


def _wait_ready(results, procs: list, svc: ServiceProcess) -> None:
    for o in _collect(results, procs, svc, timeout_s=60):
        if "ready" not in o:
            raise RuntimeError(f"publisher: unexpected {o}")


def _collect(results, procs: list, svc: ServiceProcess | None, timeout_s: float) -> list[dict]:
    """One report from each of `procs` (publishers or ceiling writers); fails on an error or a silent exit."""
    outs, end = [], time.time() + timeout_s
    while len(outs) < len(procs):
        if time.time() > end:
            raise RuntimeError(f"{procs[0].name}...: no report within {timeout_s:.0f} s")
        if svc is not None:
            svc.check_alive("publishers ran")
        try:
            o = results.get(timeout=0.5)
        except queue.Empty:
            dead = [p.name for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited without reporting") from None
            continue
        if "error" in o:
            raise RuntimeError(f"{procs[0].name}...: {o['error']}")
        outs.append(o)
    return outs


def _sleep_watching(until: float, svc: ServiceProcess, progress: Progress, series: list[tuple[float, float]],
                    every: float, t_start: float) -> None:
    """Wait until `until`, checking the service and the progress poll, and sampling the service's RSS into
    `series` every `every` seconds of the run."""
    while time.time() < until:
        svc.check_alive("publishing")
        if progress.error:
            raise RuntimeError(f"progress poll failed: {progress.error}")
        elapsed = time.time() - t_start
        if not series or elapsed - series[-1][0] >= every:
            series.append((elapsed, rss_mb(svc.pid)))
        time.sleep(min(0.5, max(0.0, until - time.time())))


def _last_of(share: Share, readings: int) -> tuple[str, int, int, int]:
    """The last reading a publisher sent: (stack, its time [s], readings of that stack-minute sent,
    stack-minutes started)."""
    minute, rest = divmod(readings - 1, len(share.stacks) * 60)
    j, second = divmod(rest, 60)
    return share.stacks[j], share.t0_s + minute * 60 + second, second + 1, minute * len(share.stacks) + j + 1


def _drain(db: InfluxQL, shares: list[Share], outs: list[dict], svc: ServiceProcess, timeout_s: float):
    """Wall time at which InfluxDB holds every publisher's last reading and its minute's whole figure."""
    checks = []
    for sh, o in zip(shares, outs, strict=True):
        if o["readings"]:
            stack, ts, n, _ = _last_of(sh, o["readings"])
            checks.append((stack, ts, n))
    if not checks:
        return time.time()
    q = "; ".join(f"SELECT last(co2_pct) FROM reading WHERE plant = '{PLANT}' AND stack = '{s}'; "
                  f"SELECT n FROM minute WHERE plant = '{PLANT}' AND stack = '{s}' AND time = {(ts - ts % 60) * 1000}ms"
                  for s, ts, _ in checks)
    end = time.time() + timeout_s
    while time.time() < end:
        svc.check_alive("draining")
        res = db.results(q)
        t = time.time()
        ok = all(r[0]["time"] == ts * 1000 if r else False for r, (_, ts, _) in zip(res[0::2], checks, strict=True))
        ok = ok and all(bool(r) and r[0]["n"] == n for r, (_, _, n) in zip(res[1::2], checks, strict=True))
        if ok:
            return t
        time.sleep(0.1)
    return None


def run_ceiling(b: Backends, a, duration_s: float) -> dict:
    """The database alone: the service's raw points, two plain writers, 5,000-point requests."""
    ctx = mp.get_context("spawn")
    name = unique("e2e_ceiling")
    db = InfluxQL(b.influx_port, name)
    db.create()
    stacks = [f"s{i:04d}" for i in range(a.stacks)]
    t0 = int(time.time() // 3600 * 3600 - 86400)
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=ceiling_writer, daemon=True, name=f"bench-ceiling-{k}",
                         args=(b.influx_port, name, PLANT, tuple(ss), t0, CEILING_POINTS, duration_s, start, results))
             for k, ss in enumerate(split(stacks, CEILING_WRITERS))]
    print(f"  database ceiling: {CEILING_WRITERS} writers, {CEILING_POINTS:,}-point requests, "
          f"{duration_s:.0f} s ...", end="", flush=True)
    try:
        for p in procs:
            p.start()
        _collect(results, procs, None, timeout_s=60)  # ready: their check of the line shape has passed
        pid = b.influxd.proc.pid
        cpu0 = cpu_s(pid)
        start.set()
        t_start = time.time()
        outs = _collect(results, procs, None, timeout_s=duration_s + 120)
        cpu1 = cpu_s(pid)
        t_end = min(o["timeline"][-1][0] for o in outs)
        ta = t_start + min(a.warmup, duration_s / 3)
        written = sum(interpolate(o["timeline"], t_end, lambda x: x[1]) - interpolate(o["timeline"], ta,
                                                                                       lambda x: x[1]) for o in outs)
        total = sum(o["points"] for o in outs)
        counted = db.count("reading", "co2_pct")
        elapsed = max(o["timeline"][-1][0] for o in outs) - t_start
        print(" done", flush=True)
    finally:
        _end_processes(procs)
        try:
            db.drop()
        except Exception:  # InfluxDB is gone already (Ctrl-C reaches it too); its directory goes anyway
            pass
        db.close()
    return {"points_s": written / (t_end - ta), "points": total, "counted": counted, "elapsed_s": elapsed,
            "db_cpu_s": cpu1 - cpu0, "writers_cpu_s": sum(o["cpu_s"] for o in outs)}


# ---- report ----------------------------------------------------------------------------------------------

def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem_kb = next(int(ln.split()[1]) for ln in open("/proc/meminfo") if ln.startswith("MemTotal"))
    mosq = subprocess.run([binary("mosquitto"), "-h"], capture_output=True, text=True).stdout.splitlines()[:1]
    influx = subprocess.run([binary("influxd"), "version"], capture_output=True, text=True).stdout.strip()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.machine()} {cpu}, {os.cpu_count()} cores, {mem_kb / 2**20:.0f} GiB, Linux "
            f"{platform.release()}; Python {platform.python_version()}; {(mosq or ['mosquitto ?'])[0]}; {influx}; "
            f"load average {load} at start")


def code_version() -> str:
    """The commit measured, and whether the working tree differed from it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "code: not a git checkout"
    return f"code {head}" + (" with uncommitted changes" if dirty else "")


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return math.nan
    return xs[min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))]


HEAD = ("batch", "target/s", "msgs/s", "readings/s", "minutes/s", "drain s", "stored", "CPU s broker", "service",
        "db", "publishers", "service cores", "RSS MB start/mid/end", "x DB ceiling")


def rows(results: list[PhaseResult], ceiling: float | None) -> list[tuple[str, ...]]:
    out = []
    for r in results:
        stored = f"{100 * r.stored / r.published:.1f} %" if r.published else "-"
        if r.minutes_stored != r.minutes_expected:
            stored += f" ({r.minutes_stored:,}/{r.minutes_expected:,} min)"
        out.append((str(r.batch), "max" if not r.target else f"{r.target:,.0f}", f"{r.msgs_s:,.0f}",
                    f"{r.readings_s:,.0f}", f"{r.minutes_s:,.0f}",
                    "-" if math.isinf(r.drain_s) else f"{r.drain_s:.1f}", stored,
                    *(f"{r.cpu_s[k]:.1f}" for k in ("broker", "service", "db", "publishers")),
                    f"{r.cpu_s['service'] / r.elapsed_s:.2f}", "/".join(f"{x:.0f}" for x in r.rss_mb),
                    f"{r.readings_s / ceiling:.2f}" if ceiling else "-"))
    return out


def latency_line(r: PhaseResult) -> str:
    x = r.latencies_s
    missing = f", {r.latency_pending} never seen" if r.latency_pending else ""
    return (f"batch {r.batch:>2} at {r.target:,.0f} readings/s ({r.readings_s:,.0f} stored/s, drain "
            f"{r.drain_s:.1f} s): minute's last reading -> figure queryable p50 {percentile(x, 50):.2f} s, "
            f"p99 {percentile(x, 99):.2f} s, max {max(x, default=math.nan):.2f} s ({len(x)} minutes{missing})")


def print_table(title: str, table: list[tuple[str, ...]], markdown: bool) -> None:
    if markdown:
        print(f"| {' | '.join(HEAD)} |\n|{'|'.join('---:' for _ in HEAD)}|")
        for row in table:
            print(f"| {' | '.join(row)} |")
        return
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(HEAD)]
    print(title)
    print("  ".join(h.rjust(w) for h, w in zip(HEAD, widths, strict=True)))
    for row in table:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def report(a, desc: str, results: list[PhaseResult], lat: list[PhaseResult], ceiling: dict | None) -> None:
    ceil = ceiling["points_s"] if ceiling else None
    table = rows(results, ceil)
    print()
    print_table("throughput (steady window, counted back from InfluxDB):", table, markdown=False)
    print("service's busiest threads, cores: " + "; ".join(
        f"batch {r.batch}: " + ", ".join(f"{x / r.elapsed_s:.2f}" for x in r.threads_cpu_s) for r in results))
    for r in results:
        held = r.stored / r.stacks / 3600
        print(f"  batch {r.batch}: service RSS grew {r.rss_mb[2] - r.rss_mb[0]:,.0f} MB while it took "
              f"{r.stored:,} readings ({held:.2f} h of each stack's readings): "
              f"{(r.rss_mb[2] - r.rss_mb[0]) * 2**20 / max(r.stored, 1):,.0f} bytes per reading")
        print(f"  batch {r.batch}: service RSS [MB] through the run (s: MB): "
              + ", ".join(f"{t:.0f}: {m:.0f}" for t, m in r.rss_series))
        if r.clock_wait_s > 1:
            print(f"  note: batch {r.batch}: publishers caught up with the wall clock for {r.clock_wait_s:.0f} s: "
                  f"limited by real time, not by the pipeline; use more --stacks")
        if r.stored != r.published:
            print(f"  note: batch {r.batch}: {r.published:,} readings published, {r.stored:,} in InfluxDB")
    for kind, group in (("throughput", results), ("latency", lat)):
        for r in group:
            if r.problem:
                print(f"PROBLEM in the batch {r.batch} {kind} run: {r.problem}")
    if ceiling:
        print(f"database ceiling: {ceil:,.0f} points/s ({ceiling['points']:,} written, {ceiling['counted']:,} "
              f"counted back; influxd {ceiling['db_cpu_s'] / ceiling['elapsed_s']:.2f} cores, writers "
              f"{ceiling['writers_cpu_s'] / ceiling['elapsed_s']:.2f} cores)")
    for r in lat:
        print(latency_line(r))
    print("\nMarkdown for docs/performance.md (paste under '## End to end'):\n")
    print("## End to end (`make bench-e2e`)\n")
    print(f"{a.stacks:,} stacks of one plant, {a.publishers} publisher processes (bench/mqttlite.py, QoS 1), "
          f"mosquitto, "
          f"`cems serve` and InfluxDB on one machine: {desc}. Throughput runs {a.duration:.0f} s each "
          f"(rates over the last {a.duration - a.warmup:.0f} s), latency runs {a.latency_duration:.0f} s at half "
          f"the stored rate. Reproduce with `make bench-e2e`.\n")
    print_table("", table, markdown=True)
    print("\n*msgs/s*: published and acknowledged by the broker; *readings/s*, *minutes/s*: raw points and minute "
          "figures stored, from what InfluxDB holds; *drain*: from the end of publishing until InfluxDB holds "
          "everything; *stored*: readings counted in InfluxDB over readings published; *CPU s*: from the start of "
          "publishing to the end of the drain; *service cores*: its CPU seconds over that time; *x DB ceiling*: "
          "readings/s over the database ceiling below.\n")
    if ceiling:
        print(f"Database ceiling (two plain writers, {CEILING_POINTS:,}-point requests of the same raw points, "
              f"no broker, no service): {ceil:,.0f} points/s.\n")
    for r in lat:
        print(f"- {latency_line(r)}")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, action="append", choices=(1, 10, 60),
                    help="readings per message (repeat for several; default 1, 10 and 60)")
    ap.add_argument("--stacks", type=int, help="simulated stacks (default 1000; --quick 100)")
    ap.add_argument("--rate", type=float, default=0.0, help="readings/s in total; 0: as fast as it keeps up")
    ap.add_argument("--duration", type=float, help="seconds of publishing per throughput run (default 60)")
    ap.add_argument("--warmup", type=float, help="seconds left out at the start of each run (default 10)")
    ap.add_argument("--latency-duration", type=float, help="seconds per latency run (default 30); 0 skips them")
    ap.add_argument("--latency-rate", type=float, default=0.0, help="readings/s of the latency runs "
                    "(default: half the throughput run's stored rate)")
    ap.add_argument("--ceiling-duration", type=float, help="seconds of the database ceiling (default 20); 0 skips")
    ap.add_argument("--lead-s", type=float, default=LEAD_S, help="with --rate 0: how far (seconds of the stored "
                    f"rate) publishers may run ahead of what InfluxDB holds (default {LEAD_S:g})")
    ap.add_argument("--behind-s", type=float, help="reading times start this far behind the clock (default: "
                    "the run's span of reading time plus 2 min, at most 3.5 h); for memory soaks at --rate = "
                    "stacks, up to the window of 4 h")
    ap.add_argument("--publishers", type=int, default=2, help="publisher processes (default 2)")
    ap.add_argument("--settle-s", type=float, default=2.0, help="the plant's settle_s")
    ap.add_argument("--quick", action="store_true", help="a 1-2 minute smoke run: 100 stacks, short runs")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    a = ap.parse_args(argv)
    quick = a.quick
    a.batch = a.batch or [1, 10, 60]
    a.stacks = a.stacks or (100 if quick else 1000)
    a.duration = a.duration or (12.0 if quick else 60.0)
    a.warmup = a.warmup if a.warmup is not None else (3.0 if quick else 10.0)
    a.latency_duration = a.latency_duration if a.latency_duration is not None else (8.0 if quick else 30.0)
    a.ceiling_duration = a.ceiling_duration if a.ceiling_duration is not None else (6.0 if quick else 20.0)
    signal.signal(signal.SIGTERM, _interrupt)  # `timeout`, `kill`: stop everything as Ctrl-C does
    desc = f"{machine()}; {code_version()}"
    print(f"machine: {desc}")
    b = Backends.start()
    print(f"mosquitto :{b.mqtt_port}, influxd :{b.influx_port}, data in {b.workdir}")
    results, lat, ceiling, failed = [], [], None, True
    try:
        # Numba compiles the service's kernels at first use and caches them on disk: a short run over a few
        # stacks and hours first, so no measured run pays for compiling.
        print("priming (numba's caches):")
        prime = run_phase(b, a, 60, 0.0, 5.0 if quick else 8.0, latency=False, n_stacks=10)
        if prime.problem:
            print(f"PROBLEM while priming: {prime.problem}")
        for batch in a.batch:
            r = run_phase(b, a, batch, a.rate, a.duration, latency=False)
            results.append(r)
            if a.latency_duration > 0:
                lrate = a.latency_rate or round(r.readings_s / 2, -1)
                if lrate > 0:
                    lat.append(run_phase(b, a, batch, lrate, a.latency_duration, latency=True))
        if a.ceiling_duration > 0:
            ceiling = run_ceiling(b, a, a.ceiling_duration)
        failed = any(r.problem for r in results + lat)
    except KeyboardInterrupt:
        failed = False
        print("\ninterrupted; everything stopped", file=sys.stderr)
        return 130
    finally:
        b.stop(keep=a.keep or failed)  # on an error, the logs are what is needed next
        if a.keep or failed:
            print(f"logs and data kept in {b.workdir}", file=sys.stderr)
    report(a, desc, results, lat, ceiling)
    return 0


if __name__ == "__main__":
    sys.exit(main())
