"""Stacks: the list, live totals, hour figures and day figures (DESIGN §7)."""

import datetime as dt
import math
import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request

from cems.api.auth import Principal, reader
from cems.api.models import (
    DayItem,
    DayList,
    HourItem,
    HourList,
    Live,
    MinuteItem,
    MinuteList,
    StackItem,
    StackList,
)
from cems.api.timeparse import iso, local_midnight, parse_range
from cems.compute.day import day_figures, local_dates
from cems.compute.hour import HOUR_STATUS_NAMES
from cems.compute.minute import group_offsets
from cems.config import PlantConfig, StackConfig
from cems.store import schema

router = APIRouter()
Reader = Annotated[Principal, Depends(reader)]
MAX_HOUR_RANGE_DAYS = 366
MAX_DAY_RANGE_DAYS = 3660
MAX_MINUTE_RANGE_DAYS = 2


def _stack(request: Request, who: Principal, plant: str, stack: str) -> tuple[PlantConfig, StackConfig]:
    if not who.may_see(plant):
        raise HTTPException(403, f"token may not see plant {plant!r}")
    p = request.app.state.cfg.plant(plant)
    s = next((s for s in p.stacks if s.id == stack), None) if p else None
    if s is None:
        raise HTTPException(404, f"no stack {plant}/{stack}")
    return p, s


def fnum(v) -> float | None:
    """A stored number as a float, None where it is missing or NaN (JSON has no NaN)."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


@router.get("/stacks", response_model=StackList, summary="Stacks this token may see")
def stacks(request: Request, who: Reader) -> StackList:
    items = []
    for p in request.app.state.cfg.plants:
        if not who.may_see(p.id):
            continue
        for s in p.stacks:
            live = request.app.state.live(p.id, s.id) or {}
            items.append(StackItem(plant=p.id, stack=s.id, name=s.display_name,
                                   last_reading_at=live.get("last_reading_at"), rate_t_h=live.get("rate_t_h")))
    return StackList(items=items)


@router.get("/stacks/{plant}/{stack}/live", response_model=Live, summary="Live provisional totals")
def live(request: Request, who: Reader, plant: str, stack: str) -> Live:
    _stack(request, who, plant, stack)
    body = request.app.state.live(plant, stack)
    if body is None:
        raise HTTPException(503, "the pipeline is still starting; no live figures yet")
    return Live(**body)


def _vs_logger(row: dict, reported_kg: float | None) -> dict:
    if reported_kg is None:
        return {}
    ours = fnum(row.get("mass_t"))
    theirs = reported_kg / 1000
    return {"reported_co2_t": theirs, "reported_diff_t": None if ours is None else ours - theirs}


def _part75(row: dict) -> dict | None:
    if row.get("regime") != "us_part75":
        return None
    return {k: fnum(row.get(k)) for k in schema.PART75_FIELDS}


def _hour_rows(request: Request, plant: str, stack: str, start_s: int, end_s: int) -> dict[int, dict]:
    return schema.figure_rows(request.app.state.db, schema.HOUR, schema.HOUR_FIELDS, plant, stack, start_s, end_s)


@router.get("/stacks/{plant}/{stack}/hours", response_model=HourList, summary="Hour figures")
def hours(request: Request, who: Reader, plant: str, stack: str,
          start: Annotated[str, Query(description="ISO 8601 with offset, or YYYY-MM-DD (local midnight)")],
          end: Annotated[str, Query(description="exclusive; same forms as start")]) -> HourList:
    p, _ = _stack(request, who, plant, stack)
    s, e = parse_range(start, end, p.timezone, MAX_HOUR_RANGE_DAYS)
    rows = _hour_rows(request, plant, stack, s, e)
    logger = schema.reported_co2_kg(request.app.state.db, plant, stack, "hour", s, e)
    items = [HourItem(start=iso(h, p.timezone), co2_t=fnum(r.get("mass_t")), co2_mg_m3=fnum(r.get("co2_mg_m3")),
                      qsn_m3_h=fnum(r.get("qsn_m3_h")), valid_minutes=int(r.get("valid_min") or 0),
                      operating_minutes=int(r.get("op_min") or 0), status=r.get("status") or "missing",
                      method=r.get("method") or None, revision=int(r.get("revision") or 0),
                      final=bool(r.get("final")), part75_reported=_part75(r), **_vs_logger(r, logger.get(h)))
             for h, r in sorted(rows.items())]
    return HourList(items=items)


@router.get("/stacks/{plant}/{stack}/minutes", response_model=MinuteList,
            summary="Minute figures (provisional; at most 2 days per request)")
def minutes(request: Request, who: Reader, plant: str, stack: str,
            start: Annotated[str, Query(description="ISO 8601 with offset, or YYYY-MM-DD (local midnight)")],
            end: Annotated[str, Query(description="exclusive; same forms as start")]) -> MinuteList:
    p, _ = _stack(request, who, plant, stack)
    s, e = parse_range(start, end, p.timezone, MAX_MINUTE_RANGE_DAYS)
    rows = schema.figure_rows(request.app.state.db, schema.MINUTE, schema.MINUTE_FIELDS, plant, stack, s, e)
    items = []
    for m, r in sorted(rows.items()):
        rate = fnum(r.get("rate_kg_h"))
        items.append(MinuteItem(start=iso(m, p.timezone), status=r.get("status") or "invalid",
                                readings=int(r.get("n") or 0), valid_readings=int(r.get("n_valid") or 0),
                                co2_kg=fnum(r.get("mass_kg")), rate_t_h=None if rate is None else rate / 1000,
                                co2_mg_m3=fnum(r.get("co2_mg_m3")), qsn_m3_h=fnum(r.get("qsn_m3_h"))))
    return MinuteList(items=items)


@router.get("/stacks/{plant}/{stack}/days", response_model=DayList, summary="Local calendar day figures")
def days(request: Request, who: Reader, plant: str, stack: str,
         start: Annotated[str, Query(description="YYYY-MM-DD or ISO 8601 with offset")],
         end: Annotated[str, Query(description="exclusive")]) -> DayList:
    p, _ = _stack(request, who, plant, stack)
    s, e = parse_range(start, end, p.timezone, MAX_DAY_RANGE_DAYS)
    rows = _hour_rows(request, plant, stack, s, e)
    if not rows:
        return DayList(items=[])
    starts = np.array(sorted(rows), dtype=np.int64)
    dates = local_dates(starts, p.timezone)
    keys = np.array([d.toordinal() for d in dates])
    first, offsets = group_offsets(keys)
    ordered = [rows[int(h)] for h in starts]
    status = np.array([HOUR_STATUS_NAMES.index(r.get("status") or "missing") for r in ordered], np.int8)
    mass = np.array([np.nan if fnum(r.get("mass_t")) is None else fnum(r.get("mass_t")) for r in ordered])
    final = np.array([bool(r.get("final")) for r in ordered])
    figs = day_figures(offsets, status, mass, final)
    now = time.time()
    lateness = p.lateness_h * 3600
    items = []
    for g, i in enumerate(first):
        d = dates[i]
        day_end = local_midnight(d + dt.timedelta(days=1), p.timezone)
        items.append(DayItem(date=d.isoformat(), co2_t=float(figs.mass_t[g]),
                             measured_hours=int(figs.measured_hours[g]),
                             substituted_hours=int(figs.substituted_hours[g]),
                             stopped_hours=int(figs.stopped_hours[g]), valid=bool(figs.valid[g]),
                             final=bool(figs.final[g]) and now >= day_end + lateness))
    return DayList(items=items)

