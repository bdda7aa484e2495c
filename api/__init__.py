"""The HTTP API of DESIGN §7 (FastAPI) and the operators' dashboard."""
