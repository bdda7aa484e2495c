"""Compliance (issue 11, DESIGN §7): the allowances a plant holds per year, and where its year stands against them.

The compliance year is the plant's local calendar year. Hour figures are labelled by their UTC start; an hour
belongs to the year, month and day its start falls in locally, as `/days` derives days.
"""

import datetime as dt
import time
from dataclasses import dataclass
from typing import Annotated
from zoneinfo import ZoneInfo

import numpy as np
from fastapi import APIRouter, Depends, Query, Request

from cems.api.auth import Principal, allowance_setter, reader, visible_plant
from cems.api.models import (
    FIRST_YEAR,
    LAST_YEAR,
    AllowanceIn,
    AllowanceRecord,
    CalculationCheck,
    Compliance,
    ComplianceHours,
    Projection,
)
from cems.api.routes.fuel import unique_audit_ns
from cems.api.routes.reports import hours_in
from cems.api.routes.stacks import fnum
from cems.api.timeparse import iso, local_midnight
from cems.compute import compliance as cc
from cems.compute.day import local_dates
from cems.compute.fuel import deviation_pct
from cems.compute.hour import HOUR_STATUS_NAMES, MISSING
from cems.compute.substitution import METHOD_NAMES
from cems.config import PlantConfig
from cems.store import schema

router = APIRouter()
Reader = Annotated[Principal, Depends(reader)]
Setter = Annotated[Principal, Depends(allowance_setter)]
HOUR_FIELDS = ("status", "method", "mass_t", "final")
_STATUS = {name: i for i, name in enumerate(HOUR_STATUS_NAMES)}
_METHOD = {name: i for i, name in enumerate(METHOD_NAMES)}


# ---- reading a plant's year ---------------------------------------------------------------------------------

def year_bounds(year: int, tz: str) -> tuple[int, int]:
    """[start, end) of the local calendar year [epoch s]."""
    return local_midnight(dt.date(year, 1, 1), tz), local_midnight(dt.date(year + 1, 1, 1), tz)


def counted_until(now: float, start_s: int, end_s: int) -> int:
    """End of the hours of [start_s, end_s) that have closed by `now`: the start of the current UTC hour, within
    the period."""
    closed = int(now) - int(now) % 3600
    return min(max(closed, start_s), end_s)


def year_before(t_s: int, tz: str) -> int:
    """The same local date and time one year earlier [epoch s] (29 February: 1 March 00:00)."""
    t = dt.datetime.fromtimestamp(t_s, ZoneInfo(tz))
    try:
        return int(t.replace(year=t.year - 1).timestamp())
    except ValueError:
        return int(dt.datetime(t.year - 1, 3, 1, tzinfo=ZoneInfo(tz)).timestamp())


@dataclass(frozen=True)
class StackHours:
    """One stack's hour figures in a period, columnar, ascending by start."""

    start_s: np.ndarray  # int64
    status: np.ndarray  # int8, index into HOUR_STATUS_NAMES
    mass_t: np.ndarray  # float64, NaN where there is no mass (a pending substitute)
    method: np.ndarray  # int64, index into METHOD_NAMES (0: none)
    final: np.ndarray  # bool
    rows: list[dict]  # the rows as read, in the same order

    @classmethod
    def of(cls, rows: dict[int, dict]) -> "StackHours":
        starts = sorted(rows)
        ordered = [rows[h] for h in starts]
        return cls(start_s=np.array(starts, np.int64),
                   status=np.array([_STATUS.get(r.get("status") or "missing", MISSING) for r in ordered], np.int8),
                   mass_t=np.array([np.nan if fnum(r.get("mass_t")) is None else fnum(r.get("mass_t"))
                                    for r in ordered], np.float64),
                   method=np.array([_METHOD.get(r.get("method") or "", 0) for r in ordered], np.int64),
                   final=np.array([bool(r.get("final")) for r in ordered], np.bool_), rows=ordered)


def read_plant_hours(request: Request, p: PlantConfig, start_s: int, end_s: int,
                     fields: tuple[str, ...] = HOUR_FIELDS) -> dict[str, StackHours]:
    """Hour figures of each configured stack of the plant in [start_s, end_s), in config order (figures of stacks
    no longer configured are left out, as in the reconciled report)."""
    rows = schema.plant_hour_rows(request.app.state.db, p.id, start_s, end_s, fields)
    return {st.id: StackHours.of(rows.get(st.id, {})) for st in p.stacks}


def allowances_for(request: Request, p: PlantConfig, year: int, year_start_s: int) -> tuple[dict | None, str | None]:
    """The allowances record that counts for the year and where it comes from: the latest submitted ("api"), else
    the config's ("config"); (None, None) without either."""
    stored = schema.allowance_rows(request.app.state.db, p.id, year_start_s, year_start_s + 1).get(year_start_s)
    if stored is not None and fnum(stored.get("allowances_t")) is not None:
        return stored, "api"
    if year in p.allowances:
        return {"allowances_t": p.allowances[year], "note": None}, "config"
    return None, None


def fuel_by_date(request: Request, p: PlantConfig, start_s: int, end_s: int) -> dict[dt.date, float]:
    """Fuel-method CO2 [t] of each local day in [start_s, end_s) with fuel data."""
    rows = schema.fuel_rows(request.app.state.db, p.id, start_s, end_s)
    times = sorted(t for t in rows if fnum(rows[t].get("calculated_t")) is not None)
    return {d: fnum(rows[t]["calculated_t"]) for t, d in zip(times, local_dates(np.array(times), p.timezone),
                                                              strict=True)}


def cems_by_date(hours: dict[str, StackHours], tz: str) -> dict[dt.date, float]:
    """CEMS CO2 [t] per local day, all stacks."""
    out: dict[dt.date, float] = {}
    for h in hours.values():
        if not h.start_s.size:
            continue
        dates = local_dates(h.start_s, tz)
        keys = sorted(set(dates))
        index = {d: i for i, d in enumerate(keys)}
        totals = cc.period_totals(np.array([index[d] for d in dates]), len(keys), h.status, h.mass_t, h.method,
                                  h.final)
        for d, m in zip(keys, totals.mass_t, strict=True):
            out[d] = out.get(d, 0.0) + float(m)
    return out


def calculation_check(fuel: dict[dt.date, float], cems: dict[dt.date, float]) -> CalculationCheck:
    """CEMS against the fuel method over the days that have fuel data."""
    calc = sum(fuel.values()) if fuel else None
    cems_t = sum(cems.get(d, 0.0) for d in fuel)
    return CalculationCheck(days=len(fuel), calculated_t=calc, cems_t=cems_t, deviation_pct=deviation_pct(cems_t, calc))


def _t(v: float) -> str:
    return f"{v:,.1f} t"


def _nan_none(v: float) -> float | None:
    return None if v is None or np.isnan(v) else float(v)


# ---- the year's position ------------------------------------------------------------------------------------

def position(request: Request, p: PlantConfig, year: int, now: float) -> Compliance:
    tz = p.timezone
    ys, ye = year_bounds(year, tz)
    until = counted_until(now, ys, ye)
    hours = read_plant_hours(request, p, ys, ye)
    n = len(hours)
    flat = {k: np.concatenate([getattr(h, k) for h in hours.values()]) for k in ("status", "mass_t", "method",
                                                                              "final")}
    tot = cc.period_totals(np.zeros(flat["status"].size, np.int64), 1, **flat)
    emissions = float(tot.mass_t[0])
    substituted = float(tot.substituted_t[0])
    elapsed_h, year_h = hours_in(ys, until), hours_in(ys, ye)
    missing = int(cc.missing_hours(n * elapsed_h, tot.measured_hours[0], tot.substituted_hours[0],
                                   tot.stopped_hours[0]))

    run_rate = cc.run_rate_projection_t(emissions, elapsed_h, year_h)
    projections = [Projection(method="run_rate", projection_t=_nan_none(run_rate),
                              basis=f"{_t(emissions)} in {elapsed_h:,} elapsed hours x {year_h:,} hours in the year"
                              if elapsed_h else "no hour of the year has closed yet")]
    cut = year_before(until, tz)
    prev_total = prev_same = 0.0
    for h in read_plant_hours(request, p, *year_bounds(year - 1, tz)).values():
        before, after = cc.period_totals((h.start_s >= cut).astype(np.int64), 2, h.status, h.mass_t, h.method,
                                         h.final).mass_t
        prev_same += float(before)
        prev_total += float(before + after)
    by_prev = cc.previous_year_projection_t(emissions, prev_total, prev_same)
    projections.append(Projection(
        method="previous_year", projection_t=_nan_none(by_prev),
        basis=(f"{_t(emissions)} x {_t(prev_total)} ({year - 1}) / {_t(prev_same)} ({year - 1} to "
               f"{iso(cut, tz)[:16]})") if not np.isnan(by_prev) else
        f"no emissions in {year - 1} up to {iso(cut, tz)[:16]}: cannot scale by the previous year"))

    record, source = allowances_for(request, p, year, ys)
    allowances = None if record is None else float(record["allowances_t"])
    surplus = None if allowances is None else cc.surplus_t(allowances, emissions)
    projected_surplus = None if allowances is None or np.isnan(run_rate) else cc.surplus_t(allowances, run_rate)
    fuel = fuel_by_date(request, p, ys, ye)
    check = calculation_check(fuel, cems_by_date(hours, tz))
    return Compliance(
        plant=p.id, year=year, emissions_t=emissions, calculated_t=check.calculated_t, allowances_t=allowances,
        surplus_t=surplus, projection_t=_nan_none(run_rate), projection_method="run_rate",
        hours=ComplianceHours(measured=int(tot.measured_hours[0]), substituted=int(tot.substituted_hours[0]),
                              stopped=int(tot.stopped_hours[0]), missing=missing),
        substituted_share=_nan_none(cc.share(substituted, emissions)), timezone=tz, start=iso(ys, tz),
        as_of=iso(until, tz), elapsed_hours=elapsed_h, year_hours=year_h, substituted_t=substituted,
        allowances_source=source, allowances_note=None if record is None else record.get("note"),
        projected_surplus_t=projected_surplus, projections=projections, calculation=check,
        final=until == ye and int(tot.final_hours[0]) >= n * year_h)


def current_year(p: PlantConfig, now: float) -> int:
    return dt.datetime.fromtimestamp(now, ZoneInfo(p.timezone)).year


Year = Annotated[int | None, Query(ge=FIRST_YEAR, le=LAST_YEAR,
                                   description="the plant's local calendar year; default: the current one")]


@router.get("/plants/{plant}/compliance", response_model=Compliance, summary="The year against the allowances",
            description="Year-to-date CEMS emissions of every stack of the plant (and by the fuel method where fuel "
                        "data exists), the allowances held, surplus or deficit, year-end projections with their "
                        "method, and data completeness (DESIGN §7). Operators, regulators and admins.",
            responses={403: {"description": "role may not read figures, or plant outside the token's scope"},
                       404: {"description": "unknown plant"}})
def compliance(request: Request, who: Reader, plant: str, year: Year = None) -> Compliance:
    p = visible_plant(request, who, plant)
    now = time.time()
    return position(request, p, current_year(p, now) if year is None else year, now)


@router.post("/allowances/{plant}", status_code=201, response_model=AllowanceRecord,
             summary="Set the allowances held for a year",
             description="Operators (and admins) set the allowances a plant holds for a compliance year (free "
                         "allocation plus purchases) [t CO2]. The latest submission per year counts and overrides "
                         "the config's `allowances`; an earlier submission goes to the audit log (kind "
                         "`allowance`).",
             responses={403: {"description": "role may not set allowances, or plant outside the token's scope"},
                        404: {"description": "unknown plant"}})
def submit_allowances(request: Request, who: Setter, plant: str, body: AllowanceIn) -> AllowanceRecord:
    p = visible_plant(request, who, plant)
    now = time.time()
    ys, _ = year_bounds(body.year, p.timezone)
    record = {"year": body.year, "allowances_t": body.allowances_t, "note": body.note, "submitted_by": who.name,
              "submitted_at": iso(now, p.timezone)}
    db = request.app.state.db
    old = schema.allowance_rows(db, plant, ys, ys + 1).get(ys)
    if old is not None:
        # The audit record first, as for fuel data: a failure in between leaves the old figure standing.
        cause = f"allowances resubmitted by {who.name}"
        db.write([schema.audit_line({"plant": plant, "kind": "allowance"}, ys, old, record, cause,
                                    unique_audit_ns(now))], precision="ns")
    db.write([schema.allowance_line(plant, ys, record)], precision="ms")
    return AllowanceRecord(plant=plant, **record, replaced=old is not None)
