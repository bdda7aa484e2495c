"""Unit tests of the MQTT readings payload decoder (DESIGN §3): topic, payload, message-level time rules."""

import math

import numpy as np
import orjson
import pytest

from cems.compute.channels import FLAG_CODE, FLAG_UNKNOWN, FLAGS, INDEX, N_CHANNELS, NAMES
from cems.ingest.decode import (
    MAX_PAYLOAD_BYTES,
    TS_MAX_S,
    TS_MIN_S,
    Decoded,
    Rejected,
    check_times,
    decode_payload,
    parse_topic,
)

T0 = 1_795_478_400  # 2026-11-24T00:00:00Z
T0_MS = T0 * 1000


def enc(obj) -> bytes:
    return orjson.dumps(obj)


def rejected(payload) -> Rejected:
    """Decode `payload` (bytes, or an object to encode) and return the `Rejected` it must raise."""
    if not isinstance(payload, bytes):
        payload = enc(payload)
    with pytest.raises(Rejected) as info:
        decode_payload(payload)
    assert info.value.reason == str(info.value)
    return info.value


def assert_shapes(d: Decoded, n: int) -> None:
    assert len(d) == n
    assert d.ts_ms.dtype == np.int64 and d.ts_ms.shape == (n,)
    assert d.values.dtype == np.float64 and d.values.shape == (n, N_CHANNELS)
    assert d.flags.dtype == np.int8 and d.flags.shape == (n,)
    assert len(d.status) == n


# --- single readings ----------------------------------------------------------------------------------


def test_channel_order_is_the_registry_order():
    assert NAMES == ("flow_m3h", "velocity_ms", "co2_pct", "o2_pct", "temp_c", "press_kpa", "h2o_pct")


def test_single_reading_epoch_seconds_all_channels():
    sent = {name: 10.0 + i for i, name in enumerate(NAMES)}
    d = decode_payload(enc({"ts": T0, **sent}))
    assert_shapes(d, 1)
    assert d.ts_ms.tolist() == [T0_MS]
    assert d.values[0].tolist() == [sent[name] for name in NAMES]
    assert d.status == ["N"]
    assert d.flags.tolist() == [FLAG_CODE["N"]]
    assert d.gw is None and d.seq is None
    assert d.ignored_keys == ()


def test_single_reading_keys_in_any_order_land_in_channel_order():
    d = decode_payload(b'{"h2o_pct": 9.5, "co2_pct": 12.5, "ts": 1795478400, "flow_m3h": 1400000}')
    row = d.values[0]
    assert row[INDEX["flow_m3h"]] == 1_400_000.0
    assert row[INDEX["co2_pct"]] == 12.5
    assert row[INDEX["h2o_pct"]] == 9.5
    missing = [name for name in NAMES if name not in ("flow_m3h", "co2_pct", "h2o_pct")]
    assert all(math.isnan(row[INDEX[name]]) for name in missing)


def test_single_reading_fractional_epoch_seconds_keep_milliseconds():
    d = decode_payload(enc({"ts": T0 + 0.25, "co2_pct": 12}))
    assert d.ts_ms.tolist() == [T0_MS + 250]


def test_integer_channel_values_become_float():
    d = decode_payload(enc({"ts": T0, "flow_m3h": 1_500_000, "co2_pct": 13}))
    assert d.values[0, INDEX["flow_m3h"]] == 1_500_000.0
    assert d.values.dtype == np.float64


@pytest.mark.parametrize("ts", [
    "2026-11-24T08:00:00+08:00",
    "2026-11-24T00:00:00Z",
    "2026-11-24T00:00:00+00:00",
    "2026-11-23T19:00:00-05:00",
    "2026-11-24T00:00:00.000Z",
])
def test_single_reading_iso_8601_with_offset(ts):
    d = decode_payload(enc({"ts": ts, "co2_pct": 12.5}))
    assert_shapes(d, 1)
    assert d.ts_ms.tolist() == [T0_MS]
    assert d.values[0, INDEX["co2_pct"]] == 12.5


def test_iso_8601_fractional_seconds():
    d = decode_payload(enc({"ts": "2026-11-24T08:00:00.123+08:00"}))
    assert d.ts_ms.tolist() == [T0_MS + 123]


def test_single_reading_null_channel_is_nan():
    d = decode_payload(enc({"ts": T0, "co2_pct": None, "o2_pct": 6.0}))
    assert math.isnan(d.values[0, INDEX["co2_pct"]])
    assert d.values[0, INDEX["o2_pct"]] == 6.0


def test_ts_range_boundaries():
    assert decode_payload(enc({"ts": TS_MIN_S})).ts_ms.tolist() == [TS_MIN_S * 1000]
    assert decode_payload(enc({"ts": TS_MAX_S - 1})).ts_ms.tolist() == [(TS_MAX_S - 1) * 1000]
    assert decode_payload(enc({"ts": "2000-01-01T00:00:00Z"})).ts_ms.tolist() == [TS_MIN_S * 1000]
    late = decode_payload(enc({"ts": "2100-01-01T07:59:59+08:00"}))  # 2099-12-31T23:59:59Z
    assert late.ts_ms.tolist() == [(TS_MAX_S - 1) * 1000]


# --- batches ------------------------------------------------------------------------------------------


def test_columnar_batch_with_scalars_applying_to_every_reading():
    d = decode_payload(enc({
        "ts": [T0, T0 + 5, T0 + 10],
        "flow_m3h": [1.4e6, 1.5e6, 1.6e6],
        "co2_pct": [12.0, None, 13.0],
        "temp_c": 50.0,  # scalar: every reading
        "press_kpa": None,  # scalar null: missing in every reading
        "h2o_pct": 10,
        "gw": "gw-7",
        "seq": 1234,
    }))
    assert_shapes(d, 3)
    assert d.ts_ms.tolist() == [T0_MS, T0_MS + 5000, T0_MS + 10_000]
    assert d.values[:, INDEX["flow_m3h"]].tolist() == [1.4e6, 1.5e6, 1.6e6]
    co2 = d.values[:, INDEX["co2_pct"]]
    assert co2[0] == 12.0 and math.isnan(co2[1]) and co2[2] == 13.0
    assert d.values[:, INDEX["temp_c"]].tolist() == [50.0, 50.0, 50.0]
    assert d.values[:, INDEX["h2o_pct"]].tolist() == [10.0, 10.0, 10.0]
    assert np.isnan(d.values[:, INDEX["press_kpa"]]).all()
    assert np.isnan(d.values[:, INDEX["velocity_ms"]]).all()  # absent key: missing everywhere
    assert np.isnan(d.values[:, INDEX["o2_pct"]]).all()
    assert d.status == ["N", "N", "N"]
    assert d.flags.tolist() == [0, 0, 0]
    assert (d.gw, d.seq) == ("gw-7", 1234)


def test_batch_with_iso_timestamps():
    d = decode_payload(enc({"ts": ["2026-11-24T08:00:00+08:00", "2026-11-24T00:00:05Z"], "co2_pct": [1, 2]}))
    assert d.ts_ms.tolist() == [T0_MS, T0_MS + 5000]


def test_batch_of_one_with_scalar_ts():
    d = decode_payload(enc({"ts": T0, "co2_pct": [12.0], "status": ["M"]}))
    assert_shapes(d, 1)
    assert d.ts_ms.tolist() == [T0_MS]
    assert d.status == ["M"]


def test_null_elements_become_nan_in_every_channel():
    d = decode_payload(enc({"ts": [T0, T0 + 1], **{name: [None, 1.0] for name in NAMES}}))
    assert np.isnan(d.values[0]).all()
    assert (d.values[1] == 1.0).all()


def test_values_are_kept_as_sent_even_out_of_range():
    """Range checks are reading-level (validity), never a rejection."""
    d = decode_payload(enc({"ts": T0, "co2_pct": -5.0, "temp_c": 1e9}))
    assert d.values[0, INDEX["co2_pct"]] == -5.0
    assert d.values[0, INDEX["temp_c"]] == 1e9


# --- status -------------------------------------------------------------------------------------------


def test_status_defaults_to_n():
    d = decode_payload(enc({"ts": [T0, T0 + 1]}))
    assert d.status == ["N", "N"]
    assert d.flags.tolist() == [FLAG_CODE["N"]] * 2


def test_status_null_means_n():
    d = decode_payload(enc({"ts": T0, "status": None}))
    assert d.status == ["N"] and d.flags.tolist() == [FLAG_CODE["N"]]


def test_scalar_status_applies_to_every_reading():
    d = decode_payload(enc({"ts": [T0, T0 + 1, T0 + 2], "status": "M"}))
    assert d.status == ["M", "M", "M"]
    assert d.flags.tolist() == [FLAG_CODE["M"]] * 3


def test_per_reading_status_array_covers_every_hj212_flag():
    letters = list(FLAGS)
    d = decode_payload(enc({"ts": [T0 + i for i in range(len(letters))], "status": letters}))
    assert d.status == letters
    assert d.flags.tolist() == [FLAG_CODE[x] for x in letters]
    assert d.flags.tolist() == list(range(len(FLAGS)))


def test_null_in_status_array_means_n():
    d = decode_payload(enc({"ts": [T0, T0 + 1], "status": ["F", None]}))
    assert d.status == ["F", "N"]
    assert d.flags.tolist() == [FLAG_CODE["F"], FLAG_CODE["N"]]


@pytest.mark.parametrize("letter", ["X", "n", "", "NN", "正常"])
def test_unknown_status_letters_are_kept_with_flag_unknown(letter):
    d = decode_payload(enc({"ts": [T0, T0 + 1], "status": [letter, "N"]}))
    assert d.status == [letter, "N"]
    assert d.flags.tolist() == [FLAG_UNKNOWN, FLAG_CODE["N"]]
    assert FLAG_UNKNOWN not in FLAG_CODE.values()


# --- gw, seq, unknown keys ----------------------------------------------------------------------------


def test_gw_and_seq_carried():
    d = decode_payload(enc({"ts": T0, "gw": "edge-01", "seq": 0}))
    assert d.gw == "edge-01" and d.seq == 0
    d = decode_payload(enc({"ts": T0, "gw": None, "seq": None}))
    assert d.gw is None and d.seq is None
    d = decode_payload(enc({"ts": T0, "seq": -3}))
    assert d.seq == -3


def test_unknown_keys_reported_not_an_error():
    d = decode_payload(enc({
        "ts": [T0, T0 + 1],
        "co2_pct": [1.0, 2.0],
        "so2_mg": [1, 2, 3, 4],  # an unknown array of another length does not count
        "Co2_pct": 1,  # case matters
        "firmware": {"v": 3},
    }))
    assert_shapes(d, 2)
    assert d.ignored_keys == ("Co2_pct", "firmware", "so2_mg")
    assert d.values[:, INDEX["co2_pct"]].tolist() == [1.0, 2.0]


# --- message-level rejections -------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"hello", b"{", b'{"ts": 1795478400,}', b"{'ts': 1}", b"NaN",
                                     b'{"ts": NaN}', b'{"ts": 1795478400} x'])
def test_reject_not_json(payload):
    assert rejected(payload).reason.startswith("not JSON")


@pytest.mark.parametrize("payload", [
    b"\xff\xfe\x00",
    b'{"ts": 1795478400, "gw": "\xff"}',
    b'{"ts": 1795478400, "gw": "caf\xe9"}',  # Latin-1, not UTF-8
    '{"ts": 1795478400}'.encode("utf-16"),
])
def test_reject_not_utf8(payload):
    e = rejected(payload)
    assert e.reason.startswith("not JSON")
    assert "UTF-8" in e.reason or "BOM" in e.reason or "byte order mark" in e.reason


def test_utf8_non_ascii_accepted():
    d = decode_payload('{"ts": 1795478400, "gw": "乌沙-1"}'.encode())
    assert d.gw == "乌沙-1"


@pytest.mark.parametrize(("payload", "kind"), [
    (b"[1, 2]", "list"), (b"[]", "list"), (b"42", "int"), (b"4.5", "float"), (b'"ts"', "str"),
    (b"null", "NoneType"), (b"true", "bool"),
])
def test_reject_not_an_object(payload, kind):
    assert rejected(payload).reason == f"payload must be a JSON object, got {kind}"


@pytest.mark.parametrize("obj", [{}, {"co2_pct": 12}, {"ts": None}, {"TS": T0}, {"ts": None, "co2_pct": [1, 2]}])
def test_reject_no_ts(obj):
    assert rejected(obj).reason == "no ts"


def test_reject_unequal_array_lengths_names_keys_and_lengths():
    e = rejected({"ts": [T0, T0 + 1], "co2_pct": [1.0, 2.0, 3.0], "temp_c": 50})
    assert e.reason.startswith("unequal array lengths")
    assert "ts 2" in e.reason and "co2_pct 3" in e.reason
    assert "temp_c" not in e.reason


def test_reject_unequal_lengths_status_array():
    e = rejected({"ts": [T0, T0 + 1], "status": ["N"]})
    assert e.reason == "unequal array lengths: ts 2, status 1"


@pytest.mark.parametrize("obj", [{"ts": []}, {"ts": [], "co2_pct": []}, {"ts": T0, "co2_pct": []},
                                 {"ts": [], "status": []}])
def test_reject_empty_arrays(obj):
    e = rejected(obj)
    assert "empty" in e.reason


@pytest.mark.parametrize("ts", ["2026-11-24T08:00:00", "2026-11-24 08:00:00", "2026-11-24"])
def test_reject_iso_without_offset(ts):
    e = rejected({"ts": ts})
    assert e.reason == f"ts: {ts!r} has no UTC offset"


def test_reject_iso_without_offset_in_batch_names_the_element():
    e = rejected({"ts": ["2026-11-24T08:00:00Z", "2026-11-24T08:00:05"]})
    assert e.reason.startswith("ts[1]: ") and "no UTC offset" in e.reason


@pytest.mark.parametrize("ts", ["", "yesterday", "1795478400", "2026-13-01T00:00:00Z", "24/11/2026 08:00 +08:00"])
def test_reject_string_that_is_not_a_time(ts):
    e = rejected({"ts": ts})
    assert e.reason == f"ts: {ts!r} is not an ISO 8601 time"


@pytest.mark.parametrize(("ts", "kind"), [(True, "bool"), (False, "bool"), ({"s": T0}, "dict"),
                                          ([[T0]], "list")])
def test_reject_ts_of_wrong_type(ts, kind):
    e = rejected({"ts": ts})
    assert "expected epoch seconds or an ISO 8601 string" in e.reason
    assert e.reason.endswith(f"got {kind}")
    assert e.reason.startswith("ts")


def test_reject_ts_array_element_of_wrong_type_names_the_index():
    e = rejected({"ts": [T0, True]})
    assert e.reason == "ts[1]: expected epoch seconds or an ISO 8601 string, got bool"
    e = rejected({"ts": [T0, None]})
    assert e.reason.startswith("ts[1]: ")


@pytest.mark.parametrize("ts", [0, -1, TS_MIN_S - 1, TS_MAX_S, T0_MS, 1e300, -1e300,
                                "1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z", "2100-01-01T08:00:00+08:00",
                                "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_reject_ts_outside_2000_2100(ts):
    e = rejected({"ts": ts})
    assert e.reason.startswith("ts: ")
    assert "between 2000 and 2100" in e.reason


def test_reject_ts_in_milliseconds_says_seconds_expected():
    e = rejected({"ts": [T0, T0_MS]})
    assert e.reason.startswith("ts[1]: ")
    assert "epoch seconds expected" in e.reason


def test_reject_batch_with_scalar_ts():
    e = rejected({"ts": T0, "co2_pct": [12.0, 13.0]})
    assert e.reason == "a batch needs one ts per reading"
    e = rejected({"ts": T0, "status": ["N", "N", "N"]})
    assert e.reason == "a batch needs one ts per reading"


@pytest.mark.parametrize(("value", "kind"), [("12.5", "str"), (True, "bool"), (False, "bool"), ({"v": 1}, "dict")])
def test_reject_scalar_channel_of_wrong_type(value, kind):
    e = rejected({"ts": T0, "co2_pct": value})
    assert e.reason == f"co2_pct: expected a number or null, got {kind}"


@pytest.mark.parametrize(("value", "kind"), [("12.5", "str"), (True, "bool"), ([1.0], "list"), ({}, "dict")])
def test_reject_channel_array_element_of_wrong_type(value, kind):
    e = rejected({"ts": [T0, T0 + 1], "temp_c": [50.0, value]})
    assert e.reason == f"temp_c[1]: expected a number or null, got {kind}"


@pytest.mark.parametrize("name", NAMES)
def test_every_channel_is_type_checked(name):
    assert rejected({"ts": T0, name: "1"}).reason.startswith(f"{name}: ")


@pytest.mark.parametrize("status", [5, True, {"f": "N"}])
def test_reject_status_not_a_string(status):
    e = rejected({"ts": T0, "status": status})
    assert e.reason.startswith("status[0]: expected an HJ 212 flag letter")
    e = rejected({"ts": [T0, T0 + 1], "status": ["N", status]})
    assert e.reason.startswith("status[1]: expected an HJ 212 flag letter")


@pytest.mark.parametrize("gw", [5, 1.5, True, ["a"], {"id": "a"}])
def test_reject_gw_not_a_string(gw):
    e = rejected({"ts": T0, "gw": gw})
    assert e.reason == "gw must be a string"
    assert e.gw is None


@pytest.mark.parametrize("seq", ["7", 7.0, 7.5, True, [7], {"n": 7}])
def test_reject_seq_not_an_integer(seq):
    e = rejected({"ts": T0, "gw": "edge-01", "seq": seq})
    assert e.reason == "seq must be an integer"
    assert e.gw == "edge-01"  # readable, so carried
    assert e.seq is None


def test_rejected_carries_seq_when_gw_is_unreadable():
    """The seq was readable (an integer), so the notice to the sender should carry it (brief, DESIGN §3)."""
    e = rejected({"ts": T0, "gw": 17, "seq": 42})
    assert e.reason == "gw must be a string"
    assert e.seq == 42


@pytest.mark.parametrize("obj", [
    {"gw": "edge-01", "seq": 42},  # no ts
    {"ts": [T0, T0 + 1], "co2_pct": [1], "gw": "edge-01", "seq": 42},
    {"ts": "2026-11-24T08:00:00", "gw": "edge-01", "seq": 42},
    {"ts": T0, "co2_pct": "x", "gw": "edge-01", "seq": 42},
    {"ts": [], "gw": "edge-01", "seq": 42},
    {"ts": T0, "status": 1, "gw": "edge-01", "seq": 42},
])
def test_rejected_carries_gw_and_seq(obj):
    e = rejected(obj)
    assert (e.gw, e.seq) == ("edge-01", 42)


def test_rejected_without_gw_and_seq_when_unreadable():
    e = rejected(b"not json")
    assert (e.gw, e.seq) is not None and e.gw is None and e.seq is None
    e = rejected({"ts": None})
    assert e.gw is None and e.seq is None


def _padded(size: int) -> bytes:
    body = enc({"ts": T0, "co2_pct": 12.5})
    return body[:-1] + b" " * (size - len(body)) + b"}"


def test_payload_of_exactly_256_kib_accepted():
    payload = _padded(MAX_PAYLOAD_BYTES)
    assert MAX_PAYLOAD_BYTES == 256 * 1024 and len(payload) == 262_144
    assert decode_payload(payload).values[0, INDEX["co2_pct"]] == 12.5


def test_reject_payload_larger_than_256_kib():
    e = rejected(_padded(MAX_PAYLOAD_BYTES + 1))
    assert e.reason == f"payload of {MAX_PAYLOAD_BYTES + 1} bytes exceeds {MAX_PAYLOAD_BYTES}"


def test_size_checked_before_parsing():
    e = rejected(b"\xff" * (MAX_PAYLOAD_BYTES + 10))
    assert e.reason.startswith("payload of ")


def test_large_batch_under_the_limit():
    n = 2000
    d = decode_payload(enc({"ts": [T0 + i for i in range(n)], "co2_pct": [12.0] * n, "status": "N"}))
    assert_shapes(d, n)
    assert (np.diff(d.ts_ms) == 1000).all()


# --- parse_topic --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("topic", "ids"), [
    ("cems/v1/wusha/u1/readings", ("wusha", "u1")),
    ("cems/v1/plant_2/stack-b/readings", ("plant_2", "stack-b")),
    ("cems/v1/0/9/readings", ("0", "9")),
    (f"cems/v1/{'a' * 64}/{'b' * 64}/readings", ("a" * 64, "b" * 64)),
])
def test_parse_topic_valid(topic, ids):
    assert parse_topic(topic) == ids


@pytest.mark.parametrize("topic", [
    "cems/v2/wusha/u1/readings", "CEMS/v1/wusha/u1/readings", "foo/v1/wusha/u1/readings",
    "/cems/v1/wusha/u1/readings",
])
def test_parse_topic_wrong_prefix(topic):
    with pytest.raises(Rejected, match="is not cems/v1/"):
        parse_topic(topic)


@pytest.mark.parametrize("topic", [
    "cems/v1/wusha/u1/live", "cems/v1/wusha/u1/rejected", "cems/v1/wusha/u1/Readings", "cems/v1/wusha/u1/",
])
def test_parse_topic_wrong_suffix(topic):
    with pytest.raises(Rejected, match="is not cems/v1/"):
        parse_topic(topic)


@pytest.mark.parametrize("topic", [
    "cems/v1/wusha/u1/x/readings", "cems/v1/wusha/readings", "cems/v1/wusha/u1/readings/", "cems/v1/readings",
    "cems/v1/wusha/u1/readings/extra",
])
def test_parse_topic_wrong_number_of_levels(topic):
    with pytest.raises(Rejected, match="is not cems/v1/"):
        parse_topic(topic)


@pytest.mark.parametrize(("topic", "what", "ident"), [
    ("cems/v1/Wusha/u1/readings", "plant", "Wusha"),
    ("cems/v1/wusha/U1/readings", "stack", "U1"),
    (f"cems/v1/{'a' * 65}/u1/readings", "plant", "a" * 65),
    (f"cems/v1/wusha/{'b' * 65}/readings", "stack", "b" * 65),
    ("cems/v1//u1/readings", "plant", ""),
    ("cems/v1/wusha/u 1/readings", "stack", "u 1"),
    ("cems/v1/+/u1/readings", "plant", "+"),
    ("cems/v1/wusha/#/readings", "stack", "#"),
    ("cems/v1/wu.sha/u1/readings", "plant", "wu.sha"),
])
def test_parse_topic_bad_ids(topic, what, ident):
    with pytest.raises(Rejected) as info:
        parse_topic(topic)
    assert info.value.reason == f"{what} id {ident!r} does not match [a-z0-9_-]{{1,64}}"


# --- check_times --------------------------------------------------------------------------------------


def _decoded(*ts: float, gw="edge-01", seq=9) -> Decoded:
    return decode_payload(enc({"ts": list(ts), "gw": gw, "seq": seq}))


NOW = T0 + 3600.0


def test_check_times_301_s_in_future_rejects():
    with pytest.raises(Rejected) as info:
        check_times(_decoded(NOW + 301), NOW, 300, None)
    assert "in the future" in info.value.reason
    assert "300 s" in info.value.reason
    assert (info.value.gw, info.value.seq) == ("edge-01", 9)


def test_check_times_299_s_in_future_accepted():
    assert check_times(_decoded(NOW + 299), NOW, 300, None) is None


def test_check_times_exactly_300_s_accepted():
    check_times(_decoded(NOW + 300), NOW, 300, None)


def test_check_times_only_the_newest_reading_matters_for_the_future():
    with pytest.raises(Rejected, match="in the future"):
        check_times(_decoded(NOW - 10, NOW, NOW + 400), NOW, 300, None)


def test_check_times_before_lock_rejects():
    locked_before = NOW - 86_400
    with pytest.raises(Rejected) as info:
        check_times(_decoded(locked_before - 1, NOW), NOW, 300, locked_before)
    assert info.value.reason.startswith("period locked")
    assert (info.value.gw, info.value.seq) == ("edge-01", 9)


def test_check_times_at_lock_boundary_accepted():
    locked_before = NOW - 86_400
    check_times(_decoded(locked_before, NOW), NOW, 300, locked_before)


def test_check_times_none_disables_the_lock():
    check_times(_decoded(TS_MIN_S, NOW), NOW, 300, None)


def test_check_times_future_checked_alongside_lock():
    with pytest.raises(Rejected):
        check_times(_decoded(NOW - 10 * 86_400, NOW + 3600), NOW, 300, NOW - 86_400)
