"""HTTP ingest for gateways without MQTT: the same payload, pipeline, validation and guarantees."""

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from cems.api.auth import Principal, principal

router = APIRouter()
INGEST_ROLES = frozenset({"gateway", "admin"})
MAX_BODY = 256 * 1024
EXAMPLE = {"ts": [1764000000, 1764000001], "flow_m3h": 1.45e6, "co2_pct": [13.1, 13.0], "temp_c": 50,
           "press_kpa": 101.0, "h2o_pct": 10.0, "gw": "gw-1", "seq": 17}


class IngestResult(BaseModel):
    accepted: int | None = Field(description="new readings stored (null when `queued`)")
    duplicates: int = Field(0, description="readings identical to stored ones, dropped")
    corrections: int = Field(0, description="readings that replaced different ones for the same time (audited)")
    invalid: int = Field(0, description="readings stored but invalid (flag, range, missing channel)")
    queued: bool = Field(False, description="journaled, but not yet handled within 30 s (it will be)")

    model_config = {"json_schema_extra": {"examples": [{"accepted": 2, "duplicates": 0, "corrections": 0,
                                                        "invalid": 0, "queued": False}]}}


class IngestBusy(Exception):
    """Not confirmed in time (intake queue or journal full): try again later. Resending is safe: if the
    first attempt was taken after all, the readings are recognised as duplicates."""


def gateway(request: Request) -> Principal:
    p = principal(request)
    if p.role not in INGEST_ROLES:
        raise HTTPException(403, f"role {p.role!r} may not send readings (gateway or admin)")
    return p


@router.post(
    "/ingest/{plant}/{stack}", status_code=202, response_model=IngestResult,
    summary="Send readings over HTTP (body as the MQTT readings payload)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "description": "as on MQTT (DESIGN §3): `ts` and channel values, scalars "
                                                    "or equal-length arrays, optional `status`, `gw`, `seq`"},
        "example": EXAMPLE}}}},
    responses={422: {"description": "The message was refused; `detail` says why. It is kept in the dead-letter "
                                    "store and a notice goes to `cems/v1/{plant}/{stack}/rejected`."},
               503: {"description": "Not confirmed (intake full); retry after `Retry-After`. Resending is safe: "
                                    "readings already stored count as duplicates."}})
async def ingest(request: Request, who: Annotated[Principal, Depends(gateway)], plant: str, stack: str) -> IngestResult:
    """202 once the readings are journaled on disk and handled: `accepted` counts the new readings (a
    resent reading is a duplicate, not an error). The body goes to the pipeline as sent, so it is judged
    exactly as an MQTT message is."""
    if not who.may_see(plant):
        raise HTTPException(403, f"token may not send for plant {plant!r}")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise HTTPException(413, f"body of {len(raw)} bytes exceeds {MAX_BODY}; split the readings")
    submit = request.app.state.ingest
    if submit is None:
        raise HTTPException(503, "HTTP ingest is not available in this process")
    try:
        out = await anyio.to_thread.run_sync(submit, f"cems/v1/{plant}/{stack}/readings", raw)
    except IngestBusy as e:
        raise HTTPException(503, str(e), headers={"Retry-After": "10"}) from None
    if out is None:
        return IngestResult(accepted=None, queued=True)
    if out.rejected:
        raise HTTPException(422, out.rejected)
    return IngestResult(accepted=out.accepted, duplicates=out.duplicates, corrections=out.corrections,
                        invalid=out.invalid, queued=False)
