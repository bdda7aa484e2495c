"""Live, provisional totals per stack: sums of minute masses per clock hour and local day, month, year.

Minute figures change (late data, corrections), so totals move by the difference between a minute's new
and old mass; nothing is summed twice.
"""

import datetime as dt
from zoneinfo import ZoneInfo


class LiveTotals:
    def __init__(self, tz: str):
        self.zone = ZoneInfo(tz)
        self.hours: dict[int, float] = {}  # hour start [epoch s] -> kg
        self.days: dict[dt.date, float] = {}
        self.months: dict[tuple[int, int], float] = {}
        self.years: dict[int, float] = {}
        self.version = 0  # changes whenever a total does (the live body is rebuilt only then)

    def add(self, minute_s: int, delta_kg: float) -> None:
        if delta_kg == 0.0:
            return
        h = minute_s - minute_s % 3600
        self.version += 1
        self.hours[h] = self.hours.get(h, 0.0) + delta_kg
        d = dt.datetime.fromtimestamp(minute_s, self.zone).date()
        self._add_day(d, delta_kg)

    def _add_day(self, d: dt.date, kg: float) -> None:
        self.version += 1
        self.days[d] = self.days.get(d, 0.0) + kg
        self.months[(d.year, d.month)] = self.months.get((d.year, d.month), 0.0) + kg
        self.years[d.year] = self.years.get(d.year, 0.0) + kg

    def seed(self, hour_sums: dict[int, float], day_sums: dict[int, float]) -> None:
        """Start from stored sums: per clock hour, and per local day keyed by its local midnight."""
        for h, kg in hour_sums.items():
            self.hours[h] = self.hours.get(h, 0.0) + kg
        for start, kg in day_sums.items():
            self._add_day(dt.datetime.fromtimestamp(start, self.zone).date(), kg)

    def prune(self, before_s: int) -> None:
        for h in [h for h in self.hours if h < before_s]:
            del self.hours[h]
            self.version += 1

    def to_date_t(self, at_s: float) -> dict[str, float]:
        """Totals [t] of the hour, local day, month and year that contain `at_s`."""
        d = dt.datetime.fromtimestamp(at_s, self.zone).date()
        h = int(at_s) - int(at_s) % 3600
        return {
            "hour_to_date_t": self.hours.get(h, 0.0) / 1000.0,
            "day_to_date_t": self.days.get(d, 0.0) / 1000.0,
            "month_to_date_t": self.months.get((d.year, d.month), 0.0) / 1000.0,
            "year_to_date_t": self.years.get(d.year, 0.0) / 1000.0,
        }


def local_year_start(now_s: float, tz: str) -> int:
    zone = ZoneInfo(tz)
    d = dt.datetime.fromtimestamp(now_s, zone)
    return int(d.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0).timestamp())
