"""Response bodies of DESIGN §7 (contract): field names and meanings are fixed there."""

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str = Field(description="ok | degraded | starting")
    checks: dict


class StackItem(BaseModel):
    plant: str
    stack: str
    name: str
    last_reading_at: str | None = Field(description="newest accepted reading, ISO 8601 in the plant's zone")
    rate_t_h: float | None = Field(description="CO2 mass rate of the latest valid minute [t/h]")


class StackList(BaseModel):
    items: list[StackItem]


class Live(BaseModel):
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
