"""The scenario generator (pure, seeded) and the replay CSV parser; no MQTT."""

import collections
import datetime as dt

import numpy as np
import orjson
import pytest

from cems.ingest.replay import ReplayError, parse_replay_csv, parse_ts_ms
from cems.ingest.simulator import (
    DAY_MS,
    RunOptions,
    Scenario,
    Source,
    StackSim,
    batch_payload,
    events_on_day,
    generate,
    plan_start,
)

SIM = StackSim("wusha", "u1", "Asia/Shanghai")
DAY0 = int(dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)


def day_ts(days: int = 1, start_ms: int = DAY0) -> np.ndarray:
    return start_ms + np.arange(days * 86400, dtype=np.int64) * 1000


def test_clean_data_follows_the_demo_plant():
    r = generate(SIM, day_ts(), Scenario(events=False))
    assert len(r) == 86400 and set(r.status.tolist()) == {"N"}
    assert 0.85e6 < r.values["flow_m3h"].min() and r.values["flow_m3h"].max() < 1.7e6
    assert 11.7 < r.values["co2_pct"].min() and r.values["co2_pct"].max() < 14.3
    assert 9.5 < r.values["h2o_pct"].mean() < 10.5 and 45 < r.values["temp_c"].mean() < 55


def test_velocity_stack_sends_velocity():
    r = generate(StackSim("it", "k2", area_m2=30.0, kv=0.95), day_ts()[:100], Scenario(events=False))
    assert "velocity_ms" in r.values and "flow_m3h" not in r.values


def test_calibration_window_is_flagged_c_at_local_time():
    scen = Scenario(seed=3, faults_per_day=0, gaps_per_day=0, stops_per_day=0, calibration_local_s=3 * 3600,
                    calibration_s=900)
    r = generate(SIM, day_ts(), scen)
    c = r.ts_ms[r.status == "C"]
    assert len(c) == 900
    # 03:00 Asia/Shanghai is 19:00 UTC of the day before: on 2025-01-01 UTC the window is 19:00-19:15 UTC.
    assert c.min() == DAY0 + 19 * 3_600_000 and c.max() == DAY0 + 19 * 3_600_000 + 899_000
    co2 = r.values["co2_pct"][r.status == "C"]
    assert co2[:300].max() < 0.1  # zero gas
    assert abs(co2[300:600].mean() - scen.span_co2_pct) < 0.01  # span gas


def test_events_at_their_configured_rates_and_reproducible():
    scen = Scenario(seed=11, faults_per_day=4, gaps_per_day=3, stops_per_day=0.5)
    kinds = collections.Counter(k for d in range(200) for k, _, _ in events_on_day(SIM, 20000 + d, scen))
    assert 700 < kinds["fault"] < 900 and 520 < kinds["gap"] < 680 and 70 < kinds["stop"] < 130
    assert events_on_day(SIM, 20001, scen) == events_on_day(SIM, 20001, scen)
    assert events_on_day(SIM, 20001, scen) != events_on_day(StackSim("wusha", "u2"), 20001, scen)


def test_faults_gaps_and_stops_show_in_the_readings():
    scen = Scenario(seed=5, faults_per_day=3, gaps_per_day=3, stops_per_day=1)
    ts = day_ts(4)
    r = generate(SIM, ts, scen)
    counts = collections.Counter(r.status.tolist())
    assert counts["D"] > 0 and counts["F"] > 0 and counts["C"] > 0
    assert len(r) < len(ts)  # gaps remove readings
    evs = [e for d in range(DAY0 // DAY_MS - 1, DAY0 // DAY_MS + 4) for e in events_on_day(SIM, d, scen)]
    gap_ms = {t for k, s, e in evs if k == "gap" for t in ts.tolist() if s <= t < e}
    assert len(ts) - len(r) == len(gap_ms) and not gap_ms & set(r.ts_ms.tolist())
    stopped = r.status == "F"
    assert r.values["co2_pct"][stopped].max() < 0.2 and r.values["o2_pct"][stopped].min() > 20


def test_same_readings_whatever_the_batching():
    """Events, flags and noise depend on the time only: a resumed gateway sends the same readings."""
    scen = Scenario(seed=2, faults_per_day=20, gaps_per_day=20)
    ts = day_ts()[:7200]
    whole = generate(SIM, ts, scen)
    parts = [generate(SIM, ts[i:i + 7], scen) for i in range(0, len(ts), 7)]
    assert np.concatenate([p.ts_ms for p in parts]).tolist() == whole.ts_ms.tolist()
    assert np.concatenate([p.status for p in parts]).tolist() == whole.status.tolist()
    for ch in whole.values:
        assert np.concatenate([p.values[ch] for p in parts]).tolist() == whole.values[ch].tolist()


def test_noise_is_plausible():
    r = generate(SIM, day_ts(), Scenario(events=False))
    press = r.values["press_kpa"]
    assert abs(press.mean() - 101.0) < 0.002 and 0.045 < press.std() < 0.055


def test_no_events_is_clean():
    r = generate(SIM, day_ts(3), Scenario(seed=1, events=False, faults_per_day=50, gaps_per_day=50))
    assert len(r) == 3 * 86400 and set(r.status.tolist()) == {"N"}


def test_batch_payload_is_the_contract_shape():
    r = generate(SIM, day_ts()[:3], Scenario(events=False))
    r.values["o2_pct"][1] = np.nan
    body = orjson.loads(batch_payload(r, "gw-1", 7))
    assert body["ts"] == [DAY0 // 1000 + i for i in range(3)] and body["status"] == "N"
    assert body["o2_pct"][1] is None and body["gw"] == "gw-1" and body["seq"] == 7


def test_source_availability_follows_the_clock():
    s = Source(SIM, total=100, start_ms=DAY0, period_ms=500)
    assert s.available(DAY0 - 1) == 0 and s.available(DAY0) == 1 and s.available(DAY0 + 10_000) == 21
    assert s.available(DAY0 + 10**9) == 100


def test_plan_start_keeps_sped_up_time_in_the_past():
    assert plan_start(RunOptions(speedup=60, duration_s=10), 1000.0) == 1000 - 600
    assert plan_start(RunOptions(), 1000.2) == 1001
    with pytest.raises(SystemExit, match="--speedup needs --duration"):
        plan_start(RunOptions(speedup=60), 1000.0)


def test_parse_ts():
    assert parse_ts_ms("1735689600") == DAY0 and parse_ts_ms("1735689600.5") == DAY0 + 500
    assert parse_ts_ms("2025-01-01T08:00:00+08:00") == DAY0 and parse_ts_ms("2025-01-01T00:00:00Z") == DAY0
    with pytest.raises(ValueError, match="no UTC offset"):
        parse_ts_ms("2025-01-01T08:00:00")
    with pytest.raises(ValueError, match="neither epoch seconds nor ISO 8601"):
        parse_ts_ms("yesterday")


def test_replay_csv(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("plant,stack,ts,flow_m3h,co2_pct,status\n"
                 "wusha,u1,1735689600,1.4e6,13.0,\n"
                 "wusha,u2,2025-01-01T08:00:00+08:00,1.3e6,,C\n"
                 "wusha,u1,1735689601,1.41e6,13.1,N\n")
    data = parse_replay_csv(f, {("wusha", "u1"), ("wusha", "u2")})
    u1, u2 = data[("wusha", "u1")], data[("wusha", "u2")]
    assert u1.ts_ms.tolist() == [DAY0, DAY0 + 1000] and u1.status.tolist() == ["N", "N"]
    assert u2.status.tolist() == ["C"] and np.isnan(u2.values["co2_pct"][0])
    assert orjson.loads(batch_payload(u2, "g", 1))["co2_pct"] == [None]


def test_replay_csv_bad_rows_are_named(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("plant,stack,ts,co2_pct,status\n"
                 "wusha,u1,1735689600,13.0,N\n"
                 "wusha,u9,1735689601,13.0,N\n"
                 "wusha,u1,soon,13.0,N\n"
                 "wusha,u1,1735689602,lots,N\n"
                 "wusha,u1,1735689603,13.0,X\n")
    with pytest.raises(ReplayError) as e:
        parse_replay_csv(f, {("wusha", "u1")})
    msg = str(e.value)
    assert "4 bad row(s)" in msg and "line 3: stack wusha/u9 is not configured" in msg
    assert "line 4: ts 'soon'" in msg and "line 5:" in msg and "line 6: status 'X'" in msg


def test_replay_csv_bad_header(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("plant,ts,co2_pct\nwusha,1,2\n")
    with pytest.raises(ReplayError, match="lacks column"):
        parse_replay_csv(f)
    f.write_text("plant,stack,ts,co2\nwusha,u1,1,2\n")
    with pytest.raises(ReplayError, match="unknown column"):
        parse_replay_csv(f)
