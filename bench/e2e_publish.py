"""Simulated gateways of the end-to-end benchmark: one process per share of the stacks (see `bench.e2e`).

A publisher walks sped-up time minute by minute. For each minute, it sends each of its stacks' 60 readings
(1 Hz) in messages of `batch` readings, one stack after another, so that a stack's minute is complete at
the broker a few milliseconds after its first reading: the service closes each minute once, as it would
in real time, however fast simulated time runs. Reading times start at `t0_s` and a minute is only sent
once it has ended by the wall clock (the service closes minutes by its wall clock; DESIGN §5).

Its place in that walk, `position` (readings published so far), is shared with the main process, which
maps a stored reading of a probe stack back to the same scale (`reading_position`) to see how far behind
the service is. In flow-controlled runs the main process also sets `allowed`: the publisher never runs
more than that many readings ahead.
"""

import os
import time
import uuid
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import numpy as np
import orjson

from bench.mqttlite import LitePublisher

CHANNELS = ("flow_m3h", "co2_pct", "o2_pct", "temp_c", "press_kpa", "h2o_pct")  # a flow-meter stack
UNLIMITED = 1 << 62
MAX_UNACKED = 2000  # messages published but not yet acknowledged by the broker


@dataclass(frozen=True)
class Share:
    """What one publisher process sends."""

    mqtt_port: int
    plant: str
    stacks: tuple[str, ...]  # in publishing order
    batch: int  # readings per message; divides 60
    t0_s: int  # first reading time, a minute start [epoch s]
    rate: float  # readings/s of this publisher; 0: as fast as `allowed` lets it
    duration_s: float
    sampled: tuple[int, ...]  # indices into `stacks` whose completed minutes are reported (latency)
    index: int  # of this publisher; also its random seed


def reading_position(share_len: int, t0_s: int, stack_index: int, ts_s: int) -> int:
    """Readings a publisher has sent up to and including the reading of `stack_index` at `ts_s`."""
    minute, second = divmod(ts_s - t0_s, 60)
    return (minute * share_len + stack_index) * 60 + second + 1


def minute_position(share_len: int, t0_s: int, stack_index: int, minute_s: int) -> int:
    """Stack-minutes a publisher has started up to and including `stack_index`'s minute at `minute_s`."""
    return (minute_s - t0_s) // 60 * share_len + stack_index + 1


def channel_pool(batch: int, seed: int, size: int = 97) -> list[bytes]:
    """JSON fragments `"flow_m3h":[...],...` of `batch` plausible readings (a 320 MW coal unit, noise)."""
    rng = np.random.default_rng(seed)
    n = size * batch
    cols = {
        "flow_m3h": np.round(rng.normal(1.4e6, 2e4, n)),
        "co2_pct": np.round(rng.normal(13.0, 0.1, n), 3),
        "o2_pct": np.round(rng.normal(6.0, 0.1, n), 3),
        "temp_c": np.round(rng.normal(50.0, 0.5, n), 2),
        "press_kpa": np.round(rng.normal(101.0, 0.05, n), 3),
        "h2o_pct": np.round(rng.normal(10.0, 0.1, n), 3),
    }
    out = []
    for k in range(size):
        part = {c: cols[c][k * batch:(k + 1) * batch].tolist() for c in CHANNELS}
        if batch == 1:
            part = {c: v[0] for c, v in part.items()}
        out.append(orjson.dumps(part)[1:-1])
    return out


def run_publisher(share: Share, position, allowed, start: Event, stop: Event, samples: Queue | None,
                  results: Queue) -> None:
    """Process body: connect, wait for `start`, publish until the duration is up or `stop`, report."""
    try:
        results.put(_publish(share, position, allowed, start, stop, samples, results))
    except KeyboardInterrupt:
        pass
    except Exception as e:  # reported, so the main process fails with the reason instead of waiting
        results.put({"error": f"{type(e).__name__}: {e}"})


def _publish(share: Share, position, allowed, start, stop, samples, results) -> dict:
    b = share.batch
    if 60 % b:
        raise ValueError(f"batch {b} does not divide 60")
    pool = channel_pool(b, share.index)
    topics = [f"cems/v1/{share.plant}/{s}/readings" for s in share.stacks]
    tails = [f',"status":"N","gw":"bench-{s}","seq":'.encode() for s in share.stacks]
    sampled = set(share.sampled) if samples is not None else set()
    client = LitePublisher("127.0.0.1", share.mqtt_port, f"bench-pub-{uuid.uuid4().hex[:10]}")
    results.put({"ready": True})
    start.wait()
    cpu0, t_start = os.times(), time.time()
    end = t_start + share.duration_s
    seqs = [0] * len(share.stacks)
    sent = pos = k = 0
    waited_for_clock = [0.0]

    def turn() -> bool:
        """Wait until the next message may go: pacing, flow control, unacknowledged messages; False when
        time is up. Buffered packets go out before any wait."""
        while True:
            now = time.time()
            if now >= end or stop.is_set():
                return False
            if (pos + b <= allowed.value and (not share.rate or pos + b <= share.rate * (now - t_start))
                    and sent - client.acked <= MAX_UNACKED):
                return True
            client.flush()
            if client.error:
                raise ConnectionError(f"publisher lost the broker: {client.error}")
            time.sleep(0.001)

    for minute, j, c in _walk(share, end, stop, waited_for_clock):
        if not turn():
            break
        ts = minute + c
        seqs[j] += 1
        head = b'{"ts":' + str(ts).encode() if b == 1 else b'{"ts":[' + ",".join(map(str, range(ts, ts + b))).encode()
        payload = b"".join((head, b"" if b == 1 else b"]", b",", pool[k % len(pool)], tails[j],
                            str(seqs[j]).encode(), b"}"))
        k += 1
        client.publish(topics[j], payload)
        if j in sampled and c + b == 60:
            client.flush()  # the minute's last reading is on its way now, not when the buffer fills
            samples.put((share.stacks[j], minute, time.time()))
        sent += 1
        pos += b
        position.value = pos
    client.flush()
    t_end = time.time()
    deadline = time.time() + 60
    while client.acked < sent and time.time() < deadline and not client.error:
        time.sleep(0.01)
    cpu1 = os.times()
    acked = client.acked
    client.close()
    return {"publisher": share.index, "messages": sent, "acked": acked, "readings": pos, "t_start": t_start,
            "t_end": t_end,
            "cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), "waited_for_clock_s": waited_for_clock[0]}


def _walk(share: Share, end: float, stop, waited: list[float]):
    """(minute start [s], stack index, second in the minute) of each message, minute by minute; a minute
    is handed out only once it has ended by the wall clock (time spent waiting for that goes to `waited`)."""
    minute = share.t0_s
    while True:
        lag = minute + 60 - time.time()
        if lag > 0:
            waited[0] += lag
            if stop.wait(min(lag, max(0.0, end - time.time()))):
                return
        for j in range(len(share.stacks)):
            for c in range(0, 60, share.batch):
                yield minute, j, c
        minute += 60
