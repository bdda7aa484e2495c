"""The annual report (issue 11, DESIGN §7): one plant's compliance year for verifiers, as JSON, CSV or PDF.

Per stack and month: CO2, hours by status and by substitution method; per month for the plant: CEMS against the
fuel calculation; the final hours revised after the lateness window with their causes; the regime and constants
stored with the figures; the runs of readings flagged C (calibration). Every figure is derived from the stored
hour figures the way `/hours` and `/days` serve them, so the totals equal the sums of `/hours`.
"""

import csv
import datetime as dt
import io
import time
from typing import Annotated

import numpy as np
import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from cems.api.auth import Principal, reader, visible_plant
from cems.api.models import (
    FIRST_YEAR,
    LAST_YEAR,
    AnnualMonth,
    AnnualPlantMonth,
    AnnualReport,
    AnnualStack,
    CalibrationPeriod,
    ComplianceHours,
    Revision,
    StackConstants,
)
from cems.api.routes.compliance import (
    StackHours,
    calculation_check,
    cems_by_date,
    counted_until,
    current_year,
    fuel_by_date,
    read_plant_hours,
    year_bounds,
)
from cems.api.routes.reports import hours_in
from cems.api.routes.stacks import fnum
from cems.api.timeparse import iso, local_midnight
from cems.compute import compliance as cc
from cems.compute.day import local_dates
from cems.compute.params import regime_constants
from cems.compute.substitution import METHOD_NAMES
from cems.config import REGIMES, PlantConfig
from cems.store import schema

router = APIRouter()
Reader = Annotated[Principal, Depends(reader)]
FORMATS = ("json", "csv", "pdf")
ANNUAL_FIELDS = ("status", "method", "mass_t", "final", "regime", "t0_k", "co2_density_kg_m3", "min_valid_pct")
CONSTANT_FIELDS = ANNUAL_FIELDS[4:]
CODES = METHOD_NAMES[1:]  # substitution method codes ("" is no method)
CSV_COLUMNS = ("plant", "stack", "month", "co2_t", "measured_hours", "substituted_hours", "stopped_hours",
               "missing_hours", "substituted_t", *(f"hours_{c}" for c in CODES), "calculated_t")
CALIBRATION_FLAG = "C"  # HJ 212 flag of readings taken during calibration (DESIGN §3)


def _methods(row: np.ndarray) -> dict[str, int]:
    return {c: int(n) for c, n in zip(CODES, row[1:], strict=True) if n}


def _hours(measured, substituted, stopped, missing) -> ComplianceHours:
    return ComplianceHours(measured=int(measured), substituted=int(substituted), stopped=int(stopped),
                           missing=int(missing))


def _month_bounds(year: int, tz: str, until: int) -> list[tuple[str, int, int]]:
    """(YYYY-MM, start, end) of each local month from January to the month `until` falls in (exclusive end)."""
    out = []
    for m in range(1, 13):
        start = local_midnight(dt.date(year, m, 1), tz)
        if start >= until:
            break
        out.append((f"{year}-{m:02d}", start, local_midnight(dt.date(year + (m == 12), m % 12 + 1, 1), tz)))
    return out


def _stack(p: PlantConfig, stack_id: str, h: StackHours, months: list[tuple[str, int, int]], until: int,
           calc_months: list[float | None]) -> tuple[AnnualStack, cc.PeriodTotals]:
    n = len(months)
    month_of = np.array([d.month - 1 for d in local_dates(h.start_s, p.timezone)], np.int64)
    keep = month_of < n  # always, as hours after `until` are not written yet
    t = cc.period_totals(month_of[keep], n, h.status[keep], h.mass_t[keep], h.method[keep], h.final[keep])
    expected = np.array([hours_in(s, min(e, until)) for _, s, e in months], np.int64)
    missing = cc.missing_hours(expected, t.measured_hours, t.substituted_hours, t.stopped_hours)
    items = [AnnualMonth(month=label, co2_t=float(t.mass_t[i]), measured_hours=int(t.measured_hours[i]),
                         substituted_hours=int(t.substituted_hours[i]), stopped_hours=int(t.stopped_hours[i]),
                         missing_hours=int(missing[i]), substituted_t=float(t.substituted_t[i]),
                         methods=_methods(t.method_hours[i]), calculated_t=calc_months[i])
             for i, (label, _, _) in enumerate(months)]
    name = next(s.display_name for s in p.stacks if s.id == stack_id)
    stack = AnnualStack(stack=stack_id, name=name, total_t=float(t.mass_t.sum()), substituted_t=float(
        t.substituted_t.sum()), hours=_hours(t.measured_hours.sum(), t.substituted_hours.sum(), t.stopped_hours.sum(),
                                             missing.sum()),
                        methods=_methods(t.method_hours.sum(axis=0)), months=items)
    return stack, t


def _revisions(request: Request, p: PlantConfig, ys: int, ye: int) -> list[Revision]:
    out = []
    stacks = {s.id for s in p.stacks}
    for r in sorted(schema.revision_audits(request.app.state.db, p.id, ys), key=lambda r: r["time"]):
        try:
            hour = int(dt.datetime.fromisoformat(r.get("target") or "").timestamp())
        except ValueError:
            continue
        if not ys <= hour < ye or r.get("stack") not in stacks:
            continue
        old, new = (orjson.loads(r.get(k) or "null") or {} for k in ("old", "new"))
        out.append(Revision(stack=r["stack"], hour=iso(hour, p.timezone), revised_at=iso(r["time"] / 1000, p.timezone),
                            revision=new.get("revision"), old_co2_t=fnum(old.get("mass_t")),
                            new_co2_t=fnum(new.get("mass_t")), cause=r.get("cause") or ""))
    return out


def _constants(p: PlantConfig, hours: dict[str, StackHours]) -> list[StackConstants]:
    out = []
    for st in p.stacks:
        h = hours[st.id]
        seen: dict[tuple, list[int]] = {}  # constants -> [hours, first index, last index], first seen first
        for i, r in enumerate(h.rows):
            key = tuple(r.get(k) for k in CONSTANT_FIELDS)
            if key in seen:
                seen[key][0] += 1
                seen[key][2] = i
            else:
                seen[key] = [1, i, i]
        for (regime, t0_k, density, min_valid), (n, first, last) in seen.items():
            p0 = regime_constants(regime)["p0_kpa"] if regime in REGIMES else None
            out.append(StackConstants(
                stack=st.id, regime=regime, t0_k=fnum(t0_k), p0_kpa=p0, co2_density_kg_m3=fnum(density),
                min_valid_pct=None if min_valid is None else int(min_valid), hours=n,
                first_hour=iso(int(h.start_s[first]), p.timezone), last_hour=iso(int(h.start_s[last]), p.timezone),
                flow_basis=st.flow_basis, co2_basis=st.co2_basis,
                calibration={k: [a, b] for k, (a, b) in st.calibration.items()}))
    return out


def _calibrations(request: Request, p: PlantConfig, ys: int, ye: int) -> list[CalibrationPeriod]:
    minutes = schema.flagged_minutes(request.app.state.db, p.id, CALIBRATION_FLAG, ys, ye)
    out = []
    for st in p.stacks:
        rows = minutes.get(st.id, [])
        starts = np.array([m for m, _ in rows], np.int64)
        counts = np.array([n for _, n in rows], np.int64)
        for a, b in zip(*cc.runs(starts, 60), strict=True):
            out.append(CalibrationPeriod(stack=st.id, start=iso(int(starts[a]), p.timezone),
                                         end=iso(int(starts[b]) + 60, p.timezone), minutes=int(b - a + 1),
                                         readings=int(counts[a:b + 1].sum())))
    return out


def annual_report(request: Request, p: PlantConfig, year: int, now: float) -> AnnualReport:
    tz = p.timezone
    ys, ye = year_bounds(year, tz)
    until = counted_until(now, ys, ye)
    months = _month_bounds(year, tz, until)
    hours = read_plant_hours(request, p, ys, ye, ANNUAL_FIELDS)
    fuel = fuel_by_date(request, p, ys, ye)
    cems = cems_by_date(hours, tz)
    month_key = [label for label, _, _ in months]
    fuel_months = [[d for d in fuel if f"{d:%Y-%m}" == label] for label in month_key]
    calc_months = [sum(fuel[d] for d in days) if days else None for days in fuel_months]

    stacks, totals = [], []
    for st in p.stacks:
        s, t = _stack(p, st.id, hours[st.id], months, until, calc_months)
        stacks.append(s)
        totals.append(t)
    plant_months = []
    for i, label in enumerate(month_key):
        check = calculation_check({d: fuel[d] for d in fuel_months[i]}, cems)
        dev = check.deviation_pct
        plant_months.append(AnnualPlantMonth(
            month=label, co2_t=sum(float(t.mass_t[i]) for t in totals), calculated_t=check.calculated_t,
            fuel_days=check.days, cems_on_fuel_days_t=check.cems_t, deviation_pct=dev,
            flagged=dev is not None and abs(dev) > p.fuel_tolerance_pct,
            **{f"{k}_hours": sum(getattr(s.months[i], f"{k}_hours") for s in stacks)
               for k in ("measured", "substituted", "stopped", "missing")}))
    final_hours = sum(int(t.final_hours.sum()) for t in totals)
    not_final = max(0, len(p.stacks) * hours_in(ys, until) - final_hours)
    calc = [c for c in calc_months if c is not None]
    return AnnualReport(
        plant=p.id, name=p.display_name, year=year, regime=p.regime, substitution=p.substitution, timezone=tz,
        start=iso(ys, tz), end=iso(ye, tz), as_of=iso(until, tz), generated_at=iso(now, tz),
        total_t=sum(s.total_t for s in stacks), calculated_t=sum(calc) if calc else None,
        substituted_t=sum(s.substituted_t for s in stacks),
        hours=_hours(*(sum(getattr(s.hours, k) for s in stacks) for k in ("measured", "substituted", "stopped",
                                                                           "missing"))),
        complete=until == ye and not_final == 0, not_final=not_final, stacks=stacks, months=plant_months,
        revisions=_revisions(request, p, ys, ye), constants=_constants(p, hours),
        calibrations=_calibrations(request, p, ys, ye))


def _fixed(v: float | None, digits: int = 3) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def annual_csv(report: AnnualReport) -> str:
    """One row per stack and month (DESIGN §7); CO2 rounded to 3 decimals (decision 0003)."""
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(CSV_COLUMNS)
    for s in report.stacks:
        for m in s.months:
            out.writerow((report.plant, s.stack, m.month, _fixed(m.co2_t), m.measured_hours, m.substituted_hours,
                          m.stopped_hours, m.missing_hours, _fixed(m.substituted_t),
                          *(m.methods.get(c, 0) for c in CODES), _fixed(m.calculated_t)))
    return buf.getvalue()


@router.get("/reports/annual", response_model=AnnualReport, summary="Annual report of a plant",
            description="One plant's compliance year (its local calendar year) for verifiers (DESIGN §7): monthly and "
                        "annual CO2 per stack, hours by status and method code, CEMS against the fuel calculation by "
                        "month, final hours revised after the lateness window with their causes, the regime and "
                        "constants used, and the calibration periods. `format=csv`: one row per stack and month "
                        "(headers `X-Report-Complete`, `X-Not-Final-Hours`); `format=pdf`: the same with a monthly "
                        "chart. Regulators, operators and admins.",
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}},
                                         "application/pdf": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "JSON (the model below), CSV or PDF"},
                       403: {"description": "role may not read figures, or plant outside the token's scope"},
                       404: {"description": "unknown plant"}})
def annual(request: Request, who: Reader, plant: Annotated[str, Query(description="plant id")],
           year: Annotated[int, Query(ge=FIRST_YEAR, le=LAST_YEAR, description="the plant's local calendar year")],
           fmt: Annotated[str, Query(alias="format", description="json | csv | pdf",
                                     json_schema_extra={"enum": list(FORMATS)})] = "json"):
    p = visible_plant(request, who, plant)
    if fmt not in FORMATS:
        raise HTTPException(422, f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    now = time.time()
    if year > current_year(p, now):
        raise HTTPException(422, f"year {year} has not begun in {p.timezone}")
    report = annual_report(request, p, year, now)
    headers = {"X-Report-Complete": "true" if report.complete else "false", "X-Not-Final-Hours": str(report.not_final)}
    if fmt == "csv":
        headers["Content-Disposition"] = f'attachment; filename="annual-{plant}-{year}.csv"'
        return Response(annual_csv(report), media_type="text/csv", headers=headers)
    if fmt == "pdf":
        from cems.api.annual_pdf import annual_pdf  # matplotlib and reportlab load only when a PDF is asked for

        headers["Content-Disposition"] = f'attachment; filename="annual-{plant}-{year}.pdf"'
        return Response(annual_pdf(report), media_type="application/pdf", headers=headers)
    return JSONResponse(report.model_dump(mode="json"), headers=headers)
