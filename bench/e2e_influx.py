"""The InfluxDB side of the end-to-end benchmark: counting back, progress and latency polls, the ceiling.

Everything here reads what InfluxDB holds, never the service's counters. The database ceiling writes the
service's own `reading` points (the shape of `store/schema.py` `reading_line`, checked at start) straight
to InfluxDB as line protocol: no broker, no service.
"""

import math
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import httpx
import orjson

from bench.e2e_publish import channel_pool, minute_position, reading_position
from cems.compute.channels import NAMES
from cems.store.schema import reading_line


class InfluxQL:
    """A few InfluxQL statements over HTTP (InfluxDB 1.x /query and /write); rows carry their tags."""

    def __init__(self, port: int, database: str, timeout_s: float = 60.0):
        self.database = database
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def results(self, q: str) -> list[list[dict]]:
        """Rows of each statement of `q` (statements separated by `;`)."""
        r = self.http.post("/query", data={"q": q, "db": self.database, "epoch": "ms"})
        r.raise_for_status()
        out = []
        for res in r.json()["results"]:
            if "error" in res:
                raise RuntimeError(f"InfluxQL error {res['error']} in {q[:200]}")
            rows = []
            for s in res.get("series", []):
                tags = s.get("tags", {})
                rows += [dict(zip(s["columns"], v, strict=True)) | tags for v in s["values"]]
            out.append(rows)
        return out

    def query(self, q: str) -> list[dict]:
        return self.results(q)[0]

    def count(self, measurement: str, field: str) -> int:
        rows = self.query(f'SELECT count("{field}") FROM "{measurement}"')
        return int(rows[0]["count"]) if rows else 0

    def create(self) -> None:
        self.query(f'CREATE DATABASE "{self.database}"')

    def drop(self) -> None:
        r = self.http.post("/query", data={"q": f'DROP DATABASE "{self.database}"'}, timeout=10)
        r.raise_for_status()

    def write(self, body: bytes) -> None:
        r = self.http.post("/write", params={"db": self.database, "precision": "ms"}, content=body)
        if r.status_code != 204:
            raise RuntimeError(f"InfluxDB write -> {r.status_code}: {r.text[:300]}")


def stack_regex(stacks: Sequence[str]) -> str:
    return "/^(" + "|".join(stacks) + ")$/"


class Progress(threading.Thread):
    """How far InfluxDB holds each publisher's walk: its readings and its minute figures.

    Each poll takes the last stored reading and the last minute figure of probe stacks and maps them onto
    the publisher's walk (the service handles one publisher's messages in order, so everything before a
    stored probe reading is stored too). The probes are spread evenly over the part of the walk between
    what was stored at the last poll and what has been published since, so the estimate is finer than
    the backlog whatever its size. Samples are (wall time, published, stored readings, stored minute
    figures), each a list over publishers. With `lead_s`, it also lets publishers run at most `lead_s`
    seconds of the stored rate ahead (flow control, so that a run "as fast as possible" has a bounded
    backlog instead of one that grows for as long as the run lasts).
    """

    def __init__(self, port: int, database: str, plant: str, shares: list, positions: list, allowed: list,
                 lead_s: float | None, min_credit: int, probes: int = 24, poll_s: float = 0.2):
        super().__init__(name="bench-progress", daemon=True)
        self.db = InfluxQL(port, database)
        self.plant = plant
        self.shares = shares
        self.positions = positions
        self.allowed = allowed
        self.lead_s = lead_s
        self.min_credit = min_credit
        self.probes = probes
        self.poll_s = poll_s
        n = len(shares)
        self.samples: list[tuple[float, list[int], list[int], list[int]]] = [(time.time(), [0] * n, [0] * n, [0] * n)]
        self.halt = threading.Event()
        self.error: str | None = None
        self.since_ms = min(sh.t0_s for sh in shares) * 1000
        if lead_s is not None:
            for a in allowed:
                a.value = min_credit

    def run(self) -> None:
        try:
            while not self.halt.wait(self.poll_s):
                self.poll()
        except Exception as e:  # reported by the phase, which then fails with it
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.db.close()

    def _probe_stacks(self) -> dict[str, tuple[int, int]]:
        """stack id -> (publisher, index in its share), spread over each publisher's unconfirmed walk."""
        _, _, stored, figures = self.samples[-1]
        owner = {}
        for k, sh in enumerate(self.shares):
            hi = self.positions[k].value
            lo = min(stored[k], 60 * figures[k])
            for i in range(self.probes + 1):
                p = lo + (hi - lo) * i // self.probes  # readings 1..p published; the last is number p - 1
                j = max(p - 1, 0) // 60 % len(sh.stacks)
                owner[sh.stacks[j]] = (k, j)
        return owner

    def poll(self) -> None:
        owner = self._probe_stacks()
        where = (f"plant = '{self.plant}' AND stack =~ {stack_regex(list(owner))} "
                 f"AND time >= {self.since_ms}ms GROUP BY stack")
        readings, minutes = self.db.results(f"SELECT last(co2_pct) FROM reading WHERE {where}; "
                                            f"SELECT last(n) FROM minute WHERE {where}")
        t = time.time()
        # Positions only grow (a probe that has moved on is not asked about again).
        stored, figures = list(self.samples[-1][2]), list(self.samples[-1][3])
        for r in readings:
            k, j = owner[r["stack"]]
            sh = self.shares[k]
            stored[k] = max(stored[k], reading_position(len(sh.stacks), sh.t0_s, j, r["time"] // 1000))
        for r in minutes:
            k, j = owner[r["stack"]]
            sh = self.shares[k]
            figures[k] = max(figures[k], minute_position(len(sh.stacks), sh.t0_s, j, r["time"] // 1000))
        if readings:
            self.since_ms = max(self.since_ms, min(r["time"] for r in readings) - 120_000)
        self.samples.append((t, [p.value for p in self.positions], stored, figures))
        if self.lead_s is not None:
            self._flow_control(t, stored)

    def _flow_control(self, t: float, stored: list[int]) -> None:
        # Every publisher gets the same credit, from the total rate: the service takes messages first come,
        # first served, so equal backlogs give equal shares (a credit from each one's own rate would not).
        back = next((s for s in reversed(self.samples) if t - s[0] >= 2.0), self.samples[0])
        rate = (sum(stored) - sum(back[2])) / max(t - back[0], 1e-3)
        credit = max(self.min_credit, int(self.lead_s * rate / len(self.allowed)))
        for k, a in enumerate(self.allowed):
            a.value = stored[k] + credit

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


def interpolate(samples: list, t: float, pick: Callable[[tuple], float]) -> float:
    """`pick(sample)` at wall time `t`, linear between the samples around it."""
    if not samples:
        return math.nan
    if t <= samples[0][0]:
        return pick(samples[0])
    for a, b in zip(samples, samples[1:], strict=False):
        if a[0] <= t <= b[0]:
            f = (t - a[0]) / (b[0] - a[0]) if b[0] > a[0] else 1.0
            return pick(a) + f * (pick(b) - pick(a))
    return pick(samples[-1])


class LatencyPoller(threading.Thread):
    """From a minute's last reading published to its complete figure queryable in InfluxDB.

    Publishers put (stack, minute start [s], wall time of publishing) for their probe stacks' minutes; one
    query every `poll_s` asks for the figures of all pending minutes at once (GROUP BY stack) and a figure
    counts once its `n` is the whole minute. The time taken is when that query's answer arrived.
    """

    def __init__(self, port: int, database: str, plant: str, inbox: Queue, per_minute: int = 60,
                 poll_s: float = 0.05):
        super().__init__(name="bench-latency", daemon=True)
        self.db = InfluxQL(port, database)
        self.plant = plant
        self.inbox = inbox
        self.per_minute = per_minute
        self.poll_s = poll_s
        self.pending: dict[tuple[str, int], float] = {}
        self.seen: list[tuple[float, float]] = []  # (published at [epoch s], latency [s])
        self.halt = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        try:
            while not self.halt.wait(self.poll_s):
                self.poll()
            self.poll()
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.db.close()

    def poll(self) -> None:
        while True:
            try:
                stack, minute, t = self.inbox.get_nowait()
            except queue.Empty:
                break
            self.pending[(stack, minute)] = t
        if not self.pending:
            return
        stacks = sorted({s for s, _ in self.pending})
        lo = min(m for _, m in self.pending)
        hi = max(m for _, m in self.pending)
        rows = self.db.query(f"SELECT n FROM minute WHERE plant = '{self.plant}' AND stack =~ {stack_regex(stacks)} "
                             f"AND time >= {lo * 1000}ms AND time <= {hi * 1000}ms GROUP BY stack")
        seen = time.time()
        for r in rows:
            key = (r["stack"], r["time"] // 1000)
            if key in self.pending and r["n"] is not None and r["n"] >= self.per_minute:
                t_pub = self.pending.pop(key)
                self.seen.append((t_pub, seen - t_pub))

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


# ---- the database's own ceiling ----------------------------------------------------------------------------

def ceiling_lines(plant: str, stacks: Sequence[str], seed: int) -> Callable[[int, int, int], str]:
    """A fast formatter of the service's raw `reading` point for (stack index, time [ms], seq).

    Values come from the publishers' pool; the result is checked against `reading_line` itself, so a change
    of the stored shape stops the benchmark instead of measuring something else.
    """
    rows = [orjson.loads(b"{" + frag + b"}") for frag in channel_pool(1, seed)]
    sent = [n for n in NAMES if n in rows[0]]  # the channels a flow-meter gateway sends, in store order
    pool = [tuple(float(r[n]) if n in r else math.nan for n in NAMES) for r in rows]
    bodies = [",".join(f"{n}={float(r[n])!r}" for n in sent) for r in rows]
    nulls = ",".join(n for n in NAMES if n not in sent)
    heads = [f'reading,plant={plant},stack={s} ' for s in stacks]
    tails = [f',status="N",validity="valid",reason="",gw="bench-{s}",seq=' for s in stacks]
    nulls_s = f'i,nulls="{nulls}" '

    def fmt(j: int, ts_ms: int, seq: int) -> str:
        return f"{heads[j]}{bodies[(ts_ms // 1000 + j) % len(bodies)]}{tails[j]}{seq}{nulls_s}{ts_ms}"

    j, ts = len(stacks) - 1, 1_700_000_000_000
    want = reading_line(plant, stacks[j], ts, pool[(ts // 1000 + j) % len(pool)], "N", "valid", "",
                        f"bench-{stacks[j]}", 7)
    if fmt(j, ts, 7) != want:
        raise RuntimeError(f"the service's reading point changed shape (store/schema.py reading_line):\n  {want}\n"
                           f"but the ceiling writes\n  {fmt(j, ts, 7)}\nupdate bench/e2e_influx.py ceiling_lines")
    return fmt


def ceiling_writer(port: int, database: str, plant: str, stacks: tuple[str, ...], t0_s: int, points: int,
                   duration_s: float, start: Event, results: Queue) -> None:
    """Process body: write this writer's stacks' readings minute by minute in `points`-point requests."""
    try:
        fmt = ceiling_lines(plant, stacks, seed=len(stacks))
        db = InfluxQL(port, database)
        results.put({"ready": True})
        start.wait()
        cpu0, t_start = os.times(), time.time()
        timeline, sent, buf = [(t_start, 0)], 0, []
        minute = t0_s
        while time.time() < t_start + duration_s:
            for j in range(len(stacks)):
                seq = (minute - t0_s) // 60 + 1
                buf += [fmt(j, (minute + s) * 1000, seq) for s in range(60)]
                if len(buf) >= points:
                    db.write("\n".join(buf[:points]).encode())
                    sent += points
                    buf = buf[points:]
                    timeline.append((time.time(), sent))
            minute += 60
        cpu1 = os.times()
        db.close()
        results.put({"timeline": timeline, "points": sent,
                     "cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)})
    except KeyboardInterrupt:
        pass
    except Exception as e:
        results.put({"error": f"{type(e).__name__}: {e}"})
