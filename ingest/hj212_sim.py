"""A simulated HJ 212 data logger per configured `[[hj212.devices]]` entry (DESIGN §3a).

Each logger connects to the bridge over TCP and sends CN 2011 real-time frames (reply bit set; HJ 212-2017
or -2025, the CP SM4-encrypted for 2025 when the device has a key) with the values of
`ingest.simulator.simulated_reading` converted to the device's units, a CN 2051 frame after each minute and
a CN 2061 frame after each hour. A frame is sent again until its 9014 arrives (`timeout_s`, `retries`);
a dropped connection is opened again.
"""

import asyncio
import datetime as dt
import logging
import math
import time
import zoneinfo
from dataclasses import dataclass, field

import numpy as np

from cems.config import Config, Hj212Device
from cems.ingest.hj212_bridge import parse_listen
from cems.ingest.hj212_codec import (
    FLAG_REPLY,
    CodecError,
    FrameReader,
    Packet,
    RawFrame,
    build_cp,
    build_frames,
    parse_data,
)
from cems.ingest.hj212_map import PA_PER_KPA, SECONDS_PER_HOUR, DeviceContext, device_contexts
from cems.ingest.simulator import _phase, simulated_reading

log = logging.getLogger("cems.hj212sim")
VERSION_BY_EDITION = {"2005": 0, "2017": 1, "2025": 2}
ST_AIR = "31"  # HJ 212-2017 system codes: 31 = 大气环境污染源 (air pollution source); 32 is surface water


def logger_values(reading: dict, ctx: DeviceContext) -> dict:
    """Contract channels (DESIGN §3 units) -> HJ 212 code values in the device's units: the inverse of
    `hj212_map.realtime_reading`. A gauge device sends a01013 = absolute - ambient and a01006 = ambient."""
    device, ambient_kpa = ctx.device, ctx.ambient_kpa
    to_unit = PA_PER_KPA if device.pressure_unit == "Pa" else 1.0
    out = {}
    if "flow_m3h" in reading:
        out["a00000"] = reading["flow_m3h"] / (SECONDS_PER_HOUR if device.flow_unit == "m3_s" else 1.0)
    if "velocity_ms" in reading:
        out["a01011"] = reading["velocity_ms"]
    if "temp_c" in reading:
        out["a01012"] = reading["temp_c"]
    if "press_kpa" in reading:
        if device.pressure == "gauge":
            out["a01013"] = (reading["press_kpa"] - ambient_kpa) * to_unit
            out["a01006"] = ambient_kpa * to_unit
        else:
            out["a01013"] = reading["press_kpa"] * to_unit
    if "h2o_pct" in reading:
        out["a01014"] = reading["h2o_pct"]
    if "o2_pct" in reading:
        out["a19001"] = reading["o2_pct"]
    if "co2_pct" in reading:
        co2 = reading["co2_pct"]
        out["a05001"] = co2 if device.co2_unit == "pct" else co2 * ctx.co2_density_kg_m3 * 1e4
    return out


def local_stamp(t: float, tz: zoneinfo.ZoneInfo, ms: bool = False) -> str:
    """Epoch seconds -> ``YYYYMMDDhhmmss`` (DataTime) or ``YYYYMMDDhhmmsszzz`` (QN) in local time."""
    d = dt.datetime.fromtimestamp(t, tz)
    return d.strftime("%Y%m%d%H%M%S") + (f"{d.microsecond // 1000:03d}" if ms else "")


def realtime_cp(t: float, values: dict, flags: dict | None, tz: zoneinfo.ZoneInfo) -> str:
    """A CN 2011 CP: ``DataTime`` and ``<code>-Rtd,<code>-Flag`` per code (flag N unless `flags` says)."""
    codes = {c: {"Rtd": repr(float(v)), "Flag": (flags or {}).get(c, "N")} for c, v in values.items()}
    return build_cp({"DataTime": local_stamp(t, tz)}, codes)


def interval_cp(start: float, samples: dict[str, list[float]], seconds: float, tz: zoneinfo.ZoneInfo,
                flow_unit: str = "m3_s") -> str:
    """A CN 2051/2061 CP: Avg, Min, Max and Flag per code, and Cou [m3] = mean flow x `seconds` for a00000
    (sent in `flow_unit`, "m3_s" or "m3_h")."""
    codes = {}
    for code, xs in samples.items():
        items = {"Avg": repr(sum(xs) / len(xs)), "Min": repr(min(xs)), "Max": repr(max(xs)), "Flag": "N"}
        if code == "a00000":
            per_s = 1.0 if flow_unit == "m3_s" else 1.0 / SECONDS_PER_HOUR
            items["Cou"] = repr(sum(xs) / len(xs) * per_s * seconds)
        codes[code] = items
    return build_cp({"DataTime": local_stamp(start, tz)}, codes)


class SimLogger:
    """One logger's TCP link: `send` writes a frame and, when it asks for an answer, waits for the 9014
    (9013 for a heartbeat) with its QN, sending it again up to `retries` times after `timeout_s` and
    opening the connection again when it drops."""

    def __init__(self, host: str, port: int, device: Hj212Device, tz: zoneinfo.ZoneInfo, edition: str = "2017",
                 timeout_s: float = 5.0, retries: int = 3):
        if edition not in VERSION_BY_EDITION:
            raise ValueError(f"edition {edition!r} is not one of {', '.join(VERSION_BY_EDITION)}")
        self.host, self.port, self.device, self.tz = host, port, device, tz
        self.edition, self.timeout_s, self.retries = edition, timeout_s, retries
        self.sent = self.acked = self.failed = 0
        self._writer: asyncio.StreamWriter | None = None
        self._listener: asyncio.Task | None = None
        self._waiting: dict[str, asyncio.Future] = {}
        self._last_qn_ms = 0

    def packet(self, cn: str, cp: str, now_s: float, reply: bool = True) -> Packet:
        """A packet of this logger with a fresh QN (local time of `now_s`, strictly increasing ms)."""
        ms = max(int(now_s * 1000), self._last_qn_ms + 1)
        self._last_qn_ms = ms
        flag = (VERSION_BY_EDITION[self.edition] << 2) | (FLAG_REPLY if reply else 0)
        return Packet(cn=cn, mn=self.device.mn, pw=self.device.password, cp=cp,
                      qn=local_stamp(ms / 1000, self.tz, ms=True), st=ST_AIR, flag=flag)

    def encode(self, p: Packet) -> list[bytes]:
        """The frames of `p` (several when split), its CP SM4-encrypted when the logger speaks 2025 and has
        a key."""
        return build_frames(p, self.device.sm4_key if self.edition == "2025" else "")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        if self._writer is not None:
            self._writer.close()
        self._writer = None

    async def _connect(self) -> None:
        reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._listener = asyncio.create_task(self._listen(reader))

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        frames = FrameReader()
        while chunk := await reader.read(4096):
            for item in frames.feed(chunk):
                if isinstance(item, RawFrame):
                    try:
                        answer = parse_data(item.data)
                    except CodecError:
                        continue
                    fut = self._waiting.get(answer.qn or "")
                    if answer.cn in ("9014", "9013") and fut is not None and not fut.done():
                        fut.set_result(answer)

    async def send(self, p: Packet, frames: list[bytes] | None = None) -> bool:
        """Send `p` (or its ready-made `frames`); True once it is answered (or wants no answer), False after
        all retries. The packets of a split upload go out together; the first answer with the QN counts."""
        data = b"".join(frames or self.encode(p))
        want = p.reply_wanted or p.cn == "9015"
        for attempt in range(1 + self.retries):
            fut = asyncio.get_running_loop().create_future()
            self._waiting[p.qn or ""] = fut
            try:
                if self._writer is None or self._writer.is_closing():
                    await self._connect()
                self._writer.write(data)
                await self._writer.drain()
                self.sent += 1
                if not want:
                    return True
                await asyncio.wait_for(fut, self.timeout_s)
                self.acked += 1
                return True
            except TimeoutError:
                log.info("MN %s: no answer to QN %s within %g s (try %d)", p.mn, p.qn, self.timeout_s, attempt + 1)
            except OSError as e:
                log.warning("MN %s: connection to %s:%s: %s", p.mn, self.host, self.port, e)
                await self.close()
                await asyncio.sleep(min(self.timeout_s, 2.0**attempt))  # reconnect backoff
            finally:
                self._waiting.pop(p.qn or "", None)
        self.failed += 1
        return False


@dataclass
class _Samples:
    """Values per code since `start` [epoch s], for the logger's own minute and hour figures."""

    start: float
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, values: dict[str, float]) -> None:
        for code, v in values.items():
            self.values.setdefault(code, []).append(v)


async def _run_logger(logger: SimLogger, ctx: DeviceContext, rate_hz: float, end_s: float | None,
                      rng: np.random.Generator) -> None:
    dev = logger.device
    phase = _phase(dev.plant, dev.stack)
    period = 1.0 / rate_hz
    t = math.ceil(time.time())
    minute, hour = _Samples(t // 60 * 60), _Samples(t // 3600 * 3600)
    while end_s is None or t < end_s:
        delay = t - time.time()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the simulated clock, not synchronisation
        for acc, length, cn in ((minute, 60, "2051"), (hour, 3600, "2061")):
            if t - acc.start >= length:
                if acc.values:
                    cp = interval_cp(acc.start, acc.values, length, logger.tz, dev.flow_unit)
                    await logger.send(logger.packet(cn, cp, time.time()))
                acc.start, acc.values = t // length * length, {}
        values = logger_values(simulated_reading(ctx.stack, t, rng, phase), ctx)
        minute.add(values)
        hour.add(values)
        await logger.send(logger.packet("2011", realtime_cp(t, values, None, logger.tz), time.time()))
        t += period
        if t < time.time() - period:  # the bridge was away: carry on from now rather than replay the gap
            t = math.ceil(time.time())


async def _simulate(loggers: list[tuple[SimLogger, DeviceContext]], rate_hz: float, duration_s: float | None,
                    seed: int | None) -> None:
    end_s = None if duration_s is None else time.time() + duration_s
    rngs = np.random.default_rng(seed).spawn(len(loggers))
    tasks = [asyncio.create_task(_run_logger(lg, ctx, rate_hz, end_s, rng))
             for (lg, ctx), rng in zip(loggers, rngs, strict=True)]
    try:
        while True:
            done, _pending = await asyncio.wait(tasks, timeout=10)
            print("simulate: " + ", ".join(f"{lg.device.mn} sent {lg.sent} answered {lg.acked} failed {lg.failed}"
                                           for lg, _ in loggers), flush=True)
            if len(done) == len(tasks):
                for t in done:
                    t.result()
                return
    finally:
        for t in tasks:
            t.cancel()
        for lg, _ in loggers:
            await lg.close()


def run_hj212_simulator(cfg: Config, rate_hz: float = 1.0, duration_s: float | None = None,
                        stacks: list[str] | None = None, seed: int | None = None, edition: str = "2017",
                        timeout_s: float = 5.0, retries: int = 3) -> int:
    """`cems simulate --protocol hj212`: one logger per configured device (or those of `stacks`,
    ``plant/stack``) sending to the bridge at `[hj212] listen` (0.0.0.0 or :: -> 127.0.0.1)."""
    if not 0 < rate_hz <= 1:
        raise SystemExit("simulate --protocol hj212: --rate must be in (0, 1]: DataTime has whole seconds")
    devices = [d for d in (cfg.hj212.devices if cfg.hj212 else [])
               if not stacks or f"{d.plant}/{d.stack}" in stacks]
    if not devices:
        raise SystemExit(f"simulate --protocol hj212: no [[hj212.devices]] entry matches {stacks or 'the config'}")
    host, port = parse_listen(cfg.hj212.listen)
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    contexts = device_contexts(cfg)
    loggers = [(SimLogger(host, port, d, contexts[d.mn].tz, edition, timeout_s, retries), contexts[d.mn])
               for d in devices]
    print(f"simulate: {len(loggers)} HJ 212 logger(s) ({edition}) -> {host}:{port}, {rate_hz:g} Hz", flush=True)
    try:
        asyncio.run(_simulate(loggers, rate_hz, duration_s, seed))
    except KeyboardInterrupt:
        pass
    print("simulate: done", flush=True)
    return 0
