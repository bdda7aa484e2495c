"""carbon-cems: online CO2 emissions monitoring (a CEMS data acquisition and handling system).

This package holds the wiring (configuration, CLI, process start-up); the stages live in
`cems.ingest`, `cems.compute`, `cems.store` and `cems.api` (top-level folders of the repository).
"""

__version__ = "0.1.0"
