"""HJ 212 framing and data segments (DESIGN §3a), against the published examples of the standards."""

from dataclasses import replace

import pytest

from cems.ingest.hj212_codec import (
    MAX_FRAME_BYTES,
    CodecError,
    FrameReader,
    FramingError,
    Packet,
    RawFrame,
    build_cp,
    build_data,
    build_frame,
    build_frames,
    crc16,
    decrypt_data,
    encrypt_cp,
    frame,
    parse_cp,
    parse_data,
    reply_9013,
    reply_9014,
)

# HJ 212-2017 App. A (as corrected in the widely used transcriptions): the example frame and its CRC.
APP_A_DATA = b"QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&"
APP_A_FRAME = b"##0101" + APP_A_DATA + b"1C80\r\n"
# A second published 2017 frame (CN 2011, water), CRC 6E80, as checked by the HJ 212 tools in the field.
WATER_DATA = (b"QN=20210320163101890;ST=32;CN=2011;PW=123456;MN=81733553213013;Flag=4;CP=&&DataTime=20210320013400;"
              b"w00000-Rtd=181.682,w00000-Flag=N;w21001-SampleTime=20210320005400,w21001-Rtd=45.160,w21001-Flag=N;"
              b"w21011-SampleTime=20210320013400,w21011-Rtd=1.970,w21011-Flag=N;w21003-SampleTime=20210320013400,"
              b"w21003-Rtd=53.131,w21003-Flag=N;w01018-SampleTime=20210320013400,w01018-Rtd=194.200,w01018-Flag=N;"
              b"w01001-SampleTime=20210320013406,w01001-Rtd=7.496,w01001-Flag=N&&")
# HJ 212-2025 App. A.1: the CRC example of the new edition.
APP_A_2025_DATA = b"QN=20240601085857223;ST=32;CN=1011;PW=123456;MN=010000A8900016F000169DC0;Flag=9;CP=&&&&"
APP_A_2025_FRAME = b"##0087" + APP_A_2025_DATA + b"2200\r\n"
# HJ 212-2025 App. A.2: the published test key, "16 x 0x30".
APP_A2_KEY = "30" * 16
# GB/T 32907-2016 (SM4) App. A example 1: key = plaintext, one block.
SM4_KEY = "0123456789abcdeffedcba9876543210"
SM4_CIPHER_OF_KEY = "681edf34d206965e86b3e94f536e4246"


def frames(items):
    return [x for x in items if isinstance(x, RawFrame)]


def errors(items):
    return [x for x in items if isinstance(x, FramingError)]


def test_crc_of_the_standards_examples():
    assert len(APP_A_DATA) == 101
    assert crc16(APP_A_DATA) == 0x1C80
    assert len(WATER_DATA) == 457
    assert crc16(WATER_DATA) == 0x6E80
    assert frame(APP_A_DATA) == APP_A_FRAME
    assert len(APP_A_2025_DATA) == 87 and crc16(APP_A_2025_DATA) == 0x2200
    assert frame(APP_A_2025_DATA) == APP_A_2025_FRAME
    [raw] = FrameReader().feed(APP_A_2025_FRAME)
    assert parse_data(raw.data).edition == "HJ 212-2025"


def test_crc_follows_app_a_bit_by_bit():
    """The table-driven CRC equals App. A's loop written out, also for bytes above 0x7F."""
    def app_a(data: bytes) -> int:
        reg = 0xFFFF
        for b in data:
            reg = (reg >> 8) ^ b
            for _ in range(8):
                reg = (reg >> 1) ^ 0xA001 if reg & 1 else reg >> 1
        return reg

    for data in (b"", b"\x00", bytes(range(256)), APP_A_DATA, "数采仪".encode()):
        assert crc16(data) == app_a(data)


def test_the_example_frame_parses():
    [raw] = FrameReader().feed(APP_A_FRAME)
    assert raw == RawFrame(APP_A_DATA, 0x1C80, False)
    p = parse_data(raw.data)
    assert (p.qn, p.st, p.cn, p.pw, p.mn, p.flag) == ("20160801085857223", "32", "1062", "100000",
                                                      "010000A8900016F000169DC0", 5)
    assert p.cp == "RtdInterval=30"
    assert p.version == 1 and p.edition == "HJ 212-2017" and p.reply_wanted and not p.split


def test_crc_is_checked_case_insensitively():
    lower = APP_A_FRAME.replace(b"1C80", b"1c80")
    assert frames(FrameReader().feed(lower)) == [RawFrame(APP_A_DATA, 0x1C80)]


def test_frames_split_across_segments_and_coalesced():
    stream = APP_A_FRAME + frame(WATER_DATA) + APP_A_FRAME
    for cut in range(1, len(stream)):
        r = FrameReader()
        got = r.feed(stream[:cut]) + r.feed(stream[cut:])
        assert [f.data for f in got] == [APP_A_DATA, WATER_DATA, APP_A_DATA], cut
        assert r.buffered == 0
    r = FrameReader()
    got = [x for b in stream for x in r.feed(bytes([b]))]  # one byte at a time
    assert [f.data for f in got] == [APP_A_DATA, WATER_DATA, APP_A_DATA]


def test_garbage_between_frames_is_skipped():
    r = FrameReader()
    got = r.feed(b"hello\r\n" + APP_A_FRAME + b"#x#" + APP_A_FRAME + b"\r\n")
    assert [type(x) for x in got] == [RawFrame, RawFrame]
    assert r.skipped_bytes == 7 + 3 + 2


@pytest.mark.parametrize("bad", [
    b"##01x1" + APP_A_DATA + b"1C80\r\n",  # length not digits
    b"##9999" + APP_A_DATA,  # length above 1024
    b"##0500" + APP_A_DATA + b"1C80\r\n",  # length too long: swallows the next frame, no CR LF where due
    b"##0050" + APP_A_DATA + b"1C80\r\n",  # length too short
    b"##0101" + APP_A_DATA + b"1C81\r\n",  # CRC mismatch
    b"##0101" + APP_A_DATA + b"1CX0\r\n",  # CRC not hex
    b"##0101" + APP_A_DATA + b"1C80\n\n",  # no CR LF
    b"##01",  # a header cut off, then a real frame
    b"#",  # a stray '#' right before the real frame's "##"
])
def test_resync_after_a_bad_frame_never_loses_the_next(bad):
    for chunked in (False, True):
        r = FrameReader()
        stream = bad + APP_A_FRAME + APP_A_FRAME
        got = [x for b in stream for x in r.feed(bytes([b]))] if chunked else r.feed(stream)
        assert [f.data for f in frames(got)] == [APP_A_DATA, APP_A_DATA], (bad, chunked)
        assert len(errors(got)) <= 2


def test_oversized_length_is_a_framing_error_at_once():
    r = FrameReader()
    [err] = r.feed(b"##1025")
    assert err.reason == "length 1025 exceeds 1024"
    assert r.feed(b"##1024") == [] and r.buffered == 6  # 1024 is allowed: wait for the rest


def test_bad_crc_is_reported_with_both_values():
    [err] = errors(FrameReader().feed(APP_A_FRAME.replace(b"1C80", b"1C81")))
    assert err.reason == "CRC mismatch: sent 1C81, computed 1C80"
    assert err.head.startswith(b"##0101QN=")


def test_buffer_is_bounded_by_one_frame():
    r = FrameReader()
    r.feed(b"##1024" + b"x" * 1000)
    assert r.buffered == 1006
    r.feed(b"y" * 5000)  # no CR LF where due: rejected, the rest is garbage
    assert r.buffered <= 1
    r.feed(b"#" * 10_000)
    assert r.buffered <= MAX_FRAME_BYTES


# --- editions ------------------------------------------------------------------------------------------

def test_2005_frame_without_qn_and_flag():
    data = (b"ST=32;CN=2011;PW=123456;MN=88888880000001;"
            b"CP=&&DataTime=20040516020111;a01012-Rtd=50.1,a01012-Flag=N&&")
    [raw] = FrameReader().feed(frame(data))
    p = parse_data(raw.data)
    assert p.qn is None and p.flag is None
    assert p.version == 0 and p.edition == "HJ/T 212-2005" and not p.reply_wanted
    assert reply_9014(p) == frame(b"ST=91;CN=9014;PW=123456;MN=88888880000001;Flag=0;CP=&&&&")


def test_2017_and_2025_flags():
    base = "QN=20250101080000000;ST=32;CN=2011;PW=1;MN=m;Flag={};CP=&&DataTime=20250101080000&&"
    for flag, version, reply_wanted in ((4, 1, False), (5, 1, True), (8, 2, False), (9, 2, True)):
        p = parse_data(base.format(flag).encode())
        assert (p.version, p.reply_wanted) == (version, reply_wanted)
    assert parse_data(base.format(9).encode()).edition == "HJ 212-2025"
    with pytest.raises(CodecError, match="edition 3"):
        parse_data(base.format(13).encode())


def test_2017_needs_qn():
    with pytest.raises(CodecError, match="no QN"):
        parse_data(b"ST=32;CN=2011;PW=1;MN=m;Flag=5;CP=&&&&")


def test_rf_header_of_2025():
    p = parse_data(b"QN=20250101080000000;ST=32;CN=2011;PW=1;MN=m;Flag=9;RF=1;CP=&&DataTime=20250101080000&&")
    assert p.rf is True and p.cn == "2011"
    assert build_data(p) == b"QN=20250101080000000;ST=32;CN=2011;PW=1;MN=m;Flag=9;RF=1;CP=&&DataTime=20250101080000&&"
    assert parse_data(b"QN=1;CN=2011;PW=1;MN=m;Flag=9;RF=0;CP=&&&&").rf is False


def test_split_packet_fields():
    p = parse_data(b"QN=1;ST=32;CN=2011;PW=1;MN=m;Flag=7;PNUM=3;PNO=2;CP=&&a01012-Rtd=1&&")
    assert p.split and (p.pnum, p.pno) == (3, 2)
    with pytest.raises(CodecError, match="PNO"):
        parse_data(b"QN=1;ST=32;CN=2011;PW=1;MN=m;Flag=7;PNUM=2;PNO=3;CP=&&&&")
    with pytest.raises(CodecError, match="PNO"):
        parse_data(b"QN=1;ST=32;CN=2011;PW=1;MN=m;Flag=7;CP=&&&&")


@pytest.mark.parametrize("data, match", [
    (b"QN=1;CN=2011;PW=1;MN=m;Flag=5", "no CP"),
    (b"QN=1;CN=2011;PW=1;MN=m;Flag=5;CP=abc", "wrapped"),
    (b"QN=1;PW=1;MN=m;Flag=5;CP=&&&&", "no CN"),
    (b"QN=1;CN=2011;PW=1;Flag=5;CP=&&&&", "no MN"),
    (b"QN=1;CN=2011;PW=1;MN=m;Flag=x;CP=&&&&", "Flag"),
    (b"QN=1;CN=2011;PW=1;MN=m;Flag=5;junk;CP=&&&&", "no '='"),
    ("QN=1;CN=2011;PW=1;MN=设备;Flag=5;CP=&&&&".encode(), "ASCII"),
])
def test_bad_data_segments(data, match):
    with pytest.raises(CodecError, match=match):
        parse_data(data)


# --- CP ------------------------------------------------------------------------------------------------

def test_cp_fields_and_codes():
    cp = parse_cp("DataTime=20250101080000;a01012-Rtd=50.1,a01012-Flag=N;a00000-Rtd=361.1,a00000-Flag=D,junk;;")
    assert cp.fields == {"DataTime": "20250101080000"}
    assert cp.codes == {"a01012": {"Rtd": "50.1", "Flag": "N"}, "a00000": {"Rtd": "361.1", "Flag": "D"}}
    assert cp.malformed == ("junk",)
    text = build_cp(cp.fields, cp.codes)
    assert text == "DataTime=20250101080000;a01012-Rtd=50.1,a01012-Flag=N;a00000-Rtd=361.1,a00000-Flag=D"
    assert parse_cp(text).codes == cp.codes


# --- SM4 (2025) ----------------------------------------------------------------------------------------

def test_sm4_is_the_standard_cipher():
    """GB/T 32907-2016 example 1 through the codec's cipher: E_K(K), one block, ECB."""
    from cems.ingest.hj212_codec import _sm4

    enc = _sm4(SM4_KEY).encryptor()
    assert (enc.update(bytes.fromhex(SM4_KEY)) + enc.finalize()).hex() == SM4_CIPHER_OF_KEY
    # one whole block, no padding, written byte by byte: {0xNN,...,0xNN}
    enc = _sm4(SM4_KEY).encryptor()
    block = enc.update(b"A" * 16) + enc.finalize()
    assert encrypt_cp("A" * 16, SM4_KEY) == "{" + ",".join(f"0x{b:02X}" for b in block) + "}"
    with pytest.raises(CodecError, match="32 hex"):
        _sm4("00" * 8)


def test_sm4_round_trip_in_the_form_of_app_a2():
    """Whole blocks as {0xNN,...}, no padding, the short tail in plaintext, CRC of the plaintext segment."""
    cp = "DataTime=20250101080000;a05001-Rtd=12.5,a05001-Flag=N;a01012-Rtd=50.1,a01012-Flag=N"
    assert len(cp) % 16 != 0
    p = Packet(cn="2011", mn="88888880000001", pw="123456", qn="20250101080000123", st="31", flag=9, cp=cp)
    wire = build_frame(p, APP_A2_KEY)
    token = encrypt_cp(cp, APP_A2_KEY)
    whole = len(cp) // 16 * 16
    assert token.startswith("{0x") and token.endswith("}" + cp[whole:])
    assert token.count("0x") == whole and b"a05001" not in wire
    assert wire == frame(build_data(p).replace(cp.encode(), token.encode()))[:-6] + b"%04X\r\n" % crc16(build_data(p))
    [raw] = FrameReader().feed(wire)
    assert raw.encrypted and raw.crc == crc16(build_data(p))
    sent = parse_data(raw.data)
    assert sent.encrypted and sent.mn == p.mn and sent.pw == p.pw
    plain = decrypt_data(raw.data, raw.crc, APP_A2_KEY)
    assert plain == build_data(p)
    assert parse_data(plain) == p
    with pytest.raises(CodecError, match="CRC of the decrypted"):
        decrypt_data(raw.data, raw.crc, SM4_KEY)
    with pytest.raises(CodecError, match="CRC of the decrypted"):
        decrypt_data(raw.data, raw.crc ^ 1, APP_A2_KEY)


def test_a_cp_shorter_than_a_block_stays_plain():
    assert encrypt_cp("DataTime=1", APP_A2_KEY) == "DataTime=1"
    p = Packet(cn="2011", mn="m", pw="1", qn="1", flag=9, cp="DataTime=1")
    assert build_frame(p, APP_A2_KEY) == build_frame(p)


def test_sm4_padded_hex_forms_are_accepted():
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    cp = b"DataTime=20250101080000;a01012-Rtd=50.1,a01012-Flag=N"
    head = b"QN=20250101080000123;ST=32;CN=2011;PW=1;MN=m;Flag=9;"
    plain = head + b"CP=&&" + cp + b"&&"
    for padded in (cp + b"\0" * (-len(cp) % 16), cp + bytes([16 - len(cp) % 16]) * (16 - len(cp) % 16)):
        enc = Cipher(algorithms.SM4(bytes.fromhex(SM4_KEY)), modes.ECB()).encryptor()
        cipher = enc.update(padded) + enc.finalize()
        for token in (b"{0x" + cipher.hex().encode() + b"}", b"{" + b",".join(b"0x%02x" % b for b in cipher) + b"}"):
            for data in (head + b"CP=&&" + token + b"&&", head + b"CP=" + token):
                assert decrypt_data(data, crc16(plain), SM4_KEY) == plain


@pytest.mark.parametrize("token", [b"{0xZZ}", b"{0x0102}", b"{0x}", b"{0x01,0x02}", b"{01,02}", b"{0x" + b"00" * 16])
def test_bad_sm4_tokens(token):
    with pytest.raises(CodecError):
        decrypt_data(b"QN=1;CN=2011;PW=1;MN=m;Flag=9;CP=&&" + token + b"&&", 0, SM4_KEY)


def test_large_uploads_are_split_into_packets():
    cp = "DataTime=20250101080000;" + ";".join(f"a0{i:04d}-Rtd=123.456,a0{i:04d}-Flag=N" for i in range(40))
    p = Packet(cn="2011", mn="m", pw="1", qn="20250101080000123", st="31", flag=9, cp=cp)
    assert build_frames(replace(p, cp="DataTime=1")) == [build_frame(replace(p, cp="DataTime=1"))]
    for key in ("", APP_A2_KEY):
        frames = build_frames(p, key)
        assert len(frames) >= (2 if not key else 5) and all(len(f) <= MAX_FRAME_BYTES for f in frames)
        packets = []
        for raw in FrameReader().feed(b"".join(frames)):
            packets.append(parse_data(decrypt_data(raw.data, raw.crc, key) if raw.encrypted else raw.data))
        assert [(q.pnum, q.pno, q.qn, q.flag, q.split) for q in packets] == [
            (len(frames), i, p.qn, 11, True) for i in range(1, len(frames) + 1)]
        assert all(q.cp.startswith("DataTime=20250101080000;") for q in packets)
        codes = {}
        for q in packets:
            codes |= parse_cp(q.cp).codes
        assert codes == parse_cp(cp).codes
    with pytest.raises(CodecError, match="does not fit"):
        build_frames(replace(p, cp="DataTime=1;a00000-Rtd=" + "9" * 1100))


# --- answers -------------------------------------------------------------------------------------------

def test_9014_as_in_app_c():
    p = parse_data(APP_A_DATA)
    assert reply_9014(p) == frame(b"QN=20160801085857223;ST=91;CN=9014;PW=100000;MN=010000A8900016F000169DC0;"
                                  b"Flag=4;CP=&&&&")
    p25 = parse_data(b"QN=20250101080000123;ST=32;CN=2011;PW=9;MN=m;Flag=9;CP=&&&&")
    assert reply_9014(p25) == frame(b"QN=20250101080000123;ST=91;CN=9014;PW=9;MN=m;Flag=8;CP=&&&&")
    [raw] = FrameReader().feed(reply_9014(p25))
    assert parse_data(raw.data).reply_wanted is False


def test_9013_answers_a_2025_heartbeat():
    beat = parse_data(b"QN=20250101080000123;ST=32;CN=9015;PW=9;MN=m;Flag=9;CP=&&&&")
    assert reply_9013(beat) == frame(b"QN=20250101080000123;ST=91;CN=9013;PW=9;MN=m;Flag=8;CP=&&&&")
