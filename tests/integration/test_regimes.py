"""Hand calculations of DESIGN §4 against the API, through the real broker and database: calibration,
calibration (C) and stop (F) periods, an hour without readings between operating hours (substituted
with the average of the hours before and after), and the eu and us_part75 regimes."""

import datetime as dt
import json
import math

import pytest

from tests.conftest import close, qsn_closed_form
from tests.integration.conftest import publish, start_service

pytestmark = pytest.mark.integration
TZ = dt.timezone(dt.timedelta(hours=8))
PLANTS = """
[[plants]]
id = "cn"
timezone = "Asia/Shanghai"
settle_s = 2

[[plants.stacks]]
id = "c1"
calibration = { co2_pct = [0.2, 1.01], flow_m3h = [0, 0.98] }

[[plants]]
id = "eu"
timezone = "Europe/Berlin"
regime = "eu"
settle_s = 2

[[plants.stacks]]
id = "e1"

[[plants]]
id = "us"
timezone = "America/Chicago"
regime = "us_part75"
settle_s = 2

[[plants.stacks]]
id = "x1"
flow_basis = "std_wet"
co2_basis = "wet"
"""
A = {"flow_m3h": 1.30e6, "co2_pct": 12.0, "temp_c": 50.0, "press_kpa": 101.0, "h2o_pct": 10.0}
B = {"flow_m3h": 1.50e6, "co2_pct": 13.0, "temp_c": 52.0, "press_kpa": 101.2, "h2o_pct": 9.0}


@pytest.fixture
def svc(backends, tmp_path):
    run = start_service(backends, tmp_path, PLANTS, prefix="rg")
    yield run
    run.stop()


def minute_msg(plant, stack, t, values, status="N"):
    return (f"cems/v1/{plant}/{stack}/readings",
            json.dumps({"ts": [t + s for s in range(60)], **values, "status": status}))


def cn_conc_flow(v):
    """Calibrated CQ [mg/m3] and Qsn [m3/h] of constant readings (china: T0 273 K, 44.01/22.4)."""
    co2 = 0.2 + 1.01 * v["co2_pct"]
    flow = 0.98 * v["flow_m3h"]
    return co2 * 1e4 * 44.01 / 22.4, qsn_closed_form(flow, v["temp_c"], v["press_kpa"], v["h2o_pct"])


def hours(svc, plant, stack, start, n, cond):
    q = {"start": start.isoformat(), "end": (start + dt.timedelta(hours=n)).isoformat()}
    last = []

    def ready():
        code, body = svc.get(f"/stacks/{plant}/{stack}/hours", **q)
        items = body.get("items", []) if code == 200 else []
        last[:] = [items]
        return len(items) == n and cond(items) and items

    try:
        return svc.wait(ready, 120, f"hours of {plant}/{stack}")
    except AssertionError as e:
        raise AssertionError(f"last: {json.dumps(last, indent=1)[:3000]}") from e


def test_china_calibration_faults_gap_and_stop(svc):
    start = dt.datetime.now(TZ).replace(hour=6, minute=0, second=0, microsecond=0) - dt.timedelta(days=2)
    t0 = int(start.timestamp())
    msgs = []
    for m in range(60):
        msgs.append(minute_msg("cn", "c1", t0 + m * 60, A))  # hour 0: measured
        msgs.append(minute_msg("cn", "c1", t0 + 3600 + m * 60, A, "C" if m < 20 else "N"))  # 40 valid
        # hour 2: nothing at all
        msgs.append(minute_msg("cn", "c1", t0 + 3 * 3600 + m * 60, B))  # hour 3: measured
        msgs.append(minute_msg("cn", "c1", t0 + 4 * 3600 + m * 60, B, "F" if m < 30 else "N"))  # half stopped
        msgs.append(minute_msg("cn", "c1", t0 + 5 * 3600 + m * 60, B, "F"))  # stopped
        msgs.append(minute_msg("cn", "c1", t0 + 6 * 3600 + m * 60, B))  # measured again
    publish(svc.backends.mqtt_port, msgs)
    items = hours(svc, "cn", "c1", start, 7, lambda it: it[1]["valid_minutes"] == 40
                  and all(i["final"] for i in it))
    ca, fa = cn_conc_flow(A)
    cb, fb = cn_conc_flow(B)
    assert [i["status"] for i in items] == ["measured", "substituted", "substituted", "measured", "measured",
                                            "stopped", "measured"]
    assert [i["operating_minutes"] for i in items] == [60, 60, 60, 60, 30, 0, 60]
    assert [i["valid_minutes"] for i in items] == [60, 40, 0, 60, 30, 0, 60]
    assert [i["method"] for i in items] == [None, "HBHA", "HBHA", None, None, None, None]
    assert close(items[0]["co2_t"], ca * fa * 1e-6 / 1000)
    assert close(items[0]["co2_mg_m3"], ca) and close(items[0]["qsn_m3_h"], fa)
    # The gap (hours 1-2) takes the average of the hour before and the hour after, CQ and Qsn separately.
    for h in (1, 2):
        assert close(items[h]["co2_mg_m3"], (ca + cb) / 2) and close(items[h]["qsn_m3_h"], (fa + fb) / 2)
        assert close(items[h]["co2_t"], (ca + cb) / 2 * (fa + fb) / 2 * 1e-6 / 1000)
        assert items[h]["final"] is True and items[h]["revision"] == 0
    assert close(items[4]["co2_t"], cb * fb * 1e-6 * 30 / 60 / 1000)
    assert items[5]["co2_t"] == 0.0
    code, body = svc.get("/stacks/cn/c1/days", start=start.date().isoformat(),
                         end=(start + dt.timedelta(days=1)).date().isoformat())
    [day] = body["items"]
    assert (day["measured_hours"], day["substituted_hours"], day["stopped_hours"]) == (4, 2, 1)
    assert close(day["co2_t"], sum(i["co2_t"] for i in items))


def test_eu_regime_273_15_K_and_80_percent(svc):
    start = dt.datetime.now(dt.UTC).replace(hour=8, minute=0, second=0, microsecond=0) - dt.timedelta(days=2)
    t0 = int(start.timestamp())
    msgs = [minute_msg("eu", "e1", t0 + m * 60, A) for m in range(60)]
    msgs += [minute_msg("eu", "e1", t0 + 3600 + m * 60, A, "D" if m >= 47 else "N") for m in range(60)]  # 47 valid
    publish(svc.backends.mqtt_port, msgs)
    items = hours(svc, "eu", "e1", start, 2, lambda it: it[1]["valid_minutes"] == 47)
    qsn = qsn_closed_form(A["flow_m3h"], A["temp_c"], A["press_kpa"], A["h2o_pct"], t0_k=273.15)
    want = A["co2_pct"] * 1e4 * 44.01 / 22.4 * qsn * 1e-6 / 1000
    assert items[0]["status"] == "measured" and close(items[0]["co2_t"], want)
    assert items[1]["status"] == "substituted"  # 47 < 48 = 80 % of 60; china's 75 % would pass
    assert items[1]["method"] == "HBHA" and items[1]["final"] is False  # gap still open: hour before
    assert close(items[1]["co2_t"], want)


def test_us_part75_f11_and_reported_rounding(svc):
    start = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0) - dt.timedelta(days=2)
    t0 = int(start.timestamp())
    v = {"flow_m3h": 60000400.0 / 35.31466672, "co2_pct": 11.04}
    publish(svc.backends.mqtt_port, [minute_msg("us", "x1", t0 + m * 60, v) for m in range(60)])
    [item] = hours(svc, "us", "x1", start, 1, lambda it: it[0]["valid_minutes"] == 60)
    rate_st = 5.7e-7 * 11.04 * 60000400.0
    assert item["status"] == "measured"
    assert close(item["co2_t"], rate_st * 0.90718474)
    assert item["co2_mg_m3"] is None and item["qsn_m3_h"] is None
    rep = item["part75_reported"]
    assert rep["flow_scfh_reported"] == 60000000.0
    assert rep["rate_short_tons_h_reported"] == 377.6
    assert math.isclose(rep["rate_short_tons_h"], rate_st, rel_tol=1e-9)
