"""Property tests of the payload decoder: whatever arrives, it returns a consistent `Decoded` or raises
`Rejected`, never anything else (DESIGN §3)."""

import datetime as dt
import json
import math

import numpy as np
import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cems.compute.channels import FLAG_CODE, FLAG_UNKNOWN, INDEX, N_CHANNELS, NAMES
from cems.ingest.decode import KNOWN_KEYS, MAX_PAYLOAD_BYTES, TS_MAX_S, TS_MIN_S, Decoded, Rejected, decode_payload

FUZZ = settings(max_examples=500, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
REAL_KEYS = sorted(KNOWN_KEYS)


def check(payload: bytes) -> Decoded | None:
    """Decode; a `Decoded` must be internally consistent, and only `Rejected` may escape."""
    try:
        d = decode_payload(payload)
    except Rejected as e:
        assert isinstance(e.reason, str) and e.reason
        assert e.gw is None or isinstance(e.gw, str)
        assert e.seq is None or type(e.seq) is int
        return None
    assert isinstance(d, Decoded)
    n = len(d)
    assert n >= 1
    assert isinstance(d.ts_ms, np.ndarray) and d.ts_ms.dtype == np.int64 and d.ts_ms.shape == (n,)
    assert isinstance(d.values, np.ndarray) and d.values.dtype == np.float64 and d.values.shape == (n, N_CHANNELS)
    assert isinstance(d.flags, np.ndarray) and d.flags.dtype == np.int8 and d.flags.shape == (n,)
    assert isinstance(d.status, list) and len(d.status) == n
    assert all(isinstance(s, str) for s in d.status)
    assert d.flags.tolist() == [FLAG_CODE.get(s, FLAG_UNKNOWN) for s in d.status]
    assert ((d.ts_ms >= TS_MIN_S * 1000) & (d.ts_ms <= TS_MAX_S * 1000)).all()
    assert not np.isinf(d.values).any()  # JSON has no infinities; orjson refuses overflowing numbers
    assert d.gw is None or isinstance(d.gw, str)
    assert d.seq is None or type(d.seq) is int
    assert isinstance(d.ignored_keys, tuple)
    assert list(d.ignored_keys) == sorted(d.ignored_keys)
    assert not set(d.ignored_keys) & KNOWN_KEYS
    return d


def dumps(obj) -> bytes:
    """Stdlib JSON: unlike orjson it writes ints of any size (and NaN/Infinity, which must be refused)."""
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


# --- strategies ---------------------------------------------------------------------------------------

huge_ints = st.one_of(st.integers(), st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
                      st.integers(min_value=-(2**64), max_value=-(2**63) + 2), st.just(10**30))
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
numbers = st.one_of(huge_ints, finite_floats, st.sampled_from([0, -0.0, 1e-320, 5e-324, 1e308, -1e308]))
# stdlib json writes NaN/Infinity (not JSON); 10**400 overflows a double (orjson refuses it)
odd_numbers = st.sampled_from([float("nan"), float("inf"), float("-inf"), 10**400, -(10**400)])
epoch_s = st.one_of(st.integers(min_value=TS_MIN_S, max_value=TS_MAX_S - 1),
                    st.integers(min_value=TS_MIN_S - 10, max_value=TS_MAX_S + 10),
                    st.floats(min_value=TS_MIN_S - 10, max_value=TS_MAX_S + 10))
zones = st.one_of(st.none(), st.just(dt.UTC),
                  st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
                      lambda m: dt.timezone(dt.timedelta(minutes=m))))
iso_times = st.builds(lambda d, tz, sep, spec: d.replace(tzinfo=tz).isoformat(sep=sep, timespec=spec),
                      st.datetimes(), zones, st.sampled_from(["T", " "]),
                      st.sampled_from(["auto", "seconds", "milliseconds", "microseconds", "minutes"]))
iso_z = st.datetimes().map(lambda d: d.isoformat() + "Z")
chars = st.characters(blacklist_categories=("Cs",))  # lone surrogates: see test_arbitrary_bytes
text = st.one_of(st.text(chars, max_size=30), st.text(max_size=4), iso_times, iso_z, st.sampled_from(list("NFMSDCTBX")))
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
rare = st.one_of(odd_numbers, st.text(max_size=4))
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=6),
                               st.dictionaries(st.one_of(st.sampled_from(REAL_KEYS), st.text(max_size=8)),
                                               children, max_size=6)),
    max_leaves=30,
)
ts_values = st.one_of(epoch_s, iso_times, iso_z, scalars, st.lists(st.one_of(epoch_s, iso_times, scalars), max_size=5))
channel_values = st.one_of(scalars, st.lists(st.one_of(st.none(), numbers, scalars), max_size=5))
status_values = st.one_of(scalars, st.lists(st.one_of(st.none(), st.sampled_from(list("NFMSDCTBX")), scalars),
                                            max_size=5))
field_values = {"ts": ts_values, "status": status_values, "gw": st.one_of(st.text(max_size=10), scalars),
                "seq": st.one_of(huge_ints, scalars), **{name: channel_values for name in NAMES}}


@st.composite
def payload_objects(draw):
    """Objects whose keys are mostly the real ones, with plausible and implausible values."""
    keys = draw(st.lists(st.sampled_from(REAL_KEYS), unique=True, max_size=len(REAL_KEYS)))
    if draw(st.integers(0, 9)) > 0 and "ts" not in keys:
        keys.append("ts")
    obj = {}
    for k in keys:
        which = draw(st.integers(0, 19))
        obj[k] = draw(json_values if which == 0 else rare if which == 1 else field_values[k])
    obj.update(draw(st.dictionaries(st.text(chars, max_size=8), json_values, max_size=2)))
    return obj


@st.composite
def valid_batches(draw):
    """Well-formed messages (one reading or a columnar batch) and what each reading must decode to."""
    n = draw(st.integers(min_value=1, max_value=20))
    batch = n > 1 or draw(st.booleans())
    ts = draw(st.lists(st.integers(min_value=TS_MIN_S, max_value=TS_MAX_S - 1), min_size=n, max_size=n))
    obj: dict = {"ts": ts if batch else ts[0]}
    expect = np.full((n, N_CHANNELS), np.nan)
    finite = st.one_of(st.none(), st.integers(min_value=-(2**53), max_value=2**53),
                       st.floats(allow_nan=False, allow_infinity=False))
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True)):
        if batch and draw(st.booleans()):
            col = draw(st.lists(finite, min_size=n, max_size=n))
            obj[name] = col
            expect[:, INDEX[name]] = [np.nan if x is None else float(x) for x in col]
        else:
            x = draw(finite)
            obj[name] = x
            expect[:, INDEX[name]] = np.nan if x is None else float(x)
    status = ["N"] * n
    if draw(st.booleans()):
        letters = st.one_of(st.none(), st.sampled_from(list("NFMSDCTB")), st.text(max_size=3))
        if batch and draw(st.booleans()):
            sent = draw(st.lists(letters, min_size=n, max_size=n))
            status = ["N" if x is None else x for x in sent]
        else:
            sent = draw(letters)
            status = ["N" if sent is None else sent] * n
        obj["status"] = sent
    if draw(st.booleans()):
        obj["gw"] = draw(st.text(max_size=16))
    if draw(st.booleans()):
        obj["seq"] = draw(st.integers(min_value=-(2**63), max_value=2**63 - 1))
    return obj, np.array(ts, dtype=np.int64) * 1000, expect, status


# --- properties ---------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=4096))
@example(b"")
@example(b"\x00")
@example(b"\xef\xbb\xbf{}")
@example(b'{"ts": 1e999}')
@example(b'{"ts": -1e999, "co2_pct": 1e999}')
@example(b'{"ts": 1795478400, "seq": 1' + b"0" * 400 + b"}")
@example(b"[" * 2000 + b"]" * 2000)
@example(b'{"ts":' * 1000)
def test_arbitrary_bytes(payload):
    check(payload)


@FUZZ
@given(json_values)
def test_arbitrary_json_values(obj):
    check(dumps(obj))


@FUZZ
@given(payload_objects())
@example({"ts": 10**400})
@example({"ts": [1795478400, 10**400]})
@example({"ts": 1795478400, "co2_pct": 10**400})
@example({"ts": [1795478400, 1795478401], "co2_pct": [1.0, -(10**400)]})
@example({"ts": 1795478400, "seq": 2**64})
@example({"ts": 1795478400, "seq": 10**400, "gw": "g"})
@example({"ts": float("nan")})
@example({"ts": 1795478400, "co2_pct": float("inf")})
@example({"ts": "0001-01-01T00:00:00+23:59"})
@example({"ts": "9999-12-31T23:59:59.999999-23:59"})
@example({"ts": [None]})
@example({"ts": 1795478400, "status": [[]]})
def test_objects_with_the_real_keys(obj):
    check(dumps(obj))


@FUZZ
@given(valid_batches())
def test_well_formed_messages_decode_exactly(case):
    obj, ts_ms, expect, status = case
    d = check(orjson.dumps(obj))
    assert d is not None
    assert d.ts_ms.tolist() == ts_ms.tolist()
    np.testing.assert_array_equal(d.values, expect)
    assert d.status == status
    assert d.gw == obj.get("gw") and d.seq == obj.get("seq")
    assert d.ignored_keys == ()


@FUZZ
@given(valid_batches(), st.data())
def test_corrupted_well_formed_messages(case, data):
    payload = bytearray(orjson.dumps(case[0]))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(min_value=0, max_value=max(len(payload) - 1, 0)))
        if op == "flip" and payload:
            payload[i] = data.draw(st.integers(min_value=0, max_value=255))
        elif op == "cut":
            del payload[i:]
        else:
            payload[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    check(bytes(payload))


@FUZZ
@given(st.integers(min_value=MAX_PAYLOAD_BYTES - 64, max_value=MAX_PAYLOAD_BYTES + 64),
       st.sampled_from([b" ", b"\n", b"\t", b"\r"]))
def test_payload_size_bound(size, pad):
    body = b'{"ts": 1795478400, "co2_pct": 12.5}'
    payload = body[:-1] + pad * (size - len(body)) + b"}"
    assert len(payload) == size
    try:
        d = decode_payload(payload)
    except Rejected as e:
        assert size > MAX_PAYLOAD_BYTES
        assert e.reason == f"payload of {size} bytes exceeds {MAX_PAYLOAD_BYTES}"
    else:
        assert size <= MAX_PAYLOAD_BYTES
        assert d.values[0, INDEX["co2_pct"]] == 12.5


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=4096), st.binary(min_size=1, max_size=64))
def test_oversized_payload_refused_whatever_it_holds(extra, chunk):
    payload = (chunk * (MAX_PAYLOAD_BYTES // len(chunk) + 1))[:MAX_PAYLOAD_BYTES] + chunk[:1] * extra
    assert len(payload) > MAX_PAYLOAD_BYTES
    try:
        decode_payload(payload)
    except Rejected as e:
        assert e.reason.startswith(f"payload of {len(payload)} bytes exceeds")
    else:
        raise AssertionError("an oversized payload was accepted")


def test_nan_never_appears_from_numbers():
    """Sanity check of the helper: NaN in the output only comes from null or absent channels."""
    d = check(orjson.dumps({"ts": [1795478400, 1795478401], "co2_pct": [0.0, None]}))
    assert d is not None
    assert d.values[0, INDEX["co2_pct"]] == 0.0 and math.isnan(d.values[1, INDEX["co2_pct"]])


@FUZZ
@given(ts=st.one_of(numbers, st.sampled_from([1.79e9, 1790000040.123, 1790000040.0005, 1790000040.9999, 1790000040.0015,
                                                        "2026-11-26T06:00:00+08:00", None])),
       vals=st.lists(st.one_of(st.none(), numbers, st.booleans(), st.text(max_size=3)), min_size=N_CHANNELS,
                     max_size=N_CHANNELS),
       present=st.lists(st.booleans(), min_size=N_CHANNELS, max_size=N_CHANNELS),
       status=st.one_of(st.sampled_from(["N", "C", "D", "F", "T", "Q", "", None]), st.integers()),
       extra=st.booleans())
def test_a_single_reading_decodes_as_the_same_reading_in_a_batch_of_one(ts, vals, present, status, extra):
    """Single readings take a shorter path (`_decode_one`); it must give what the general path gives for the
    same reading sent as a batch of one, and refuse what that refuses."""
    one = {"ts": ts, "gw": "g", "seq": 3} | {n: v for n, v, p in zip(NAMES, vals, present, strict=True) if p}
    if status != "":
        one["status"] = status
    if extra:
        one["note"] = 1
    batch = {k: [v] if k in KNOWN_KEYS - {"gw", "seq"} else v for k, v in one.items()}
    a, b = check(dumps(one)), check(dumps(batch))
    assert (a is None) == (b is None)
    if a is not None:
        assert a.ts_ms.tolist() == b.ts_ms.tolist() and a.status == b.status and a.flags.tolist() == b.flags.tolist()
        np.testing.assert_array_equal(a.values, b.values)
        assert (a.gw, a.seq, a.ignored_keys) == (b.gw, b.seq, b.ignored_keys)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(TS_MIN_S - 5, TS_MAX_S + 5), st.integers(-2**70, 2**70)), min_size=1,
                max_size=8))
def test_whole_second_times_decode_as_the_same_seconds_sent_as_floats(ts):
    """A batch of integer times takes a path of its own: the same times, or the same rejection, as floats."""
    def decoded(times):
        try:
            return decode_payload(json.dumps({"ts": times, "co2_pct": [1.0] * len(times)}).encode()).ts_ms.tolist()
        except Rejected as e:
            return "rejected: " + e.reason
    got = decoded(ts)
    if all(abs(x) < 2**53 for x in ts):
        want = decoded([float(x) for x in ts])
        assert got == want or got.startswith("rejected") and want.startswith("rejected"), (got, want)
    if isinstance(got, list):
        assert got == [x * 1000 for x in ts]
