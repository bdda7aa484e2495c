"""Fuel data for the calculation method (DESIGN §5): operators submit a plant's fuel per local day."""

import datetime as dt
import itertools
import time
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError

from cems.api.auth import Principal, operator, visible_plant
from cems.api.models import FuelIn, FuelRecord
from cems.api.timeparse import iso, local_midnight
from cems.compute.fuel import fuel_co2_t
from cems.store import schema

router = APIRouter()
_audit_seq = itertools.count()
Operator = Annotated[Principal, Depends(operator)]


def unique_audit_ns(now: float) -> int:
    # As the pipeline's audit records: ns with a counter in the last digits, so records made in the same
    # instant all stay.
    return int(now * 1e6) * 1000 + next(_audit_seq) % 1000


@router.post("/fuel/{plant}", status_code=201, response_model=FuelRecord, summary="Submit a day's fuel data",
             description="Operators (and admins) submit the fuel a plant burnt on one of its local days. The "
                         "service computes `calculated_t = fuel_t x carbon_frac x oxidation x 44/12`. Submitting "
                         "the same date again replaces the record; the previous one goes to the audit log.",
             responses={403: {"description": "role may not submit fuel data, or plant outside the token's scope"},
                        404: {"description": "unknown plant"}})
def submit_fuel(request: Request, who: Operator, plant: str, body: FuelIn) -> FuelRecord:
    p = visible_plant(request, who, plant)
    now = time.time()
    today = dt.datetime.fromtimestamp(now, ZoneInfo(p.timezone)).date()
    if body.date > today:
        raise RequestValidationError([{
            "type": "value_error", "loc": ("body", "date"), "input": body.date.isoformat(),
            "msg": f"Value error, {body.date.isoformat()} is in the future (today is {today.isoformat()} "
                   f"in {p.timezone})"}])
    day_s = local_midnight(body.date, p.timezone)
    record = {"fuel_t": body.fuel_t, "carbon_frac": body.carbon_frac, "oxidation": body.oxidation,
              "calculated_t": fuel_co2_t(body.fuel_t, body.carbon_frac, body.oxidation),
              "submitted_by": who.name, "submitted_at": iso(now, p.timezone)}
    db = request.app.state.db
    old = schema.fuel_rows(db, plant, day_s, day_s + 1).get(day_s)
    if old is not None:
        # The audit record first: if the new record then fails to store, the old one still stands and the
        # audit only shows an attempt; the other way round, the old values could be lost.
        date = {"date": body.date.isoformat()}
        db.write([schema.audit_line({"plant": plant, "kind": "fuel"}, day_s, date | old, date | record,
                                    f"fuel data resubmitted by {who.name}", unique_audit_ns(now))], precision="ns")
    db.write([schema.fuel_line(plant, day_s, record)], precision="ms")
    return FuelRecord(plant=plant, date=body.date.isoformat(), **record)
