"""schemathesis fuzzes every operation of the OpenAPI document against the real service: whatever the
parameters and bodies, the answer is never a 5xx (the database being up, as here)."""

import collections
import time
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from cems import localservices as ls
from tests.integration.conftest import Running, write_config

pytestmark = pytest.mark.integration
ADMIN = "fuzz-admin-token"
# Plausible ranges (and odd ones), so a third of the generated queries get past the 422s into the queries.
DATES = [{"start": "2025-11-24", "end": "2025-11-25"},
         {"start": "2025-11-24T00:00:00+08:00", "end": "2025-11-24T06:00:00Z"},
         {"start": "1970-01-01", "end": "1970-01-02"}, {"start": "2025-02-28T23:00:00-12:00", "end": "2025-03-01"},
         {"start": "9999-12-30", "end": "9999-12-31"}, {"start": "0001-01-01", "end": "0001-01-02"}]


@pytest.fixture(scope="module")
def fuzz_service(backends, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    name = "fz_" + uuid.uuid4().hex[:10]
    port = ls.free_port()
    cfg = write_config(tmp / "cems.toml", backends, port, tmp / "data", name, f"cems-{name}")
    text = cfg.read_text().replace("[storage]", f'[[api.tokens]]\ntoken = "{ADMIN}"\nrole = "admin"\n\n[storage]')
    cfg.write_text(text)
    run = Running(backends, cfg, port, tmp / "data", name, tmp / "service.log")
    run.start()
    yield run
    run.stop()


def fuzz_operation(op, failures: list[str], codes: collections.Counter) -> None:
    post_ingest = op.method.upper() == "POST" and "/ingest/" in op.path

    @given(case=op.as_strategy())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case):
        n = sum(codes.values())
        if case.path_parameters and n % 2:  # real plant and stack ids half of the time, past the 404s
            for k, v in (("plant", "it"), ("stack", "k1")):
                if k in case.path_parameters:
                    case.path_parameters[k] = v
        if case.query and "start" in case.query and n % 3 == 0:
            case.query.update(DATES[n // 3 % len(DATES)])
        if post_ingest and n % 3 == 0:
            case.body = {"ts": [int(time.time()) - 60 - n], "co2_pct": 12.0, "flow_m3h": 1.3e6, "temp_c": 50,
                         "press_kpa": 101, "h2o_pct": 10}
        r = case.call(headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
        codes[(op.method.upper(), op.path, r.status_code)] += 1
        if r.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} {case.query} {case.body!r:.200} -> "
                            f"{r.status_code}: {r.text[:300]}")

    run()


def test_no_operation_answers_5xx(fuzz_service):
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{fuzz_service.api_port}/openapi.json")
    failures: list[str] = []
    codes: collections.Counter = collections.Counter()
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == "/api/v1/live/stream":
            continue  # an endless stream: its refusals are unit-tested, its events in test_http.py
        fuzz_operation(op, failures, codes)
    assert sum(codes.values()) > 100, f"only {sum(codes.values())} cases: {codes}"
    assert not failures, "5xx answers:\n" + "\n".join(failures[:20])
    # The fuzzing reached past the validation of every operation with parameters (a 2xx somewhere).
    ok_paths = {p for (_, p, c) in codes if 200 <= c < 300}
    assert {"/api/v1/stacks/{plant}/{stack}/hours", "/api/v1/ingest/{plant}/{stack}"} <= ok_paths, codes
