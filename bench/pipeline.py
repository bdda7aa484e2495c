"""The pipeline alone, in process: `python -m bench.pipeline`. Prints readings/s; asserts nothing.

`Pipeline.handle_batch` and `close_minutes`, as the processor thread runs them, over 1,000 stacks of one
plant, with a store that keeps nothing (no broker, no journal, no database, no other thread): what the
processor's own work costs a reading, for 60-reading messages and for single readings. Each message is
built beforehand, as a gateway would send it (`bench.e2e_publish.channel_pool`), and handed once; the
first minutes are left out (numba's caches, first allocations). `--profile` prints cProfile's top functions
for one more run.
"""

import argparse
import cProfile
import pstats
import tempfile
import time

import orjson

from bench.e2e_publish import channel_pool
from cems.config import parse_config
from cems.ingest.message import Message
from cems.ingest.pipeline import Pipeline
from cems.store.deadletter import DeadLetters

PLANT = "bench"
HANDED = 500  # messages a processor round hands the pipeline (`Processor.batch`)


class NullDb:
    """A store that takes every write and holds nothing (reads find nothing)."""

    def create_database(self):
        pass

    def query(self, q, **kw):
        return []

    def write(self, lines, precision="ms"):
        pass


def pipeline(stacks: int, data_dir: str) -> Pipeline:
    decl = "".join(f'[[plants.stacks]]\nid = "s{i:04d}"\n' for i in range(stacks))
    cfg = parse_config(f'[storage]\ndata_dir = "{data_dir}"\n[[plants]]\nid = "{PLANT}"\nname = "Bench"\n'
                       f'timezone = "Asia/Shanghai"\n{decl}')
    return Pipeline(cfg, NullDb(), DeadLetters(data_dir))


def minute_messages(stacks: int, t0: int, k: int, batch: int) -> list[Message]:
    """Minute k of every stack: 60 readings in messages of `batch`, stacks interleaved."""
    pool = channel_pool(batch, seed=batch)
    t = t0 + 60 * k
    out = []
    for j in range(stacks):
        for a in range(0, 60, batch):
            ts = orjson.dumps([t + a + i for i in range(batch)] if batch > 1 else t + a)
            body = b'{"gw":"bench-s%04d","seq":%d,"ts":%s,"status":"N",%s}' % (
                j, k * 60 + a, ts, pool[(k * stacks + j + a) % len(pool)])
            out.append(Message(f"cems/v1/{PLANT}/s{j:04d}/readings", body, time.time(), qos=1))
    if batch == 1:  # a stack's readings arrive a second apart: stacks interleaved within each second
        out.sort(key=lambda m: orjson.loads(m.payload)["ts"])
    return out


def run(p: Pipeline, minutes: list[list[Message]], t0: int, first: int, batch: int) -> int:
    n = 0
    for k, msgs in enumerate(minutes):
        now = t0 + 60 * (first + k) + 61.0
        for i in range(0, len(msgs), HANDED):
            p.handle_batch(msgs[i:i + HANDED], now)
            p.flush()
            n += batch * len(msgs[i:i + HANDED])
        p.close_minutes(now)
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stacks", type=int, default=1000)
    ap.add_argument("--minutes", type=int, default=8, help="measured minutes of every stack per batch size")
    ap.add_argument("--batch", type=int, action="append", choices=(1, 60), help="default both")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args(argv)
    for batch in a.batch or [60, 1]:
        with tempfile.TemporaryDirectory(prefix="cems-bench-pipeline-") as d:
            p = pipeline(a.stacks, d)
            t0 = int(time.time() // 3600 * 3600) - 3 * 3600
            p.start(t0 + 1.0)
            warm = 2
            total = warm + a.minutes * (2 if a.profile else 1)
            minutes = [minute_messages(a.stacks, t0, k, batch) for k in range(total)]
            run(p, minutes[:warm], t0, 0, batch)
            before = p.counters["accepted"]
            t = time.perf_counter()
            n = run(p, minutes[warm:warm + a.minutes], t0, warm, batch)
            el = time.perf_counter() - t
            msgs = n // batch
            print(f"batch {batch:2d}: {n / el:12,.0f} readings/s  {msgs / el:10,.0f} msgs/s  "
                  f"{el / n * 1e6:6.2f} µs a reading  ({n:,} readings, {p.counters['accepted'] - before:,} "
                  f"accepted, {a.stacks} stacks)", flush=True)
            if a.profile:
                pr = cProfile.Profile()
                pr.enable()
                run(p, minutes[warm + a.minutes:], t0, warm + a.minutes, batch)
                pr.disable()
                pstats.Stats(pr).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
