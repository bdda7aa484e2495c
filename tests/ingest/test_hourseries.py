"""The in-memory hourly series: growth, resolution diffs, and when an hour's inputs last changed."""

import math

import numpy as np

from cems.compute.hour import MEASURED, SUBSTITUTED
from cems.compute.substitution import EMPTY
from cems.ingest.hourseries import HourSeries

H = 1_700_002_800  # an hour start


def resolve_and_commit(s: HourSeries) -> list[int]:
    changes = s.resolve(np.zeros(s.n, np.int64), 0, math.nan, math.nan)
    for i, r in changes:
        s.commit(i, r, False, 0)
    return [i for i, _ in changes]


def test_growing_both_ways_keeps_hours_in_place():
    s = HourSeries()
    s.set_base(H + 3600, MEASURED, 60, 0, 60, 10.0, 100.0)
    s.set_base(H - 3600, MEASURED, 60, 0, 60, 12.0, 120.0)
    assert s.start_s == H - 3600 and s.n == 3
    assert s.a["base"].tolist() == [MEASURED, EMPTY, MEASURED]
    assert s.a["conc"][2] == 10.0 and s.a["conc"][0] == 12.0


def test_resolve_reports_only_what_changed_including_valid_minutes():
    s = HourSeries()
    for k in range(3):
        s.set_base(H + k * 3600, MEASURED, 60, 0, 60, 10.0, 100.0)
    assert resolve_and_commit(s) == [0, 1, 2]
    assert resolve_and_commit(s) == []
    s.set_base(H + 3600, MEASURED, 59, 0, 60, 10.0, 100.0)  # same figures, one valid minute fewer
    assert resolve_and_commit(s) == [1]


def test_a_gap_settles_only_when_its_neighbours_have():
    s = HourSeries()
    s.set_base(H, MEASURED, 60, 0, 60, 10.0, 100.0)
    s.set_base(H + 2 * 3600, MEASURED, 60, 0, 60, 20.0, 200.0)
    s.set_base(H + 3 * 3600, SUBSTITUTED, 30, 0, 60, math.nan, math.nan)
    s.set_base(H + 4 * 3600, MEASURED, 60, 0, 60, 20.0, 200.0)
    s.touch(H, 100.0)
    s.touch(H + 2 * 3600, 200.0)
    s.touch(H + 3 * 3600, 250.0)
    s.touch(H + 4 * 3600, 300.0)
    resolve_and_commit(s)
    assert s.a["status"].tolist() == [MEASURED, SUBSTITUTED, MEASURED, SUBSTITUTED, MEASURED]
    assert s.last_touched(0) == 100.0  # measured: its own data
    assert s.last_touched(1) == 200.0  # no data: the hours before and after it
    assert s.last_touched(3) == 300.0  # a substituted hour waits for its hour after too
