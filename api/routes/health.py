from fastapi import APIRouter, Request

from cems.api.models import Health

router = APIRouter()


@router.get("/health", response_model=Health, summary="Service status (no auth)")
def health(request: Request) -> Health:
    checks = request.app.state.health()
    bad = [k for k, v in checks.items() if isinstance(v, dict) and v.get("ok") is False]
    status = "starting" if checks.get("pipeline", {}).get("ready") is False else ("degraded" if bad else "ok")
    if status == "starting":
        status = "degraded"
    return Health(status=status, checks=checks)
