"""Reconciliation (DESIGN §5, §7): CEMS vs the fuel calculation per local day, and the regulators' report of
final hourly figures for every stack of a plant, as JSON or streamed CSV."""

import csv
import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from cems.api.auth import Principal, reader, report_reader, visible_plant
from cems.api.models import (
    Comparison,
    ComparisonDay,
    ReconciledHour,
    ReconciledReport,
    ReconciledStack,
    ReconciledTotals,
)
from cems.api.routes.stacks import MAX_DAY_RANGE_DAYS, fnum
from cems.api.timeparse import iso, local_midnight, parse_range
from cems.compute.day import day_figures, local_dates
from cems.compute.fuel import deviation_pct
from cems.compute.hour import HOUR_STATUS_NAMES
from cems.compute.minute import group_offsets
from cems.config import PlantConfig
from cems.store import schema

router = APIRouter()
MAX_REPORT_RANGE_DAYS = 366
FORMATS = ("json", "csv")
HOUR_COLUMNS = ("plant", "stack", "start", "co2_t", "co2_mg_m3", "qsn_m3_h", "valid_minutes", "operating_minutes",
                "status", "method", "revision", "final")
DAY_COLUMNS = ("date", "cems_t", "calculated_t", "deviation_pct", "flagged")
CSV_CHUNK_ROWS = 1000  # rows per chunk sent


Reader = Annotated[Principal, Depends(reader)]
ReportReader = Annotated[Principal, Depends(report_reader)]
Start = Annotated[str, Query(description="YYYY-MM-DD (local midnight) or ISO 8601 with offset; inclusive")]
End = Annotated[str, Query(description="exclusive; same forms as start")]


def hours_in(start_s: int, end_s: int) -> int:
    """Hour starts (whole UTC hours, as the hour figures are labelled) in [start_s, end_s)."""
    first = -(-start_s // 3600) * 3600
    return max(0, (end_s - first + 3599) // 3600)


@dataclass
class _Day:
    cems_t: float = 0.0
    final_hours: int = 0


def _add_stack_days(days: dict[dt.date, _Day], rows: dict[int, dict], tz: str) -> None:
    """Add one stack's day masses (derived as `/days` derives them) and its final hours to `days`."""
    if not rows:
        return
    starts = np.array(sorted(rows), dtype=np.int64)
    dates = local_dates(starts, tz)
    first, offsets = group_offsets(np.array([d.toordinal() for d in dates]))
    ordered = [rows[int(h)] for h in starts]
    status = np.array([HOUR_STATUS_NAMES.index(r.get("status") or "missing") for r in ordered], np.int8)
    mass = np.array([np.nan if fnum(r.get("mass_t")) is None else fnum(r.get("mass_t")) for r in ordered])
    final = np.array([bool(r.get("final")) for r in ordered])
    figs = day_figures(offsets, status, mass, final)
    for g, i in enumerate(first):
        day = days.setdefault(dates[i], _Day())
        day.cems_t += float(figs.mass_t[g])
        day.final_hours += int(final[offsets[g]:offsets[g + 1]].sum())


def _fuel_by_date(request: Request, p: PlantConfig, start_s: int, end_s: int) -> dict[dt.date, float | None]:
    """Calculated CO2 [t] of each local day that meets [start_s, end_s) and has fuel data."""
    first_day = local_dates(np.array([start_s]), p.timezone)[0]
    rows = schema.fuel_rows(request.app.state.db, p.id, local_midnight(first_day, p.timezone), end_s)
    if not rows:
        return {}
    times = sorted(rows)
    return {d: fnum(rows[t].get("calculated_t")) for t, d in zip(times, local_dates(np.array(times), p.timezone),
                                                                   strict=True)}


def _comparison(p: PlantConfig, days: dict[dt.date, _Day], fuel: dict[dt.date, float | None], start_s: int,
                end_s: int) -> list[ComparisonDay]:
    items = []
    for d in sorted(set(days) | set(fuel)):
        day = days.get(d, _Day())
        calc = fuel.get(d)
        dev = deviation_pct(day.cems_t, calc)
        lo = max(start_s, local_midnight(d, p.timezone))
        hi = min(end_s, local_midnight(d + dt.timedelta(days=1), p.timezone))
        expected = len(p.stacks) * hours_in(lo, hi)
        items.append(ComparisonDay(date=d.isoformat(), cems_t=day.cems_t, calculated_t=calc, deviation_pct=dev,
                                   flagged=dev is not None and abs(dev) > p.fuel_tolerance_pct,
                                   final=expected > 0 and day.final_hours >= expected))
    return items


def _hour_rows(request: Request, plant: str, stack: str, start_s: int, end_s: int) -> dict[int, dict]:
    return schema.figure_rows(request.app.state.db, schema.HOUR, schema.HOUR_FIELDS, plant, stack, start_s, end_s)


def _hour(start_s: int, r: dict, tz: str) -> ReconciledHour:
    """The figures of `/stacks/{plant}/{stack}/hours`, read the same way."""
    return ReconciledHour(start=iso(start_s, tz), co2_t=fnum(r.get("mass_t")), co2_mg_m3=fnum(r.get("co2_mg_m3")),
                          qsn_m3_h=fnum(r.get("qsn_m3_h")), valid_minutes=int(r.get("valid_min") or 0),
                          operating_minutes=int(r.get("op_min") or 0), status=r.get("status") or "missing",
                          method=r.get("method") or None, revision=int(r.get("revision") or 0),
                          final=bool(r.get("final")))


@router.get("/plants/{plant}/comparison", response_model=Comparison, summary="CEMS vs fuel calculation per day",
            description="Per local day of the plant: the CEMS total of all its stacks, the fuel-method total and "
                        "their deviation, flagged beyond the plant's `fuel_tolerance_pct` (DESIGN §5).")
def comparison(request: Request, who: Reader, plant: str, start: Start, end: End) -> Comparison:
    p = visible_plant(request, who, plant)
    s, e = parse_range(start, end, p.timezone, MAX_DAY_RANGE_DAYS)
    days: dict[dt.date, _Day] = {}
    for st in p.stacks:
        _add_stack_days(days, _hour_rows(request, plant, st.id, s, e), p.timezone)
    items = _comparison(p, days, _fuel_by_date(request, p, s, e), s, e)
    return Comparison(plant=plant, tolerance_pct=p.fuel_tolerance_pct, items=items)


@router.get("/reports/reconciled", response_model=ReconciledReport, summary="Reconciled figures for regulators",
            description="Final hourly figures of every stack of the plant, with the daily CEMS-vs-calculation "
                        "comparison (DESIGN §5, §7). At most 366 days per request. `format=csv` streams one row "
                        "per stack-hour, a blank line, then the daily comparison; its `X-Report-Complete` and "
                        "`X-Not-Final-Hours` headers carry `complete` and `not_final`.",
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                             "description": "JSON (the model below) or, with `format=csv`, CSV"},
                       403: {"description": "role other than regulator/admin, or plant outside the token's scope"},
                       404: {"description": "unknown plant"}})
def reconciled(request: Request, who: ReportReader,
               plant: Annotated[str, Query(description="plant id")], start: Start, end: End,
               fmt: Annotated[str, Query(alias="format", description="json | csv",
                                         json_schema_extra={"enum": list(FORMATS)})] = "json"):
    p = visible_plant(request, who, plant)
    s, e = parse_range(start, end, p.timezone, MAX_REPORT_RANGE_DAYS)
    if fmt not in FORMATS:
        raise HTTPException(422, f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    fuel = _fuel_by_date(request, p, s, e)
    if fmt == "csv":
        return _csv_response(request, p, s, e, fuel)
    days: dict[dt.date, _Day] = {}
    stacks, cems_t, final_hours = [], 0.0, 0
    for st in p.stacks:
        rows = _hour_rows(request, plant, st.id, s, e)
        _add_stack_days(days, rows, p.timezone)
        hours = [_hour(h, r, p.timezone) for h, r in sorted(rows.items()) if r.get("final")]
        stacks.append(ReconciledStack(stack=st.id, hours=hours))
        cems_t += sum(h.co2_t for h in hours if h.co2_t is not None)
        final_hours += len(hours)
    not_final = len(p.stacks) * hours_in(s, e) - final_hours
    calc = [c for c in fuel.values() if c is not None]
    report = ReconciledReport(plant=plant, regime=p.regime, start=iso(s, p.timezone), end=iso(e, p.timezone),
                              stacks=stacks, days=_comparison(p, days, fuel, s, e),
                              totals=ReconciledTotals(cems_t=cems_t, calculated_t=sum(calc) if calc else None),
                              complete=not_final <= 0, not_final=max(0, not_final))
    body = report.model_dump(mode="json")
    if report.complete:
        del body["not_final"]  # present only when the report is incomplete
    return JSONResponse(body)


def _fixed(v: float | None, digits: int) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _stamp(epoch_s: int, tz: str) -> str:
    """A filename-safe label of a range bound: the date at local midnight, else date and time."""
    t = dt.datetime.fromisoformat(iso(epoch_s, tz))
    return t.date().isoformat() if t.time() == dt.time(0) else t.strftime("%Y-%m-%dT%H%M")


def _csv_response(request: Request, p: PlantConfig, s: int, e: int,
                  fuel: dict[dt.date, float | None]) -> StreamingResponse:
    # Completeness is counted before the first byte goes out: headers cannot follow the body.
    counts = schema.final_hour_counts(request.app.state.db, p.id, s, e)
    final_hours = sum(counts.get(st.id, 0) for st in p.stacks)  # stacks no longer configured do not count
    not_final = max(0, len(p.stacks) * hours_in(s, e) - final_hours)
    filename = f"reconciled-{p.id}-{_stamp(s, p.timezone)}-{_stamp(e, p.timezone)}.csv"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"',
               "X-Report-Complete": "true" if not_final == 0 else "false", "X-Not-Final-Hours": str(not_final)}
    return StreamingResponse(_csv_lines(request, p, s, e, fuel), media_type="text/csv", headers=headers)


def _csv_lines(request: Request, p: PlantConfig, s: int, e: int, fuel: dict[dt.date, float | None]) -> Iterator[str]:
    """The report as CSV, one stack at a time: only one stack's hours are held, sent in chunks as they are read.

    A database failure part-way ends the response without its final chunk, which clients report as a
    truncated transfer (the status line has already gone out).
    """
    buf = io.StringIO()
    out = csv.writer(buf)

    def flush() -> str:
        text = buf.getvalue()
        buf.seek(0)
        buf.truncate()
        return text

    out.writerow(HOUR_COLUMNS)
    days: dict[dt.date, _Day] = {}
    for st in p.stacks:
        rows = _hour_rows(request, p.id, st.id, s, e)
        _add_stack_days(days, rows, p.timezone)
        for n, (h, r) in enumerate(sorted(rows.items()), 1):
            if not r.get("final"):
                continue
            x = _hour(h, r, p.timezone)
            out.writerow((p.id, st.id, x.start, _fixed(x.co2_t, 3), _fixed(x.co2_mg_m3, 1), _fixed(x.qsn_m3_h, 1),
                          x.valid_minutes, x.operating_minutes, x.status, x.method or "", x.revision,
                          "true" if x.final else "false"))
            if n % CSV_CHUNK_ROWS == 0:
                yield flush()
        yield flush()
    out.writerow(())
    out.writerow(DAY_COLUMNS)
    for d in _comparison(p, days, fuel, s, e):
        out.writerow((d.date, _fixed(d.cems_t, 3), _fixed(d.calculated_t, 3), _fixed(d.deviation_pct, 2),
                      "true" if d.flagged else "false"))
    yield flush()
