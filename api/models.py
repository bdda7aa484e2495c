"""Response bodies of DESIGN §7 (contract): field names and meanings are fixed there."""

import datetime as dt
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator


def example(**body) -> ConfigDict:
    """A model's example for the OpenAPI document."""
    return ConfigDict(json_schema_extra={"examples": [body]})


class Health(BaseModel):
    model_config = example(
        status="degraded",
        checks={"pipeline": {"ok": True, "ready": True, "accepted": 1204800},
                "influx": {"ok": False, "error": "InfluxDB at http://influxdb:8086 unreachable"},
                "journal": {"ok": True, "bytes": 77490, "segments": 1, "unprocessed": 0},
                "spool": {"ok": False, "records": 31, "lines": 1860, "bytes": 342912, "oldest_age_s": 42.5}})

    status: str = Field(description="ok | degraded | starting")
    checks: dict


class StackItem(BaseModel):
    model_config = example(
        plant="wusha", stack="u1", name="Unit 1", last_reading_at="2026-11-26T09:41:59+08:00",
        rate_t_h=281.37)

    plant: str
    stack: str
    name: str
    last_reading_at: str | None = Field(description="newest accepted reading, ISO 8601 in the plant's zone")
    rate_t_h: float | None = Field(description="CO2 mass rate of the latest valid minute [t/h]")


class StackList(BaseModel):
    items: list[StackItem]


class Live(BaseModel):
    model_config = example(
        plant="wusha", stack="u1", at="2026-11-26T09:41:59+08:00", rate_t_h=281.37, hour_to_date_t=192.4,
        day_to_date_t=2510.9, month_to_date_t=161023.0, year_to_date_t=1712408.0, status="valid",
        last_reading_at="2026-11-26T09:41:59+08:00", latest_valid_minute="2026-11-26T09:40:00+08:00")

    plant: str
    stack: str
    at: str = Field(description="time of the figures: the newest reading (at most now)")
    rate_t_h: float | None = Field(description="CO2 mass rate of the latest valid minute [t/h]")
    hour_to_date_t: float = Field(description="sum of minute masses in the clock hour of `at` [t]")
    day_to_date_t: float = Field(description="local calendar day of `at` [t]")
    month_to_date_t: float
    year_to_date_t: float
    status: str = Field(description="valid | invalid | stopped (latest closed minute) | pending | stale | no_data")
    last_reading_at: str | None = None
    latest_valid_minute: str | None = None


class HourItem(BaseModel):
    model_config = example(
        start="2026-11-26T08:00:00+08:00", co2_t=279.81, co2_mg_m3=225880.4, qsn_m3_h=1238770.0,
        valid_minutes=60, operating_minutes=60, status="measured", method=None, revision=0, final=True)

    start: str
    co2_t: float | None = Field(description="hour CO2 mass [t]; null while a substitute is pending")
    co2_mg_m3: float | None
    qsn_m3_h: float | None
    valid_minutes: int
    operating_minutes: int
    status: str = Field(description="measured | substituted | stopped | missing")
    method: str | None = Field(description="substitution method code, null for measured hours")
    revision: int
    final: bool
    part75_reported: dict | None = Field(
        None, description="us_part75 only: the figures as EPA's ECMPS recalculates them (rate_short_tons_h_reported, "
                          "mass_short_tons_reported, flow_scfh_reported, co2_pct_reported) beside the unrounded "
                          "short tons")
    reported_co2_t: float | None = Field(None, description="the gateway's own figure for the hour (HJ 212 CN 2061 "
                                         "a05001 Cou), where it sends one")
    reported_diff_t: float | None = Field(None, description="co2_t minus reported_co2_t: recalculated vs reported")


class HourList(BaseModel):
    items: list[HourItem]


class DayItem(BaseModel):
    model_config = example(
        date="2026-11-25", co2_t=6702.3, measured_hours=23, substituted_hours=1, stopped_hours=0,
        valid=True, final=True)

    date: str
    co2_t: float
    measured_hours: int
    substituted_hours: int
    stopped_hours: int
    valid: bool
    final: bool


class DayList(BaseModel):
    items: list[DayItem]


class MinuteItem(BaseModel):
    model_config = example(
        start="2026-11-26T09:40:00+08:00", status="valid", readings=60, valid_readings=60,
        co2_kg=4689.5, rate_t_h=281.37, co2_mg_m3=225880.4, qsn_m3_h=1245600.0)

    start: str
    status: str = Field(description="valid | invalid | stopped")
    readings: int
    valid_readings: int
    co2_kg: float | None = Field(description="minute CO2 mass [kg]; null unless valid, 0 when stopped")
    rate_t_h: float | None
    co2_mg_m3: float | None
    qsn_m3_h: float | None


class MinuteList(BaseModel):
    items: list[MinuteItem]


# ---- reconciliation (DESIGN §5): fuel data, CEMS vs calculation, the regulators' report --------------------

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


FIRST_DATE = dt.date(2000, 1, 1)  # fuel data before it (and readings, see ingest/decode.py) is refused


class FuelIn(BaseModel):
    """One day's fuel data for a plant (DESIGN §5, the calculation method). Numbers must be JSON numbers."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"date": "2025-11-24", "fuel_t": 3100.0, "carbon_frac": 0.62, "oxidation": 0.98}]})

    date: dt.date = Field(description="the plant's local calendar date the fuel was burnt, YYYY-MM-DD; "
                                      "not in the future")
    fuel_t: float = Field(gt=0, le=1e7, strict=True, allow_inf_nan=False,
                          description="fuel burnt that day [t], at most 10 million (a plant's day is thousands)")
    carbon_frac: float = Field(gt=0, le=1, strict=True, allow_inf_nan=False,
                               description="carbon content of the fuel as a mass fraction, (0, 1] (0.62 for 62 %)")
    oxidation: float = Field(gt=0, le=1, strict=True, allow_inf_nan=False,
                             description="oxidation factor, (0, 1] (the share of the carbon burnt to CO2)")

    @field_validator("date", mode="before")
    @classmethod
    def _iso_date(cls, v):
        if not isinstance(v, str) or not _DATE.match(v):
            raise ValueError(f"must be a date written YYYY-MM-DD (the plant's local date), not {v!r}")
        try:
            d = dt.date.fromisoformat(v)
        except ValueError:
            raise ValueError(f"{v!r} is not a calendar date") from None
        if d < FIRST_DATE:
            raise ValueError(f"{v!r} is before {FIRST_DATE.isoformat()}")
        return d


class FuelRecord(BaseModel):
    """A stored day of fuel data with the CO2 it yields by calculation."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"plant": "wusha", "date": "2025-11-24", "fuel_t": 3100.0, "carbon_frac": 0.62, "oxidation": 0.98,
         "calculated_t": 6906.386666666666, "submitted_by": "wusha-operator",
         "submitted_at": "2025-11-25T09:12:03.512000+08:00"}]})

    plant: str
    date: str = Field(description="the plant's local date, YYYY-MM-DD")
    fuel_t: float = Field(description="fuel burnt that day [t]")
    carbon_frac: float = Field(description="carbon content, mass fraction")
    oxidation: float = Field(description="oxidation factor")
    calculated_t: float = Field(description="CO2 by calculation [t] = fuel_t x carbon_frac x oxidation x 44/12")
    submitted_by: str = Field(description="name of the token that submitted it")
    submitted_at: str = Field(description="when it was stored, ISO 8601 in the plant's zone")


_DAY_EXAMPLE = {"date": "2025-11-24", "cems_t": 7120.55, "calculated_t": 6906.386666666666,
                "deviation_pct": 3.1009461773546882, "flagged": False, "final": True}
_HOUR_EXAMPLE = {"start": "2025-11-24T00:00:00+08:00", "co2_t": 281.2, "co2_mg_m3": 245550.0, "qsn_m3_h": 1145190.0,
                 "valid_minutes": 60, "operating_minutes": 60, "status": "measured", "method": None, "revision": 0,
                 "final": True}
_TOTALS_EXAMPLE = {"cems_t": 7120.55, "calculated_t": 6906.386666666666}


class ComparisonDay(BaseModel):
    """CEMS vs calculation for one local calendar day of a plant (all its stacks)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_DAY_EXAMPLE]})

    date: str = Field(description="the plant's local date, YYYY-MM-DD")
    cems_t: float = Field(description="sum over every stack of the plant of the day's hour masses [t], derived "
                                      "as `/stacks/{plant}/{stack}/days` derives `co2_t`")
    calculated_t: float | None = Field(description="CO2 by the fuel calculation [t]; null without fuel data")
    deviation_pct: float | None = Field(description="(cems_t - calculated_t) / calculated_t x 100 [%]; null without "
                                                    "fuel data or when calculated_t is 0")
    flagged: bool = Field(description="|deviation_pct| is beyond the plant's `fuel_tolerance_pct`")
    final: bool = Field(description="every hour of the day (within the asked range) of every stack is final")


class Comparison(BaseModel):
    """CEMS vs calculation per local day of a plant."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"plant": "wusha", "tolerance_pct": 10.0, "items": [_DAY_EXAMPLE]}]})

    plant: str
    tolerance_pct: float = Field(description="the plant's `fuel_tolerance_pct`: the band beyond which a day is "
                                             "flagged [%]")
    items: list[ComparisonDay] = Field(description="local days with hour figures or fuel data, ascending")


class ReconciledHour(BaseModel):
    """A final hour figure, as `/stacks/{plant}/{stack}/hours` serves it."""

    model_config = ConfigDict(json_schema_extra={"examples": [_HOUR_EXAMPLE]})

    start: str = Field(description="hour start, ISO 8601 in the plant's zone")
    co2_t: float | None = Field(description="hour CO2 mass [t]")
    co2_mg_m3: float | None = Field(description="hour CO2 mass concentration [mg/m3] (null for us_part75)")
    qsn_m3_h: float | None = Field(description="hour dry standard flow [m3/h] (null for us_part75)")
    valid_minutes: int = Field(description="valid minutes of the hour")
    operating_minutes: int = Field(description="60 minus stopped minutes")
    status: str = Field(description="measured | substituted | stopped")
    method: str | None = Field(description="substitution method code, null for measured hours")
    revision: int = Field(description="times the hour was recomputed after it was final")
    final: bool = Field(description="always true here: the report lists final hours only")


class ReconciledStack(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"stack": "u1", "hours": [_HOUR_EXAMPLE]}]})

    stack: str
    hours: list[ReconciledHour] = Field(description="the stack's final hours in the range, ascending")


class ReconciledTotals(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_TOTALS_EXAMPLE]})

    cems_t: float = Field(description="sum of `co2_t` of the hours listed (final hours only) [t]")
    calculated_t: float | None = Field(description="sum of the fuel calculation over the range's days [t]; null "
                                                   "without any fuel data")


class ReconciledReport(BaseModel):
    """Final hourly figures of every stack of a plant with the daily CEMS-vs-calculation comparison."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"plant": "wusha", "regime": "china", "start": "2025-11-24T00:00:00+08:00",
         "end": "2025-11-25T00:00:00+08:00", "stacks": [{"stack": "u1", "hours": [_HOUR_EXAMPLE]}],
         "days": [_DAY_EXAMPLE], "totals": _TOTALS_EXAMPLE, "complete": True},
        {"plant": "wusha", "regime": "china", "start": "2025-11-24T00:00:00+08:00",
         "end": "2025-11-25T00:00:00+08:00", "stacks": [{"stack": "u1", "hours": [_HOUR_EXAMPLE]}],
         "days": [_DAY_EXAMPLE | {"final": False}], "totals": _TOTALS_EXAMPLE, "complete": False, "not_final": 3}]})

    plant: str
    regime: str = Field(description="china | eu | us_part75: the rules that produced the figures")
    start: str = Field(description="inclusive, ISO 8601 in the plant's zone")
    end: str = Field(description="exclusive, ISO 8601 in the plant's zone")
    stacks: list[ReconciledStack]
    days: list[ComparisonDay] = Field(description="CEMS vs calculation per local day (as `/plants/{plant}/comparison`)")
    totals: ReconciledTotals
    complete: bool = Field(description="every hour of every stack in the range is final")
    not_final: int = Field(0, description="present only when `complete` is false: stack-hours of the range without a "
                                          "final figure (not final yet, or no figure at all)")
