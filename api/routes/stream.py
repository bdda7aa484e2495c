"""Live figures pushed as server-sent events (the MQTT twin is the retained `cems/v1/{plant}/{stack}/live`)."""

import asyncio
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from cems.api.auth import Principal, reader

router = APIRouter()
Reader = Annotated[Principal, Depends(reader)]
POLL_S = 0.5
KEEPALIVE_S = 15.0


def _event(body: dict) -> bytes:
    return b"event: live\ndata: " + orjson.dumps(body) + b"\n\n"


@router.get(
    "/live/stream", summary="Live figures of every visible stack, pushed as server-sent events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"example": 'event: live\ndata: {"plant": "wusha", '
                                                                  '"stack": "u1", "rate_t_h": 281.4, ...}\n\n'}},
                     "description": "One `live` event per stack at connect and whenever its figures change (the "
                                    "body of `GET /stacks/{plant}/{stack}/live`); a `: keepalive` comment every "
                                    "15 s. Send the bearer token as usual (with `fetch`, not `EventSource`)."}})
async def live_stream(request: Request, who: Reader,
                      plant: Annotated[str | None, Query(description="only this plant")] = None) -> StreamingResponse:
    cfg = request.app.state.cfg
    if plant is not None:
        if not who.may_see(plant):
            raise HTTPException(403, f"token may not see plant {plant!r}")
        if cfg.plant(plant) is None:
            raise HTTPException(404, f"no plant {plant!r}")
    keys = [(p.id, s.id) for p in cfg.plants if who.may_see(p.id) and plant in (None, p.id) for s in p.stacks]
    live = request.app.state.live

    async def events():
        sent: dict[tuple[str, str], dict] = {}
        idle = 0.0
        yield b"retry: 5000\n\n"
        while not await request.is_disconnected():
            out = []
            for k in keys:
                body = live(*k)
                if body is not None and sent.get(k) != body:
                    sent[k] = body
                    out.append(_event(body))
            if out:
                idle = 0.0
                yield b"".join(out)
            elif idle >= KEEPALIVE_S:
                idle = 0.0
                yield b": keepalive\n\n"
            await asyncio.sleep(POLL_S)
            idle += POLL_S

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
