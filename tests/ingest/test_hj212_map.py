"""HJ 212 content to the MQTT contract (DESIGN §3a): codes, units, flags, local time, reported figures."""

import datetime as dt
import math

import pytest

from cems.config import parse_config
from cems.ingest.hj212_codec import Cp, parse_cp
from cems.ingest.hj212_map import (
    JoinError,
    MapError,
    SplitJoiner,
    data_time_s,
    device_contexts,
    fold_status,
    join_cps,
    realtime_reading,
    reported_payload,
)
from cems.ingest.hj212_sim import logger_values, realtime_cp

CONFIG = """
[[plants]]
id = "wusha"
timezone = "Asia/Shanghai"
[[plants.stacks]]
id = "u1"
[[plants.stacks]]
id = "u2"
co2_density_kg_m3 = 1.977

[[plants]]
id = "berlin"
timezone = "Europe/Berlin"
[[plants.stacks]]
id = "b1"

[hj212]
listen = "127.0.0.1:6000"
ambient_kpa = 100.0

[[hj212.devices]]
mn = "M-PCT"
password = "1"
plant = "wusha"
stack = "u1"
flow_unit = "m3_s"
pressure = "gauge"
pressure_unit = "kPa"

[[hj212.devices]]
mn = "M-FIELD"
password = "2"
plant = "wusha"
stack = "u2"
co2_unit = "mg_m3"
flow_unit = "m3_h"
pressure = "gauge"
pressure_unit = "Pa"

[[hj212.devices]]
mn = "M-ABS"
password = "3"
plant = "berlin"
stack = "b1"
pressure = "absolute"
pressure_unit = "Pa"
"""
CTX = device_contexts(parse_config(CONFIG))
T0 = int(dt.datetime(2025, 1, 1, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp())  # 00:00 UTC


def cp(**codes) -> Cp:
    """A CP at 2025-01-01 08:00:00 local with ``code=(Rtd, Flag)`` or ``code=Rtd`` (no flag)."""
    items = {}
    for code, v in codes.items():
        items[code] = {"Rtd": v[0], "Flag": v[1]} if isinstance(v, tuple) else {"Rtd": v}
    return Cp({"DataTime": "20250101080000"}, items)


def test_contexts_from_config():
    assert set(CTX) == {"M-PCT", "M-FIELD", "M-ABS"}
    assert CTX["M-FIELD"].co2_density_kg_m3 == 1.977
    assert CTX["M-PCT"].co2_density_kg_m3 == pytest.approx(44.01 / 22.4)
    assert CTX["M-PCT"].readings_topic == "cems/v1/wusha/u1/readings"
    assert CTX["M-PCT"].reported_topic == "cems/v1/wusha/u1/reported"
    assert CTX["M-ABS"].ambient_kpa == 100.0


def test_each_code_with_standard_units():
    r = realtime_reading(cp(a00000="361.5", a01011="14.2", a01012="50.1", a01013="-0.25", a01014="10.5",
                            a19001="6.1", a05001="12.75"), "M-PCT", CTX["M-PCT"])
    assert r == {"ts": T0, "flow_m3h": 361.5 * 3600, "velocity_ms": 14.2, "temp_c": 50.1,
                 "press_kpa": 100.0 - 0.25, "h2o_pct": 10.5, "o2_pct": 6.1, "co2_pct": 12.75, "status": "N",
                 "gw": "M-PCT"}


def test_field_units_flow_m3h_pressure_pa_co2_mg():
    r = realtime_reading(cp(a00000="1300000", a01013="-250", a05001="24712.5"), "M-FIELD", CTX["M-FIELD"])
    assert r["flow_m3h"] == 1300000.0
    assert r["press_kpa"] == pytest.approx(100.0 - 0.25, rel=1e-15)
    # CQ = CO2% x 1e4 x density (DESIGN §4) backwards: 24712.5 mg/m3 / (1.977 kg/m3 x 1e4) = 1.25 %
    assert r["co2_pct"] == pytest.approx(24712.5 / 19770.0, rel=1e-15)
    assert r["co2_pct"] == pytest.approx(1.25)


def test_gauge_pressure_uses_a01006_when_sent():
    r = realtime_reading(cp(a01013="-250", a01006="98500"), "M-FIELD", CTX["M-FIELD"])
    assert r["press_kpa"] == pytest.approx(98.5 - 0.25, rel=1e-15)
    r = realtime_reading(cp(a01013="-0.25", a01006="98.5"), "M-PCT", CTX["M-PCT"])
    assert r["press_kpa"] == pytest.approx(98.25, rel=1e-15)
    r = realtime_reading(cp(a01013="-0.25", a01006="bad"), "M-PCT", CTX["M-PCT"])
    assert r["press_kpa"] == pytest.approx(99.75, rel=1e-15)  # unusable a01006: the configured ambient
    assert "a01006" not in r and "press_kpa" not in realtime_reading(cp(a01006="98.5", a01012="1"), "M-PCT",
                                                                     CTX["M-PCT"])


def test_absolute_pressure_ignores_ambient():
    r = realtime_reading(cp(a01013="101100", a01006="98000"), "M-ABS", CTX["M-ABS"])
    assert r["press_kpa"] == pytest.approx(101.1, rel=1e-15)


def test_missing_or_bad_values_are_null_channels():
    r = realtime_reading(cp(a01012="", a05001="nan", a01014="1e999", a19001="x", a00000=("", "D")), "M-PCT",
                         CTX["M-PCT"])
    assert {k: r[k] for k in ("temp_c", "co2_pct", "h2o_pct", "o2_pct", "flow_m3h")} == dict.fromkeys(
        ("temp_c", "co2_pct", "h2o_pct", "o2_pct", "flow_m3h"))
    assert r["status"] == "D"


def test_unmapped_codes_are_ignored():
    assert realtime_reading(cp(a21026="35.0", a34013="5.1"), "M-PCT", CTX["M-PCT"]) is None
    r = realtime_reading(cp(a21026=("35.0", "F"), a01012="50"), "M-PCT", CTX["M-PCT"])
    assert set(r) == {"ts", "temp_c", "status", "gw"} and r["status"] == "N"


@pytest.mark.parametrize("flags, want", [
    ([], "N"), (["N", "N"], "N"), (["", "N"], "N"),
    (["T", "S", "C", "M", "D", "B", "F"], "F"),
    (["T", "S", "C", "M", "D", "B"], "B"),
    (["T", "S", "C", "M", "D"], "D"),
    (["T", "S", "C", "M"], "M"),
    (["T", "S", "C"], "C"),
    (["T", "S"], "S"),
    (["T", "N"], "T"),
    (["X", "T"], "D"),  # an unknown letter counts as D, before T
    (["n", "M"], "D"),
    (["M", "P"], "D"),
])
def test_flag_folding_order(flags, want):
    assert fold_status(flags) == want


def test_status_from_the_mapped_channels_flags():
    r = realtime_reading(cp(a05001=("12.5", "C"), a01012=("50", "T"), a01014=("10", "N")), "M-PCT", CTX["M-PCT"])
    assert r["status"] == "C"
    r = realtime_reading(cp(a01013=("-0.2", "N"), a01006=("98.5", "B")), "M-PCT", CTX["M-PCT"])
    assert r["status"] == "B"  # a01006 counts where it made the pressure


def test_data_time_is_the_plants_local_time():
    c = Cp({"DataTime": "20250701120000"})
    assert data_time_s(c, CTX["M-PCT"].tz) == int(dt.datetime(2025, 7, 1, 4, 0, tzinfo=dt.UTC).timestamp())
    assert data_time_s(c, CTX["M-ABS"].tz) == int(dt.datetime(2025, 7, 1, 10, 0, tzinfo=dt.UTC).timestamp())  # CEST
    winter = Cp({"DataTime": "20250101120000"})
    assert data_time_s(winter, CTX["M-ABS"].tz) == int(dt.datetime(2025, 1, 1, 11, 0, tzinfo=dt.UTC).timestamp())


@pytest.mark.parametrize("fields, match", [
    ({}, "no DataTime"), ({"DataTime": "2025010108000"}, "YYYYMMDDhhmmss"),
    ({"DataTime": "20251301080000"}, "not a valid time"), ({"DataTime": "2025-01-01 08"}, "YYYYMMDDhhmmss"),
])
def test_bad_data_time(fields, match):
    with pytest.raises(MapError, match=match):
        realtime_reading(Cp(fields, {"a01012": {"Rtd": "1"}}), "M-PCT", CTX["M-PCT"])


def test_reported_payload_shape():
    c = parse_cp("DataTime=20250101080000;a05001-Avg=12.5,a05001-Min=12.0,a05001-Max=13.0,a05001-Flag=N;"
                 "a00000-Cou=1300000.5,a00000-Avg=361.1,a00000-Flag=D;a21026-Avg=x;a01012-Rtd=50")
    body = reported_payload("2061", c, "M-PCT", CTX["M-PCT"].tz)
    assert body == {"interval": "hour", "start": T0, "gw": "M-PCT", "values": {
        "a05001": {"Avg": 12.5, "Cou": None, "Min": 12.0, "Max": 13.0, "Flag": "N"},
        "a00000": {"Avg": 361.1, "Cou": 1300000.5, "Min": None, "Max": None, "Flag": "D"},
        "a21026": {"Avg": None, "Cou": None, "Min": None, "Max": None, "Flag": None},
    }}
    assert reported_payload("2051", c, "M-PCT", CTX["M-PCT"].tz)["interval"] == "minute"
    assert reported_payload("2031", c, "M-PCT", CTX["M-PCT"].tz)["interval"] == "day"


def test_simulator_values_map_back():
    """The simulator's unit conversion is the exact inverse of the bridge's, for every device."""
    channels = {"flow_m3h": 1.3e6, "co2_pct": 12.5, "o2_pct": 6.0, "temp_c": 50.0, "press_kpa": 101.1,
                "h2o_pct": 10.0}
    for mn, ctx in CTX.items():
        values = logger_values(channels, ctx)
        r = realtime_reading(parse_cp(realtime_cp(T0, values, None, ctx.tz)), mn, ctx)
        assert r["ts"] == T0 and r["status"] == "N"
        for k, v in channels.items():
            assert math.isclose(r[k], v, rel_tol=1e-12), (mn, k)


def test_join_split_packets_in_order():
    j = SplitJoiner(expiry_s=600)
    assert j.add(("m", "q"), 2, 3, "b", now_s=0) is None
    assert j.add(("m", "q"), 1, 3, "a", now_s=1) is None
    assert j.add(("m", "q"), 2, 3, "b2", now_s=2) is None  # sent again: replaces
    assert j.add(("m", "q"), 3, 3, "c", now_s=3) == ["a", "b2", "c"]
    assert len(j) == 0
    with pytest.raises(JoinError, match="PNUM"):
        j.add(("m", "r"), 1, 2, "x", now_s=0)
        j.add(("m", "r"), 2, 3, "y", now_s=0)


def test_incomplete_split_expires_after_10_minutes():
    j = SplitJoiner()
    j.add(("m", "q"), 1, 2, "a", now_s=1000)
    assert j.expire(1000 + 600) == []
    assert j.expire(1000 + 601) == [("m", "q")]
    assert len(j) == 0
    assert j.add(("m", "q"), 2, 2, "b", now_s=1700) is None  # a new set: the first packet is gone


def test_split_hold_is_bounded():
    j = SplitJoiner(max_packets=2)
    j.add(("m", "a"), 1, 5, "x", now_s=0)
    j.add(("m", "b"), 1, 5, "x", now_s=0)
    with pytest.raises(JoinError, match="held already"):
        j.add(("m", "c"), 1, 5, "x", now_s=0)
    assert len(j) == 2
    j.expire(10_000)
    assert j.add(("m", "c"), 1, 1, "x", now_s=10_000) == ["x"]


def test_join_cps_merges_fields_and_codes():
    a = parse_cp("DataTime=20250101080000;a01012-Rtd=50,a01012-Flag=N")
    b = parse_cp("DataTime=20250101080000;a05001-Rtd=12.5,a05001-Flag=D;a01012-Flag=F")
    joined = join_cps([a, b])
    assert joined.fields == {"DataTime": "20250101080000"}
    assert joined.codes == {"a01012": {"Rtd": "50", "Flag": "N"}, "a05001": {"Rtd": "12.5", "Flag": "D"}}
    r = realtime_reading(joined, "M-PCT", CTX["M-PCT"])
    assert (r["temp_c"], r["co2_pct"], r["status"]) == (50.0, 12.5, "D")
