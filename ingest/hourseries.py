"""One stack's hourly series in memory: base figures from the hour kernel, and the resolved figures
(status, substitutes, method, provisional, final, revision) last written to the store.

Substitution looks back up to 8,760 operating hours, so the series keeps `HISTORY_DAYS` of hours. Any
change (a recomputed hour, a new hour passing) reruns the substitution kernel over the whole series; only
hours whose resolved figures changed are written again.
"""

import math
from dataclasses import dataclass

import numpy as np

from cems.compute.hour import H_STOPPED, HOUR_STATUS_NAMES, MEASURED, MISSING, SUBSTITUTED
from cems.compute.substitution import EMPTY, METHOD_NAMES, substitute
from cems.store import schema

HISTORY_DAYS = 400
BASE_NAMES = {MEASURED: "measured", H_STOPPED: "stopped", SUBSTITUTED: "insufficient", EMPTY: "empty"}
BASE_CODES = {v: k for k, v in BASE_NAMES.items()}

_FIELDS = {  # name -> (dtype, fill)
    "base": (np.int8, EMPTY), "valid_min": (np.int64, 0), "stopped_min": (np.int64, 0),
    "base_op": (np.int64, 0), "conc": (np.float64, np.nan), "flow": (np.float64, np.nan),
    # resolved, as last written (status -1: never written)
    "status": (np.int8, -1), "op_min": (np.int64, 0), "conc_used": (np.float64, np.nan),
    "flow_used": (np.float64, np.nan), "method": (np.int8, 0), "provisional": (np.bool_, False),
    "final": (np.bool_, False), "revision": (np.int64, 0), "touched": (np.float64, -np.inf),
    # base figures as last written, so a change of valid minutes alone is written too
    "w_base": (np.int8, -1), "w_valid_min": (np.int64, -1), "w_stopped_min": (np.int64, -1),
}
_BASE_WRITTEN = (("base", "w_base"), ("valid_min", "w_valid_min"), ("stopped_min", "w_stopped_min"))


@dataclass
class Resolved:
    """The resolved figures of one hour, ready to be compared and written."""

    status: int
    op_min: int
    conc: float
    flow: float
    method: int
    provisional: bool


class HourSeries:
    def __init__(self):
        self.start_s: int | None = None
        self.n = 0
        self.a = {k: np.empty(0, dt) for k, (dt, _) in _FIELDS.items()}
        self.pending_final: set[int] = set()  # hour starts written but not yet final
        self._measured_cache: tuple[int, np.ndarray] | None = None  # (version, indices of measured hours)
        self._version = 0

    # ---- shape -------------------------------------------------------------------------------------
    def _grow(self, before: int, after: int) -> None:
        self._version += 1
        for k, (dt, fill) in _FIELDS.items():
            self.a[k] = np.concatenate([np.full(before, fill, dt), self.a[k], np.full(after, fill, dt)])
        self.n += before + after
        if self.start_s is not None:
            self.start_s -= before * 3600

    def index(self, h: int) -> int:
        """Index of hour `h`, growing the series to hold it."""
        if self.start_s is None:
            self.start_s = h
            self._grow(0, 1)
            return 0
        i = (h - self.start_s) // 3600
        if i < 0:
            self._grow(-i, 0)
            i = 0
        elif i >= self.n:
            self._grow(0, i - self.n + 1)
        return i

    def hour(self, i: int) -> int:
        return self.start_s + i * 3600

    @property
    def end_s(self) -> int | None:
        return None if self.start_s is None else self.start_s + self.n * 3600

    def trim(self, before_s: int) -> None:
        if self.start_s is None or before_s <= self.start_s:
            return
        cut = min((before_s - self.start_s) // 3600, self.n)
        self._version += 1
        for k in self.a:
            self.a[k] = self.a[k][cut:]
        self.n -= cut
        self.start_s += cut * 3600
        self.pending_final = {h for h in self.pending_final if h >= self.start_s}

    # ---- inputs ------------------------------------------------------------------------------------
    def set_base(self, h: int, base: int, valid_min: int, stopped_min: int, op_min: int, conc: float,
                 flow: float) -> None:
        i = self.index(h)
        a = self.a
        a["base"][i], a["valid_min"][i], a["stopped_min"][i], a["base_op"][i] = base, valid_min, stopped_min, op_min
        a["conc"][i] = conc if base == MEASURED else np.nan
        a["flow"][i] = flow if base == MEASURED else np.nan

    def touched(self, h: int) -> float:
        """When data last came for hour `h` itself (wall clock; -inf if never)."""
        if self.start_s is None or not self.start_s <= h < self.end_s:
            return -math.inf
        return float(self.a["touched"][(h - self.start_s) // 3600])

    def last_touched(self, i: int) -> float:
        """When data last came for anything hour i's figures rest on (wall clock).

        A measured or stopped hour rests on its own data. A substituted hour, or one without data, rests on
        every hour from the measured hour before it to the measured hour after it (its HB and HA, and the
        gap between), so it settles only when all of those have.
        """
        a = self.a
        if a["base"][i] in (MEASURED, H_STOPPED):
            return float(a["touched"][i])
        if self._measured_cache is None or self._measured_cache[0] != self._version:
            self._measured_cache = (self._version, np.flatnonzero(a["status"] == MEASURED))
        idx = self._measured_cache[1]
        k = int(np.searchsorted(idx, i))
        lo = int(idx[k - 1]) if k > 0 else 0
        hi = int(idx[k]) if k < len(idx) else self.n - 1  # i itself is not measured here
        return float(a["touched"][lo:hi + 1].max())

    def touch(self, h: int, now: float) -> None:
        i = self.index(h)  # first: growing replaces the arrays
        self.a["touched"][i] = now

    def load_row(self, h: int, row: dict) -> None:
        """Take an hour as stored (after a restart)."""
        i = self.index(h)
        a = self.a
        status = row.get("status") or "missing"
        base = row.get("base") or ("measured" if status == "measured" else "stopped" if status == "stopped"
                                   else "insufficient" if (row.get("valid_min") or 0) > 0 else "empty")
        a["base"][i] = BASE_CODES.get(base, EMPTY)
        a["valid_min"][i] = int(row.get("valid_min") or 0)
        a["stopped_min"][i] = int(row.get("stopped_min") or 0)
        a["base_op"][i] = int(row.get("base_op_min") if row.get("base_op_min") is not None else row.get("op_min") or 0)
        measured = status == "measured"
        a["conc"][i] = _f(schema.first_of(row, "conc_measured", *(("conc", "co2_mg_m3") if measured else ())))
        a["flow"][i] = _f(schema.first_of(row, "flow_measured", *(("flow", "qsn_m3_h") if measured else ())))
        a["status"][i] = HOUR_STATUS_NAMES.index(status) if status in HOUR_STATUS_NAMES else -1
        a["op_min"][i] = int(row.get("op_min") or 0)
        a["conc_used"][i] = _f(schema.first_of(row, "conc", "co2_mg_m3"))
        a["flow_used"][i] = _f(schema.first_of(row, "flow", "qsn_m3_h"))
        a["method"][i] = METHOD_NAMES.index(row.get("method") or "") if (row.get("method") or "") in METHOD_NAMES else 0
        a["provisional"][i] = bool(row.get("provisional"))
        a["final"][i] = bool(row.get("final"))
        a["revision"][i] = int(row.get("revision") or 0)
        for k, w in _BASE_WRITTEN:
            a[w][i] = a[k][i]
        if not a["final"][i]:
            self.pending_final.add(h)

    # ---- resolution ------------------------------------------------------------------------------------
    def resolve(self, period: np.ndarray, policy: int, mpv_conc: float, mpv_flow: float) -> list[tuple[int, Resolved]]:
        """Rerun substitution; the hours whose resolved figures differ from those last written."""
        if self.n == 0:
            return []
        a = self.a
        st, op, conc, flow, method, prov = substitute(a["base"], a["conc"], a["flow"], a["base_op"], period,
                                                      policy, mpv_conc, mpv_flow)
        changed = (st != a["status"]) | (op != a["op_min"]) | ~_same(conc, a["conc_used"]) \
            | ~_same(flow, a["flow_used"]) | (method != a["method"]) | (prov != a["provisional"])
        for k, w in _BASE_WRITTEN:
            changed |= a[k] != a[w]
        return [(int(i), Resolved(int(st[i]), int(op[i]), float(conc[i]), float(flow[i]), int(method[i]),
                                  bool(prov[i]))) for i in np.flatnonzero(changed)]

    def commit(self, i: int, r: Resolved, final: bool, revision: int) -> None:
        a = self.a
        a["status"][i], a["op_min"][i], a["conc_used"][i], a["flow_used"][i] = r.status, r.op_min, r.conc, r.flow
        a["method"][i], a["provisional"][i], a["final"][i], a["revision"][i] = r.method, r.provisional, final, revision
        for k, w in _BASE_WRITTEN:
            a[w][i] = a[k][i]
        self._version += 1
        h = self.hour(i)
        if final:
            self.pending_final.discard(h)
        else:
            self.pending_final.add(h)

    def resolved(self, i: int) -> Resolved:
        a = self.a
        return Resolved(int(a["status"][i]), int(a["op_min"][i]), float(a["conc_used"][i]), float(a["flow_used"][i]),
                        int(a["method"][i]), bool(a["provisional"][i]))


def _same(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x == y) | (np.isnan(x) & np.isnan(y))



def _f(v) -> float:
    return math.nan if v is None else float(v)


__all__ = ["HourSeries", "Resolved", "EMPTY", "MISSING", "BASE_NAMES"]
