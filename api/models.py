"""Response bodies of DESIGN §7 (contract): field names and meanings are fixed there."""

import datetime as dt
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cems.config import FIRST_COMPLIANCE_YEAR, LAST_COMPLIANCE_YEAR, MAX_ALLOWANCES_T


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


# ---- compliance (issue 11): allowances, the year's position, the annual report -------------------------------

FIRST_YEAR, LAST_YEAR = FIRST_COMPLIANCE_YEAR, LAST_COMPLIANCE_YEAR


class AllowanceIn(BaseModel):
    """The allowances a plant holds for a compliance year (free allocation plus purchases). Numbers must be JSON
    numbers; the latest submission per year counts."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"year": 2026, "allowances_t": 1650000.0, "note": "free allocation 1.5 Mt + 150 kt bought 2026-06-30"}]})

    year: int = Field(ge=FIRST_YEAR, le=LAST_YEAR, strict=True, description="compliance year (the plant's local "
                                                                          "calendar year)")
    allowances_t: float = Field(ge=0, le=MAX_ALLOWANCES_T, strict=True, allow_inf_nan=False,
                                description="allowances held for the year [t CO2], free allocation plus purchases")
    note: str = Field("", max_length=500, description="what the figure is made of, or why it changed")


class AllowanceRecord(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"plant": "wusha", "year": 2026, "allowances_t": 1650000.0,
         "note": "free allocation 1.5 Mt + 150 kt bought 2026-06-30", "submitted_by": "wusha-operator",
         "submitted_at": "2026-07-01T09:12:03.512000+08:00", "replaced": True}]})

    plant: str
    year: int
    allowances_t: float = Field(description="allowances held [t CO2]")
    note: str
    submitted_by: str = Field(description="name of the token that submitted it")
    submitted_at: str = Field(description="when it was stored, ISO 8601 in the plant's zone")
    replaced: bool = Field(description="an earlier submission for the year was replaced (it is in the audit log)")


class ComplianceHours(BaseModel):
    measured: int = Field(description="stack-hours measured")
    substituted: int = Field(description="stack-hours substituted (method codes in the annual report)")
    stopped: int = Field(description="stack-hours with the unit stopped")
    missing: int = Field(description="stack-hours without a figure, up to the last closed hour (or the year end)")


class Projection(BaseModel):
    method: str = Field(description="run_rate | previous_year")
    projection_t: float | None = Field(description="year-end emissions by this method [t]; null when it cannot be "
                                                   "formed (no hour closed yet, no previous-year data)")
    basis: str = Field(description="how the figure was made, with its inputs")


class CalculationCheck(BaseModel):
    days: int = Field(description="local days of the year with fuel data")
    calculated_t: float | None = Field(description="fuel-method CO2 over those days [t]")
    cems_t: float = Field(description="CEMS CO2 over the same days [t]")
    deviation_pct: float | None = Field(description="(cems_t - calculated_t) / calculated_t x 100 [%]")


_COMPLIANCE_EXAMPLE = {
    "plant": "wusha", "year": 2026, "emissions_t": 1402311.7, "calculated_t": 1366020.4, "allowances_t": 1650000.0,
    "surplus_t": 247688.3, "projection_t": 1553788.3, "projection_method": "run_rate",
    "hours": {"measured": 15903, "substituted": 41, "stopped": 88, "missing": 0}, "substituted_share": 0.00262,
    "timezone": "Asia/Shanghai", "start": "2026-01-01T00:00:00+08:00", "as_of": "2026-11-26T10:00:00+08:00",
    "elapsed_hours": 7906, "year_hours": 8760, "substituted_t": 3674.1, "allowances_source": "api",
    "allowances_note": "free allocation 1.5 Mt + 150 kt bought 2026-06-30", "projected_surplus_t": 96211.7,
    "projections": [{"method": "run_rate", "projection_t": 1553788.3,
                     "basis": "1,402,311.7 t in 7,906 elapsed hours x 8,760 hours in the year"},
                    {"method": "previous_year", "projection_t": 1570960.5,
                     "basis": "1,402,311.7 t x 1,598,114.0 t (2025) / 1,426,550.2 t (2025 to the same date)"}],
    "calculation": {"days": 329, "calculated_t": 1366020.4, "cems_t": 1399052.3, "deviation_pct": 2.418},
    "final": False}


class Compliance(BaseModel):
    """Where a plant's compliance year stands against its allowances (DESIGN §7)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_COMPLIANCE_EXAMPLE]})

    plant: str
    year: int = Field(description="the plant's local calendar year")
    emissions_t: float = Field(description="sum of the plant's hour masses in the year so far (CEMS) [t]")
    calculated_t: float | None = Field(description="fuel-method CO2 over the year's days with fuel data [t]; null "
                                                   "without fuel data")
    allowances_t: float | None = Field(description="allowances held for the year [t]: the latest `POST /allowances`, "
                                                   "else the config's `allowances`; null if neither")
    surplus_t: float | None = Field(description="allowances_t - emissions_t [t]; negative: a deficit")
    projection_t: float | None = Field(description="year-end emissions at the year-to-date run rate [t]")
    projection_method: str = Field(description="the method of projection_t: run_rate (see `projections`)")
    hours: ComplianceHours = Field(description="data completeness: stack-hours by status, all stacks of the plant")
    substituted_share: float | None = Field(description="share of emissions_t from substituted hours [-], 0..1")
    timezone: str
    start: str = Field(description="start of the year, ISO 8601 in the plant's zone")
    as_of: str = Field(description="end of the last closed hour counted (the year end for a past year)")
    elapsed_hours: int = Field(description="hours of the year up to as_of")
    year_hours: int = Field(description="hours in the year")
    substituted_t: float = Field(description="part of emissions_t from substituted hours [t]")
    allowances_source: str | None = Field(description="api | config | null")
    allowances_note: str | None = None
    projected_surplus_t: float | None = Field(description="allowances_t - projection_t [t]")
    projections: list[Projection] = Field(description="both projections, each with its method and inputs")
    calculation: CalculationCheck = Field(description="CEMS against the fuel method over the days with fuel data")
    final: bool = Field(description="the year is over and every stack-hour of it is final")


class AnnualMonth(BaseModel):
    month: str = Field(description="YYYY-MM, the plant's local calendar month")
    co2_t: float = Field(description="sum of the stack's hour masses in the month [t]")
    measured_hours: int
    substituted_hours: int
    stopped_hours: int
    missing_hours: int = Field(description="hours without a figure (up to as_of)")
    substituted_t: float = Field(description="part of co2_t from substituted hours [t]")
    methods: dict[str, int] = Field(description="substituted hours per method code")
    calculated_t: float | None = Field(description="the plant's fuel-method CO2 for the month [t] (fuel data is per "
                                                   "plant: the same figure on every stack; do not add it up across "
                                                   "stacks); null without fuel data")


class AnnualStack(BaseModel):
    stack: str
    name: str
    total_t: float = Field(description="sum of the stack's hour masses in the year [t]")
    substituted_t: float
    hours: ComplianceHours
    methods: dict[str, int] = Field(description="substituted hours per method code")
    months: list[AnnualMonth] = Field(description="January to the month of as_of")


class AnnualPlantMonth(BaseModel):
    month: str
    co2_t: float = Field(description="all stacks [t]")
    calculated_t: float | None = Field(description="fuel-method CO2 [t]; null without fuel data")
    fuel_days: int = Field(description="days of the month with fuel data")
    cems_on_fuel_days_t: float = Field(description="CEMS CO2 over the days with fuel data [t]")
    deviation_pct: float | None = Field(description="(cems_on_fuel_days_t - calculated_t) / calculated_t x 100 [%]: "
                                                    "like for like, over the days with fuel data")
    flagged: bool = Field(description="|deviation_pct| beyond the plant's fuel_tolerance_pct")
    measured_hours: int
    substituted_hours: int
    stopped_hours: int
    missing_hours: int


class Revision(BaseModel):
    stack: str
    hour: str = Field(description="start of the revised hour, ISO 8601 in the plant's zone")
    revised_at: str = Field(description="when the final hour was recomputed")
    revision: int | None = Field(description="the hour's revision number after the change")
    old_co2_t: float | None
    new_co2_t: float | None
    cause: str


class StackConstants(BaseModel):
    stack: str
    regime: str | None
    t0_k: float | None = Field(description="standard temperature [K]")
    p0_kpa: float | None = Field(description="standard pressure of the regime [kPa]")
    co2_density_kg_m3: float | None = Field(description="M/Vm of CO2 [kg/m3]")
    min_valid_pct: int | None = Field(description="share of operating minutes an hour needs to be measured [%]")
    hours: int = Field(description="hour figures of the year stored with these constants")
    first_hour: str
    last_hour: str
    flow_basis: str = Field(description="the stack's configured flow basis (current config)")
    co2_basis: str
    calibration: dict[str, list[float]] = Field(description="the stack's configured calibration functions y = a + "
                                                            "b*x as [a, b] (current config)")


class CalibrationPeriod(BaseModel):
    stack: str
    start: str = Field(description="first minute with readings flagged C, ISO 8601 in the plant's zone")
    end: str = Field(description="end of the last such minute of the run")
    minutes: int
    readings: int


class AnnualReport(BaseModel):
    """One plant's compliance year for verifiers: monthly and annual CO2 per stack, how each hour was made, the
    CEMS-vs-calculation comparison by month, revisions after the lateness window, constants, calibrations."""

    plant: str
    name: str
    year: int
    regime: str = Field(description="the plant's configured regime (each stack's stored constants in `constants`)")
    substitution: str
    timezone: str
    start: str
    end: str = Field(description="end of the year (exclusive)")
    as_of: str = Field(description="end of the last closed hour counted (the year end for a past year)")
    generated_at: str
    total_t: float = Field(description="sum of every stack's hour masses in the year [t]")
    calculated_t: float | None = Field(description="fuel-method CO2 over the year [t]; null without fuel data")
    substituted_t: float
    hours: ComplianceHours
    complete: bool = Field(description="the year is over and every stack-hour of it is final")
    not_final: int = Field(description="stack-hours up to as_of without a final figure")
    stacks: list[AnnualStack]
    months: list[AnnualPlantMonth] = Field(description="the plant's months: CEMS against the fuel calculation")
    revisions: list[Revision] = Field(description="final hours recomputed after the lateness window, oldest first")
    constants: list[StackConstants] = Field(description="per stack, each set of stored constants with its hours")
    calibrations: list[CalibrationPeriod] = Field(description="runs of minutes with readings flagged C")
