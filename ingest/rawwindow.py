"""The raw readings of a stack's recent past, one `MinuteRaw` per minute, held in columns.

A minute's readings arrive in blocks (a message's readings of that minute, or a batch's). Blocks of one
minute never share a reading time: the pipeline checks a new block against the minute (`overlaps`) and
takes the per-reading path (duplicates, corrections) only when they do, rebuilding the minute with
`from_records`. Once a minute's figure is computed its blocks are merged into one, sorted by time
(`columns`), so a minute costs about 90 bytes a reading in memory however its readings came.
"""

import math
from typing import NamedTuple

import numpy as np

from cems.compute.channels import FLAG_CODE, FLAG_UNKNOWN, N_CHANNELS

Raw = tuple  # one reading: (values tuple, status letter, gw, seq)


class Block(NamedTuple):
    ts_ms: np.ndarray  # int64 (k,)
    values: np.ndarray  # float64 (k, N_CHANNELS), as received (before calibration)
    flags: np.ndarray  # int8 (k,) HJ 212 flag codes of `status`
    status: list[str]  # (k,) the status letters as received
    gw: list  # (k,) str | None
    seq: list  # (k,) int | None


def same_reading(a: Raw, b: Raw) -> bool:
    """The same values (NaN equal to NaN) and status: a duplicate, not a correction."""
    if a[1] != b[1]:
        return False
    return all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a[0], b[0], strict=True))


class MinuteRaw:
    __slots__ = ("blocks", "max_ts", "n")

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.max_ts = -(1 << 62)
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def add(self, block: Block, newest_ms: int | None = None) -> None:
        """Add readings whose times the minute does not hold yet (see `overlaps`); `newest_ms`, if the
        caller knows it, saves looking for the block's latest time."""
        if len(block.ts_ms):
            self.blocks.append(block)
            self.n += len(block.ts_ms)
            newest = int(block.ts_ms.max()) if newest_ms is None else newest_ms
            if newest > self.max_ts:
                self.max_ts = newest

    def overlaps(self, ts_ms: list[int]) -> bool:
        """Whether the minute already holds a reading at any of these times (the common case, readings
        newer than all held, is answered without looking at them)."""
        if not self.blocks or min(ts_ms) > self.max_ts:
            return False
        held = self.blocks[0].ts_ms if len(self.blocks) == 1 else np.concatenate([b.ts_ms for b in self.blocks])
        return bool(np.isin(ts_ms, held).any())

    def columns(self) -> Block:
        """All readings as one block sorted by time; the minute keeps that block from now on."""
        if len(self.blocks) == 1 and _sorted(self.blocks[0].ts_ms):
            return self.blocks[0]
        bs = self.blocks
        ts = np.concatenate([b.ts_ms for b in bs]) if bs else np.empty(0, np.int64)
        order = np.argsort(ts, kind="stable")
        status = [s for b in bs for s in b.status]
        gw = [g for b in bs for g in b.gw]
        seq = [q for b in bs for q in b.seq]
        idx = order.tolist()
        merged = Block(ts[order],
                       (np.concatenate([b.values for b in bs]) if bs else np.empty((0, N_CHANNELS)))[order],
                       (np.concatenate([b.flags for b in bs]) if bs else np.empty(0, np.int8))[order],
                       [status[i] for i in idx], [gw[i] for i in idx], [seq[i] for i in idx])
        self.blocks = [merged] if len(ts) else []
        return merged

    def records(self) -> dict[int, Raw]:
        """Reading time [ms] -> (values, status, gw, seq), for the per-reading path."""
        out = {}
        for b in self.blocks:
            for ts, vals, st, gw, seq in zip(b.ts_ms.tolist(), b.values.tolist(), b.status, b.gw, b.seq,
                                             strict=True):
                out[ts] = (tuple(vals), st, gw, seq)
        return out

    @classmethod
    def from_records(cls, records: dict[int, Raw]) -> "MinuteRaw":
        out = cls()
        if records:
            ts = sorted(records)
            recs = [records[t] for t in ts]
            status = [r[1] for r in recs]
            out.add(Block(np.array(ts, np.int64), np.array([r[0] for r in recs], np.float64).reshape(-1, N_CHANNELS),
                          np.array([FLAG_CODE.get(s, FLAG_UNKNOWN) for s in status], np.int8), status,
                          [r[2] for r in recs], [r[3] for r in recs]))
        return out


def _sorted(ts: np.ndarray) -> bool:
    return len(ts) < 2 or bool((ts[1:] > ts[:-1]).all())
