"""Prometheus metrics (text exposition format 0.0.4) at `/metrics`, for the operations team's scraper.

No token: like `/api/v1/health` it tells only counts and states; keep it on an internal network.
"""

import math

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import PlainTextResponse

router = APIRouter()


def _value(v: float | int | bool | None) -> str:
    if v is None:
        return "NaN"
    v = float(v)
    return "NaN" if math.isnan(v) else ("+Inf" if v == math.inf else "-Inf" if v == -math.inf else repr(v))


def _escape(v) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


HISTOGRAM_SAMPLES = ("_bucket", "_sum", "_count")


def exposition(metrics: list[tuple[str, str, str, float | None, dict[str, str]]]) -> str:
    """Text format from (name, type, help, value, labels) rows; rows of one family must be adjacent. A
    histogram's rows are its samples (`<family>_bucket` with `le`, `_sum`, `_count`), typed "histogram"."""
    out, seen = [], set()
    for name, kind, text, value, labels in metrics:
        family = name
        if kind == "histogram":
            family = next(name[:-len(x)] for x in HISTOGRAM_SAMPLES if name.endswith(x))
        if family not in seen:
            seen.add(family)
            out += [f"# HELP {family} {text}", f"# TYPE {family} {kind}"]
        lab = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        out.append(f"{name}{{{lab}}} {_value(value)}" if lab else f"{name} {_value(value)}")
    return "\n".join(out) + "\n"


@router.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
def metrics(request: Request) -> PlainTextResponse:
    source = request.app.state.metrics
    if source is None:
        raise HTTPException(404, "no metrics in this process")
    return PlainTextResponse(exposition(source()), media_type="text/plain; version=0.0.4")
