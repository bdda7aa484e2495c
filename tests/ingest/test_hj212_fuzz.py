"""Property tests of the HJ 212 frame reader and codec: whatever bytes arrive, in whatever chunks, the reader
never raises, never holds more than one frame's bytes, and never loses or alters a good frame (DESIGN §3a)."""

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cems.ingest.hj212_codec import (
    MAX_DATA_BYTES,
    MAX_FRAME_BYTES,
    CodecError,
    FrameReader,
    FramingError,
    Packet,
    RawFrame,
    build_frame,
    crc16,
    decrypt_data,
    frame,
    parse_cp,
    parse_data,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = "0123456789abcdeffedcba9876543210"


def feed_in_chunks(reader: FrameReader, stream: bytes, cuts: list[int]) -> list:
    out = []
    last = 0
    for cut in sorted({c % (len(stream) + 1) for c in cuts}) + [len(stream)]:
        out += reader.feed(stream[last:cut])
        assert reader.buffered < MAX_FRAME_BYTES
        last = cut
    return out


def check_items(items: list) -> None:
    for x in items:
        assert isinstance(x, RawFrame | FramingError)
        if isinstance(x, RawFrame):
            assert len(x.data) <= MAX_DATA_BYTES
            assert x.encrypted or crc16(x.data) == x.crc
        else:
            assert x.reason and isinstance(x.head, bytes)


hashy = st.binary(max_size=64).map(lambda b: b.replace(b"\x00", b"#"))  # more '#' than chance gives
noise = st.one_of(st.binary(max_size=3000), hashy,
                  st.lists(st.sampled_from([b"##", b"#", b"0", b"1024", b"\r\n", b"9999", b"ABCD", b"QN="]),
                           max_size=200).map(b"".join))
cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=40)


@FUZZ
@given(noise, cuts)
@example(b"##1024" + b"x" * 2000, [3, 1000])
@example(b"#" * 5000, [1, 2, 3])
@example(b"##0000FFFF\r\n", [])
def test_any_bytes_in_any_chunks(stream, chunk_cuts):
    r = FrameReader()
    check_items(feed_in_chunks(r, stream, chunk_cuts))
    assert r.buffered < MAX_FRAME_BYTES


field_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters=";=&,"),
                     min_size=1, max_size=20)
values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters=";=&,"), max_size=12)


@st.composite
def packets(draw):
    version = draw(st.sampled_from([0, 1, 2]))
    codes = draw(st.dictionaries(st.from_regex(r"[a-z][0-9]{5}", fullmatch=True),
                                 st.dictionaries(st.sampled_from(["Rtd", "Flag", "Avg", "Min", "Max", "Cou"]),
                                                 values, min_size=1, max_size=3), max_size=6))
    cp = ";".join(["DataTime=20250101080000"] + [",".join(f"{c}-{k}={v}" for k, v in items.items())
                                                   for c, items in codes.items()])
    split = draw(st.booleans())
    pnum = draw(st.integers(1, 20)) if split else None
    return Packet(cn=draw(st.sampled_from(["2011", "2051", "2061", "2031", "9015"])), mn=draw(field_text),
                  pw=draw(field_text), cp=cp, qn=draw(st.from_regex(r"[0-9]{17}", fullmatch=True)),
                  st="32", flag=(version << 2) | (2 if split else 0) | draw(st.sampled_from([0, 1])),
                  pnum=pnum, pno=draw(st.integers(1, pnum)) if split else None,
                  rf=version == 2 and draw(st.booleans()))


@FUZZ
@given(st.lists(packets(), min_size=1, max_size=5), st.booleans(), noise, cuts)
def test_valid_frames_round_trip_through_build_and_feed(ps, encrypted, junk, chunk_cuts):
    key = KEY if encrypted else ""
    sent = []
    for p in ps:
        try:
            sent.append((p, build_frame(p, key)))
        except CodecError:  # longer than 1024 bytes: not one frame
            continue
    stream = junk[:200] + b"".join(w for _, w in sent)
    got = [x for x in feed_in_chunks(FrameReader(), stream, chunk_cuts) if isinstance(x, RawFrame)]
    assert len(got) >= len(sent)  # the junk may hold frames of its own, never fewer
    for raw, (p, wire) in zip(got[len(got) - len(sent):], sent, strict=True):
        assert wire == b"##%04d" % len(raw.data) + raw.data + b"%04X\r\n" % raw.crc
        assert raw.encrypted or frame(raw.data) == wire
        back = parse_data(decrypt_data(raw.data, raw.crc, KEY) if raw.encrypted else raw.data)
        assert back == p
        assert parse_cp(back.cp).fields["DataTime"] == "20250101080000"


@FUZZ
@given(packets(), st.binary(max_size=600), cuts)
def test_a_good_frame_after_any_garbage_is_found(p, garbage, chunk_cuts):
    try:
        wire = build_frame(p)
    except CodecError:
        return
    got = feed_in_chunks(FrameReader(), garbage + wire + wire, chunk_cuts)
    datas = [x.data for x in got if isinstance(x, RawFrame)]
    assert datas[-2:] == [wire[6:-6], wire[6:-6]]
