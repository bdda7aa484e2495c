"""HJ 212 frames and data segments (HJ/T 212-2005, HJ 212-2017, HJ 212-2025; DESIGN §3a). Pure: no I/O.

A frame is ``##`` + the data segment's length in bytes as 4 decimal digits (0..1024) + the data segment +
its CRC (HJ 212-2017 App. A, 4 hex digits) + CR LF. The data segment is ``key=value`` header fields
separated by ``;`` (QN, ST, CN, PW, MN, Flag, PNUM, PNO and, from 2025, RF) and then ``CP=&&...&&``, whose
content is ``;``-separated groups of ``,``-separated items, e.g.
``DataTime=20250101080000;a01012-Rtd=50.1,a01012-Flag=N``.

Flag (HJ 212-2017 §6.3.3): bits 7..2 are the edition (0 = HJ/T 212-2005, where QN and Flag may be
absent; 1 = 2017; 2 = 2025), bit 1 (D) marks one packet of a split upload (PNUM/PNO present), bit 0 (A)
asks for an answer. A CP whose content starts with ``{0x`` is SM4-ECB encrypted (2025): the CRC is then
that of the data segment with the plaintext CP (DESIGN §3a), so it is checked after decryption.
"""

import re
from dataclasses import dataclass, field, replace

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MAX_DATA_BYTES = 1024  # HJ 212-2017 §6.3.1: a data segment holds at most 1024 bytes
HEADER_BYTES = 6  # "##" + 4 digits
TRAILER_BYTES = 6  # 4 hex digits of CRC + CR LF
MAX_FRAME_BYTES = HEADER_BYTES + MAX_DATA_BYTES + TRAILER_BYTES
EDITIONS = {0: "HJ/T 212-2005", 1: "HJ 212-2017", 2: "HJ 212-2025"}  # Flag >> 2
FLAG_REPLY = 0x01  # "A": the sender wants an answer
FLAG_SPLIT = 0x02  # "D": one packet of a split upload
ENCRYPTED_PREFIX = "{0x"
_HEX4 = re.compile(rb"[0-9A-Fa-f]{4}")
_CP_START = re.compile(rb"(?:^|;)CP=")


class CodecError(ValueError):
    """A data segment (or its encrypted CP) cannot be used; the message says why."""


def _crc_table() -> tuple[int, ...]:
    table = []
    for v in range(256):
        crc = v
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC of HJ 212-2017 App. A over `data` (the data segment).

    Register 0xFFFF; per byte ``crc = (crc >> 8) ^ byte``, then 8 times ``crc = (crc >> 1) ^ 0xA001`` if
    the low bit is set, else ``crc >>= 1``. The value after the XOR fits one byte, so the 8 shifts are
    looked up in a 256-entry table. Bytes are unsigned (App. A declares ``unsigned char *``).
    App. A's example: ``QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;
    CP=&&RtdInterval=30&&`` -> 0x1C80.
    """
    crc = 0xFFFF
    for b in data:
        crc = _CRC_TABLE[(crc >> 8) ^ b]
    return crc


def frame(data: bytes) -> bytes:
    """Wrap a data segment: ``##`` + length + data + CRC (upper-case hex) + CR LF."""
    if len(data) > MAX_DATA_BYTES:
        raise CodecError(f"data segment of {len(data)} bytes exceeds {MAX_DATA_BYTES}")
    return b"##%04d" % len(data) + data + b"%04X" % crc16(data) + b"\r\n"


@dataclass(frozen=True)
class RawFrame:
    """A frame cut from the byte stream. Its CRC is verified unless `encrypted` (checked after decryption)."""

    data: bytes
    crc: int
    encrypted: bool = False


@dataclass(frozen=True)
class FramingError:
    """Bytes that looked like a frame start but were not a good frame; `head` is its first bytes, for logs."""

    reason: str
    head: bytes


def _cp_span(data: bytes) -> tuple[int, int]:
    """(start of ``CP=``, start of its value); CodecError without one."""
    m = _CP_START.search(data)
    if m is None:
        raise CodecError("no CP field")
    return m.start() + (1 if data[m.start():m.start() + 1] == b";" else 0), m.end()


def _is_encrypted(data: bytes) -> bool:
    m = _CP_START.search(data)
    return m is not None and data.startswith((b"&&{0x", b"{0x"), m.end())


class FrameReader:
    """Cuts frames out of a TCP byte stream, incrementally (DESIGN §3a).

    `feed` takes any chunk and returns the good frames and the framing errors it completes, in stream
    order. A frame may span many chunks and a chunk may hold many frames. After a bad header, length,
    trailer or CRC the search for ``##`` resumes at the second ``#`` of the rejected header, so a good
    frame that follows, even one overlapping the bad header (``###0101...``), is never lost. A length
    is rejected as soon as a CR LF shows up inside the span it claims (a frame holds none but its
    last two bytes), so a too-long length cannot hold up the frames behind it. At most
    `MAX_FRAME_BYTES` - 1 bytes stay buffered between calls; `skipped_bytes` counts bytes discarded
    outside frames.
    """

    def __init__(self, max_data_bytes: int = MAX_DATA_BYTES):
        self.max_data_bytes = max_data_bytes
        self._buf = bytearray()
        self.skipped_bytes = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[RawFrame | FramingError]:
        buf = self._buf
        buf += chunk
        out: list[RawFrame | FramingError] = []
        start = 0
        while True:
            i = buf.find(b"##", start)
            if i < 0:
                keep_from = max(start, len(buf) - 1 if buf.endswith(b"#") else len(buf))
                self.skipped_bytes += keep_from - start
                start = keep_from
                break
            self.skipped_bytes += i - start
            start = i
            digits = bytes(buf[i + 2:i + HEADER_BYTES])
            if digits.startswith(b"#"):  # a run of '#': the frame, if any, starts further on
                self.skipped_bytes += 1
                start = i + 1
                continue
            if not all(0x30 <= c <= 0x39 for c in digits):
                out.append(FramingError("length is not 4 decimal digits", bytes(buf[i:i + 16])))
                start = i + 1
                continue
            if len(digits) < 4:
                break
            n = int(digits)
            if n > self.max_data_bytes:
                out.append(FramingError(f"length {n} exceeds {self.max_data_bytes}", bytes(buf[i:i + 16])))
                start = i + 1
                continue
            end = i + HEADER_BYTES + n + TRAILER_BYTES
            if buf.find(b"\r\n", i + HEADER_BYTES, end - 2) >= 0:
                # CR LF ends a frame and never occurs inside one: this header's length is wrong, and waiting
                # for the bytes it claims would hold up the frames behind it.
                out.append(FramingError(f"CR LF inside the {n} bytes of data and CRC the length claims",
                                        bytes(buf[i:i + 16])))
                start = i + 1
                continue
            if len(buf) < end:
                break
            data = bytes(buf[i + HEADER_BYTES:i + HEADER_BYTES + n])
            crc_text = bytes(buf[end - 6:end - 2])
            problem = None
            if buf[end - 2:end] != b"\r\n":
                problem = f"no CR LF after a data segment of {n} bytes"
            elif not _HEX4.fullmatch(crc_text):
                problem = f"CRC {crc_text!r} is not 4 hex digits"
            elif not _is_encrypted(data) and crc16(data) != int(crc_text, 16):
                problem = f"CRC mismatch: sent {crc_text.decode()}, computed {crc16(data):04X}"
            if problem:
                out.append(FramingError(problem, bytes(buf[i:i + 16])))
                start = i + 1
                continue
            out.append(RawFrame(data, int(crc_text, 16), _is_encrypted(data)))
            start = end
        del buf[:start]
        return out


@dataclass(frozen=True)
class Packet:
    """The fields of one data segment. `cp` is the CP content between ``&&`` and ``&&`` (ciphertext token
    ``{0x...}`` while `encrypted`). Absent optional header fields are None."""

    cn: str
    mn: str
    pw: str
    cp: str
    qn: str | None = None
    st: str | None = None
    flag: int | None = None
    pnum: int | None = None
    pno: int | None = None
    rf: bool = False
    encrypted: bool = False

    @property
    def version(self) -> int:
        """Edition bits of Flag: 0 = HJ/T 212-2005 (also when Flag is absent), 1 = 2017, 2 = 2025."""
        return 0 if self.flag is None else self.flag >> 2

    @property
    def edition(self) -> str:
        return EDITIONS[self.version]

    @property
    def reply_wanted(self) -> bool:
        return self.flag is not None and bool(self.flag & FLAG_REPLY)

    @property
    def split(self) -> bool:
        return self.flag is not None and bool(self.flag & FLAG_SPLIT)


def _int_field(fields: dict[str, str], key: str, lo: int, hi: int) -> int | None:
    if key not in fields:
        return None
    v = fields[key]
    if not (v.isascii() and v.isdigit() and lo <= int(v) <= hi):
        raise CodecError(f"{key}={v!r} is not an integer in {lo}..{hi}")
    return int(v)


def parse_data(data: bytes) -> Packet:
    """Parse a data segment (plaintext header; CP plaintext or an encrypted token). Raises CodecError."""
    cp_at, value_at = _cp_span(data)
    try:
        head = data[:cp_at].decode("ascii")
    except UnicodeDecodeError:
        raise CodecError("header fields are not ASCII") from None
    fields: dict[str, str] = {}
    for item in head.split(";"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise CodecError(f"header item {item!r} has no '='")
        fields.setdefault(key, value)
    value = data[value_at:]
    wrapped = len(value) >= 4 and value.startswith(b"&&") and value.endswith(b"&&")
    cp = (value[2:-2] if wrapped else value).decode("utf-8", "replace")
    encrypted = cp.startswith(ENCRYPTED_PREFIX)
    if not wrapped and not encrypted:
        raise CodecError("CP is not wrapped in && ... &&")
    for key in ("CN", "MN"):
        if not fields.get(key):
            raise CodecError(f"no {key} field")
    flag = _int_field(fields, "Flag", 0, 255)
    p = Packet(cn=fields["CN"], mn=fields["MN"], pw=fields.get("PW", ""), cp=cp, qn=fields.get("QN"),
               st=fields.get("ST"), flag=flag, pnum=_int_field(fields, "PNUM", 1, 9999),
               pno=_int_field(fields, "PNO", 1, 9999), rf=fields.get("RF") == "1", encrypted=encrypted)
    if p.version not in EDITIONS:
        raise CodecError(f"Flag={flag}: edition {p.version} is not 0 (2005), 1 (2017) or 2 (2025)")
    if p.version >= 1 and not p.qn:
        raise CodecError(f"no QN field ({p.edition} requires it)")
    if p.split and (p.pnum is None or p.pno is None or p.pno > p.pnum):
        raise CodecError(f"split packet needs 1 <= PNO <= PNUM, got PNUM={p.pnum} PNO={p.pno}")
    return p


def build_data(p: Packet) -> bytes:
    """The data segment of `p`, header fields in the order of HJ 212-2017 §6.3.3 (RF before CP)."""
    parts = [("QN", p.qn), ("ST", p.st), ("CN", p.cn), ("PW", p.pw), ("MN", p.mn),
             ("Flag", None if p.flag is None else str(p.flag)),
             ("PNUM", None if p.pnum is None else str(p.pnum)), ("PNO", None if p.pno is None else str(p.pno)),
             ("RF", "1" if p.rf else None)]
    head = "".join(f"{k}={v};" for k, v in parts if v is not None)
    return f"{head}CP=&&{p.cp}&&".encode()


def build_frame(p: Packet, sm4_key: str = "") -> bytes:
    """The frame of `p`; with `sm4_key` its CP goes SM4-encrypted (2025) and the CRC is that of the
    plaintext data segment (DESIGN §3a), while the length counts the bytes sent."""
    if not sm4_key:
        return frame(build_data(p))
    sent = build_data(replace(p, cp=encrypt_cp(p.cp, sm4_key), encrypted=True))
    if len(sent) > MAX_DATA_BYTES:
        raise CodecError(f"encrypted data segment of {len(sent)} bytes exceeds {MAX_DATA_BYTES}")
    return b"##%04d" % len(sent) + sent + b"%04X" % crc16(build_data(p)) + b"\r\n"


def build_frames(p: Packet, sm4_key: str = "") -> list[bytes]:
    """The frames of `p`: one if it fits in `MAX_DATA_BYTES`, else a split upload (HJ 212-2017 §6.3.3:
    Flag bit 1, PNUM/PNO, one QN) whose packets each carry the CP's plain fields (``DataTime``) and as many
    whole code groups as fit. An encrypted CP grows about fivefold (App. A.2 writes each byte as ``0xNN,``),
    so 2025 uploads are split much sooner. Raises CodecError when a single code group cannot fit."""
    try:
        return [build_frame(p, sm4_key)]
    except CodecError:
        pass
    cp = parse_cp(p.cp)
    plain = [f"{k}={v}" for k, v in cp.fields.items()]
    groups = [",".join(f"{code}-{name}={v}" for name, v in items.items()) for code, items in cp.codes.items()]
    split = replace(p, flag=(p.flag or 0) | FLAG_SPLIT, pnum=9999, pno=9999)  # widest PNUM/PNO for sizing

    def fits(part: list[str]) -> bool:
        try:
            build_frame(replace(split, cp=";".join(plain + part)), sm4_key)
            return True
        except CodecError:
            return False

    parts: list[list[str]] = [[]]
    for g in groups:
        if not fits([g]):
            raise CodecError(f"CP group {g[:40]!r}... does not fit in one packet")
        if fits(parts[-1] + [g]):
            parts[-1].append(g)
        else:
            parts.append([g])
    return [build_frame(replace(split, cp=";".join(plain + part), pnum=len(parts), pno=i), sm4_key)
            for i, part in enumerate(parts, 1)]


def _sm4(key_hex: str):
    key = bytes.fromhex(key_hex)
    if len(key) != 16:
        raise CodecError("an SM4 key is 32 hex digits")
    return Cipher(algorithms.SM4(key), modes.ECB())


def encrypt_cp(cp: str, key_hex: str) -> str:
    """A CP content SM4-encrypted as HJ 212-2025 App. A.2 writes it: ECB without padding, the whole 16-byte
    blocks as ``{0xNN,0xNN,...}``, a tail shorter than a block left in plaintext after the brace. A CP
    shorter than one block has nothing to encrypt and is returned as it is."""
    plain = cp.encode()
    whole = len(plain) - len(plain) % 16
    if whole == 0:
        return cp
    enc = _sm4(key_hex).encryptor()
    cipher = enc.update(plain[:whole]) + enc.finalize()
    return "{" + ",".join(f"0x{b:02X}" for b in cipher) + "}" + plain[whole:].decode()


_TOKEN = re.compile(rb"\{(0x[0-9A-Fa-f]{2}(?:,0x[0-9A-Fa-f]{2})*|0x(?:[0-9A-Fa-f]{2})+)\}")


def decrypt_data(data: bytes, crc: int, key_hex: str) -> bytes:
    """The plaintext data segment of an encrypted frame whose sent CRC is `crc`. Raises CodecError.

    The CP is ``&&{0xNN,0xNN,...}<plaintext tail>&&`` (HJ 212-2025 App. A.2; ``{0x<hex>}`` and a CP without
    the ``&&`` are accepted too). The blocks are decrypted and the tail appended; should a logger pad
    instead (PKCS#7 or zeros, no tail), the unpadded text is tried as well. Only a plaintext whose data
    segment has the sent CRC is returned (DESIGN §3a), so a wrong key or a corrupted frame is refused.
    """
    cp_at, value_at = _cp_span(data)
    value = data[value_at:]
    body = value[2:-2] if len(value) >= 4 and value.startswith(b"&&") and value.endswith(b"&&") else value
    m = _TOKEN.match(body)
    if m is None:
        raise CodecError("encrypted CP is not {0xNN,0xNN,...}")
    cipher = bytes.fromhex(m.group(1).replace(b",", b"").replace(b"0x", b"").decode())
    if len(cipher) % 16:
        raise CodecError(f"encrypted CP of {len(cipher)} bytes is not whole 16-byte SM4 blocks")
    tail = body[m.end():]
    dec = _sm4(key_hex).decryptor()
    plain = dec.update(cipher) + dec.finalize()
    candidates = [plain + tail]
    if not tail:
        pad = plain[-1]
        if 1 <= pad <= 16 and plain.endswith(bytes([pad]) * pad):
            candidates.append(plain[:-pad])
        candidates.append(plain.rstrip(b"\0"))
    for cp in candidates:
        segment = data[:cp_at] + b"CP=&&" + cp + b"&&"
        if crc16(segment) == crc:
            return segment
    raise CodecError("CRC of the decrypted data segment does not match (wrong key or corrupted frame)")


@dataclass(frozen=True)
class Cp:
    """A parsed CP: plain fields (``DataTime``) and per-code fields (``a01012-Rtd`` -> codes["a01012"]["Rtd"]).
    `malformed` lists items without ``=``, which are skipped."""

    fields: dict[str, str] = field(default_factory=dict)
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    malformed: tuple[str, ...] = ()


def parse_cp(text: str) -> Cp:
    fields: dict[str, str] = {}
    codes: dict[str, dict[str, str]] = {}
    malformed = []
    for group in text.split(";"):
        for item in group.split(","):
            if not item:
                continue
            key, sep, value = item.partition("=")
            if not sep:
                malformed.append(item)
                continue
            code, dash, name = key.partition("-")
            if dash:
                codes.setdefault(code, {}).setdefault(name, value)
            else:
                fields.setdefault(key, value)
    return Cp(fields, codes, tuple(malformed))


def build_cp(fields: dict[str, str], codes: dict[str, dict[str, str]]) -> str:
    """``k=v;...;code-name=v,code-name=v;...``: plain fields first, one group per code."""
    groups = [f"{k}={v}" for k, v in fields.items()]
    groups += [",".join(f"{code}-{name}={v}" for name, v in items.items()) for code, items in codes.items()]
    return ";".join(groups)


def reply(p: Packet, cn: str) -> bytes:
    """An answer frame to `p` (HJ 212-2017 App. C): its QN, PW and MN, ST=91, `cn`, Flag = its edition
    bits with the reply bit clear (0 for 2005, 4 for 2017, 8 for 2025), empty CP."""
    return build_frame(Packet(cn=cn, mn=p.mn, pw=p.pw, cp="", qn=p.qn, st="91", flag=p.version << 2))


def reply_9014(p: Packet) -> bytes:
    """Data acknowledgement (数据应答), DESIGN §3a."""
    return reply(p, "9014")


def reply_9013(p: Packet) -> bytes:
    """Answer to a 2025 heartbeat (CN 9015)."""
    return reply(p, "9013")
