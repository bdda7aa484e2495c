"""The FastAPI application factory. Settings and handles come in; nothing is global."""

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

import cems
from cems.api.auth import TokenTable
from cems.api.routes import annual, compliance, fuel, health, ingest, reports, stacks, stream
from cems.api.routes import metrics as metrics_route
from cems.config import Config
from cems.store.influx import Influx, InfluxError

STATIC = Path(__file__).parent / "static"


def create_app(cfg: Config, db: Influx, live: Callable[[str, str], dict | None],
               health_checks: Callable[[], dict], ingest_message: Callable[[str, bytes], object] | None = None,
               metrics: Callable[[], list] | None = None) -> FastAPI:
    """Build the app.

    Parameters
    ----------
    cfg : the validated configuration (plants, stacks, tokens)
    db : the store handle the read endpoints query
    live : (plant, stack) -> the live body, or None before the pipeline has started
    health_checks : () -> dict of named checks, each a dict with at least ``ok``
    ingest_message : (topic, payload) -> the pipeline's `Outcome` (None if not handled in time), blocking;
        raises `routes.ingest.IngestBusy` when the message could not be taken. None: no HTTP ingest.
    metrics : () -> (name, type, help, value, labels) rows for `/metrics` (Prometheus). None: 404.
    """
    app = FastAPI(title="carbon-cems", version=cems.__version__,
                  description="Online CO2 emissions monitoring: live totals for operators, reconciled "
                              "figures for regulators (DESIGN §7).")
    app.state.cfg = cfg
    app.state.db = db
    app.state.live = live
    app.state.health = health_checks
    app.state.ingest = ingest_message
    app.state.metrics = metrics
    app.state.tokens = TokenTable(cfg.api.tokens)
    app.include_router(health.router, prefix="/api/v1", tags=["health"])
    app.include_router(stacks.router, prefix="/api/v1", tags=["stacks"])
    app.include_router(reports.router, prefix="/api/v1", tags=["reports"])
    app.include_router(fuel.router, prefix="/api/v1", tags=["fuel"])
    app.include_router(compliance.router, prefix="/api/v1", tags=["compliance"])
    app.include_router(annual.router, prefix="/api/v1", tags=["reports"])
    app.include_router(stream.router, prefix="/api/v1", tags=["live"])
    app.include_router(ingest.router, prefix="/api/v1", tags=["ingest"])
    app.include_router(metrics_route.router)

    @app.exception_handler(InfluxError)
    def _store_down(request: Request, exc: InfluxError) -> JSONResponse:
        return JSONResponse({"detail": f"the database is unavailable, try again shortly: {exc}"}, status_code=503,
                            headers={"Retry-After": "10"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
