"""The TOML configuration of DESIGN §7a, loaded and validated once at start-up.

Every error names the key and the problem, e.g. ``plants[0].stacks[1].area_m2: must be > 0``.
"""

import os
import ssl
import tomllib
import zoneinfo
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cems.compute import constants as K
from cems.compute.channels import NAMES
from cems.compute.params import StackSpec, regime_constants
from cems.tls import TlsError, client_context

Id = Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,64}$")]
ChannelName = Literal[NAMES]  # type: ignore[valid-type]
ROLES = ("operator", "regulator", "gateway", "admin")
REGIMES = ("china", "eu", "us_part75")
FIRST_COMPLIANCE_YEAR, LAST_COMPLIANCE_YEAR = 2000, 2199  # as the fuel dates and query times are bounded
MAX_ALLOWANCES_T = 1e10  # t CO2: far above any installation's allocation (the largest are tens of Mt)


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file, the key and the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    client_id: str = Field("cems-collector", min_length=1, max_length=128)
    keepalive_s: int = Field(30, ge=5, le=3600)
    queue_messages: int = Field(10_000, ge=10)  # messages taken from the broker but not yet processed
    # "all": every plant's topics (messages for plants not in this config are rejected as unknown);
    # "configured": only this config's plants, so several `cems serve` processes can split the plants
    # between them on one broker (docs/scaling.md).
    subscribe: Literal["all", "configured"] = "all"
    # TLS to the broker (usually port 8883): the server's certificate is verified against the system's CAs,
    # or `ca_file`'s; `cert_file`/`key_file` add a client certificate (mutual TLS). Paths are relative to
    # the config file.
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_verify_hostname: bool = True  # off only for a broker whose certificate names another host

    @model_validator(mode="after")
    def _tls_files_need_tls(self) -> "MqttConfig":
        _tls_keys_need(self, self.tls, "set tls = true to use them")
        return self

    @model_validator(mode="before")
    @classmethod
    def _credentials_from_env(cls, data):
        """CEMS_MQTT_USERNAME / CEMS_MQTT_PASSWORD, when set, win over the file: secrets stay out of it."""
        data = dict(data or {})
        for key in ("username", "password"):
            env = os.environ.get(f"CEMS_MQTT_{key.upper()}")
            if env:
                data[key] = env
        return data


class InfluxConfig(_Section):
    url: str = "http://127.0.0.1:8086"
    database: str = "cems"
    username: str | None = None
    password: str | None = None
    token: str | None = None
    org: str | None = None
    bucket: str | None = None
    timeout_s: float = Field(10.0, gt=0)
    # For an https `url`: the CA that signed the server's certificate (default: the system's CAs), a
    # client certificate if the server asks for one; paths are relative to the config file.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_verify_hostname: bool = True

    @model_validator(mode="before")
    @classmethod
    def _bucket_is_the_database(cls, data):
        """InfluxDB 2.x serves a bucket on its v1 endpoints under the bucket's name (its virtual DBRP mapping), so
        a config that names only a bucket uses it; an explicit `database` (a DBRP mapping of its own) wins."""
        if isinstance(data, dict) and data.get("bucket") is not None and "database" not in data:
            data = {**data, "database": data["bucket"]}
        return data

    @model_validator(mode="after")
    def _tls_files_need_https(self) -> "InfluxConfig":
        _tls_keys_need(self, self.url.lower().startswith("https://"), "they apply to an https:// url only")
        return self


def _tls_keys_need(section, tls_on: bool, hint: str) -> None:
    """TLS keys set where TLS is off are a mistake worth an error, not a silently plain connection."""
    keys = [k for k in ("ca_file", "cert_file", "key_file") if getattr(section, k) is not None]
    if not section.tls_verify_hostname:
        keys.append("tls_verify_hostname")
    if keys and not tls_on:
        raise ValueError(f"{', '.join(keys)} set without TLS: {hint}")
    if section.key_file is not None and section.cert_file is None:
        raise ValueError("key_file set without cert_file (a client certificate needs both)")


class TokenConfig(_Section):
    token: str = Field(min_length=8)
    role: Literal[ROLES]  # type: ignore[valid-type]
    plants: list[str] = ["*"]
    name: str | None = None


class ApiConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    tokens: list[TokenConfig] = []

    @field_validator("tokens")
    @classmethod
    def _unique(cls, v: list[TokenConfig]) -> list[TokenConfig]:
        seen = set()
        for i, t in enumerate(v):
            if t.token in seen:
                raise ValueError(f"token [{i}] repeats an earlier token")
            seen.add(t.token)
        return v


class StorageConfig(_Section):
    data_dir: Path = Path("var/data")
    # Bounds on disk: past them intake stops acknowledging (the broker holds the messages) rather than
    # dropping anything.
    journal_max_mb: int = Field(1024, gt=0)  # received messages not yet processed
    spool_max_mb: int = Field(4096, gt=0)  # database writes waiting for InfluxDB to come back


Pair = tuple[float, float]  # ranges may be open-ended (inf); NaN fails their low < high check
Finite = Annotated[float, Field(allow_inf_nan=False)]
FinitePair = tuple[Finite, Finite]


class StackConfig(_Section):
    id: Id
    name: str | None = None
    area_m2: float | None = Field(None, gt=0, allow_inf_nan=False)
    kv: float | None = Field(None, gt=0, allow_inf_nan=False)
    flow_basis: Literal["actual_wet", "std_wet", "std_dry"] = "actual_wet"
    co2_basis: Literal["dry", "wet"] = "dry"
    minute_min_samples: int = Field(K.MINUTE_MIN_SAMPLES, ge=1, le=600)
    co2_density_kg_m3: float = Field(K.M_CO2_OVER_VM, gt=0, lt=10)
    ranges: dict[ChannelName, Pair] = {}
    calibration: dict[ChannelName, FinitePair] = {}
    max_potential: dict[str, Finite] = {}

    @field_validator("ranges")
    @classmethod
    def _ranges_ordered(cls, v: dict[str, Pair]) -> dict[str, Pair]:
        for name, (lo, hi) in v.items():
            if not lo < hi:
                raise ValueError(f"{name}: range [{lo}, {hi}] must have low < high")
        return v

    @field_validator("calibration")
    @classmethod
    def _slope_nonzero(cls, v: dict[str, FinitePair]) -> dict[str, FinitePair]:
        for name, (_a, b) in v.items():
            if b == 0:
                raise ValueError(f"{name}: calibration slope b must not be 0 (y = a + b*x)")
        return v

    @model_validator(mode="after")
    def _velocity_needs_area(self) -> "StackConfig":
        if self.area_m2 is None and (self.kv is not None or "velocity_ms" in self.ranges
                                     or "velocity_ms" in self.calibration):
            raise ValueError("area_m2 is missing: flow from velocity_ms needs the stack area "
                             "(kv, ranges.velocity_ms or calibration.velocity_ms are set)")
        if self.area_m2 is not None and self.flow_basis != "actual_wet":
            raise ValueError(f"flow_basis {self.flow_basis!r} with area_m2: flow from a velocity probe is actual "
                             "and wet, so flow_basis must be 'actual_wet'")
        return self

    @property
    def display_name(self) -> str:
        return self.name or self.id


class PlantConfig(_Section):
    id: Id
    name: str | None = None
    timezone: str = "Asia/Shanghai"
    regime: Literal[REGIMES] = "china"  # type: ignore[valid-type]
    substitution: Literal["part75", "eu_mrr"] = "part75"
    lock_after_days: int = Field(K.LOCK_AFTER_DAYS, ge=1, le=3660)
    lateness_h: float = Field(K.LATENESS_S / 3600, ge=0, le=240)
    settle_s: float = Field(30.0, ge=0, le=3600)  # quiet time before an hour past lateness becomes final
    fuel_tolerance_pct: float = Field(10.0, gt=0, allow_inf_nan=False)  # CEMS vs fuel calculation band (§5)
    # Allowances held per compliance year [t CO2] (free allocation plus purchases); `POST /allowances` overrides.
    allowances: dict[int, float] = {}
    stacks: list[StackConfig] = Field(min_length=1)

    @field_validator("allowances", mode="before")
    @classmethod
    def _allowance_years(cls, v):
        if not isinstance(v, dict):
            raise ValueError("must be a table of year = t CO2, e.g. allowances = { 2026 = 1.2e6 }")
        out = {}
        for key, t in v.items():
            year = str(key)
            if not year.isdigit() or len(year) != 4 or not FIRST_COMPLIANCE_YEAR <= int(year) <= LAST_COMPLIANCE_YEAR:
                raise ValueError(f"key {key!r} is not a year {FIRST_COMPLIANCE_YEAR}..{LAST_COMPLIANCE_YEAR}")
            if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= MAX_ALLOWANCES_T:
                raise ValueError(f"{year}: {t!r} is not a number of t CO2 in [0, {MAX_ALLOWANCES_T:.0e}]")
            out[int(year)] = float(t)
        return out

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a tzdata folder name
            raise ValueError(f"unknown timezone {v!r} (an IANA name such as 'Asia/Shanghai')") from None
        return v

    @field_validator("stacks")
    @classmethod
    def _unique_stacks(cls, v: list[StackConfig]) -> list[StackConfig]:
        ids = [s.id for s in v]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"stack ids repeat: {', '.join(sorted(dup))}")
        return v

    @property
    def display_name(self) -> str:
        return self.name or self.id


class Hj212Device(_Section):
    mn: str = Field(min_length=1, max_length=64)
    password: str = ""
    plant: Id
    stack: Id
    co2_unit: Literal["pct", "mg_m3"] = "pct"
    pressure: Literal["gauge", "absolute"] = "gauge"
    flow_unit: Literal["m3_s", "m3_h"] = "m3_s"
    pressure_unit: Literal["kPa", "Pa"] = "kPa"
    sm4_key: str = Field("", pattern=r"^([0-9a-fA-F]{32})?$")


class Hj212Config(_Section):
    listen: str = "0.0.0.0:6000"
    ambient_kpa: float = Field(101.325, gt=50, lt=120)
    devices: list[Hj212Device] = []


class Config(_Section):
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    influx: InfluxConfig = InfluxConfig()
    api: ApiConfig = ApiConfig()
    storage: StorageConfig = StorageConfig()
    plants: list[PlantConfig] = Field(min_length=1)
    hj212: Hj212Config | None = None

    @model_validator(mode="after")
    def _cross_refs(self) -> "Config":
        ids = [p.id for p in self.plants]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"plants: ids repeat: {', '.join(sorted(dup))}")
        # A token may name plants this instance does not (yet) serve: tokens are often shared across
        # instances that each own some plants (DESIGN §2); `unknown_token_plants` lists them for a warning.
        stacks = {(p.id, s.id) for p in self.plants for s in p.stacks}
        for i, d in enumerate(self.hj212.devices if self.hj212 else []):
            if (d.plant, d.stack) not in stacks:
                raise ValueError(f"hj212.devices[{i}]: unknown plant/stack {d.plant}/{d.stack}")
        return self

    def unknown_token_plants(self) -> list[str]:
        ids = {p.id for p in self.plants}
        return sorted({p for t in self.api.tokens for p in t.plants if p != "*" and p not in ids})

    def plant(self, plant_id: str) -> PlantConfig | None:
        return next((p for p in self.plants if p.id == plant_id), None)

    def stack_specs(self) -> list[tuple[PlantConfig, StackConfig, StackSpec]]:
        """Every configured stack with the numeric core's view of it, in a fixed order."""
        out = []
        for p in self.plants:
            for s in p.stacks:
                out.append((p, s, StackSpec(
                    area_m2=s.area_m2, kv=s.kv or 1.0, flow_basis=s.flow_basis, co2_basis=s.co2_basis,
                    co2_density_kg_m3=s.co2_density_kg_m3, minute_min_samples=s.minute_min_samples,
                    regime=p.regime, **regime_constants(p.regime),
                    ranges=tuple((n, lo, hi) for n, (lo, hi) in s.ranges.items()),
                    calibration=tuple((n, a, b) for n, (a, b) in s.calibration.items()),
                )))
        return out


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith(("literal[", "tuple[")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _message(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Parse and validate TOML text; relative paths (`storage.data_dir`, TLS files) are taken from `base_dir`.

    TLS files are loaded once here, so a wrong path, PEM or key is a configuration error at start-up
    (and from `cems check-config`), not a connection that keeps failing."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        lines = [f"{_loc(err['loc'])}: {_message(err)}" for err in e.errors()]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None
    if base_dir is not None:
        cfg = cfg.model_copy(update={
            "storage": _relative_to(cfg.storage, base_dir, ("data_dir",)),
            "mqtt": _relative_to(cfg.mqtt, base_dir, TLS_FILES),
            "influx": _relative_to(cfg.influx, base_dir, TLS_FILES),
        })
    for name in ("mqtt", "influx"):
        try:
            tls_context(getattr(cfg, name))
        except TlsError as e:
            raise ConfigError(f"{source}: {name}.{e}") from None
    return cfg


TLS_FILES = ("ca_file", "cert_file", "key_file")


def _relative_to(section: _Section, base_dir: Path, keys: tuple[str, ...]) -> _Section:
    paths = {k: base_dir / getattr(section, k) for k in keys
             if getattr(section, k) is not None and not getattr(section, k).is_absolute()}
    return section.model_copy(update=paths) if paths else section


def tls_context(section: "MqttConfig | InfluxConfig") -> "ssl.SSLContext | None":
    """The TLS client context `[mqtt]` or `[influx]` asks for; None for a plain connection."""
    on = section.tls if isinstance(section, MqttConfig) else section.url.lower().startswith("https://")
    if not on:
        return None
    return client_context(section.ca_file, section.cert_file, section.key_file, section.tls_verify_hostname)


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Load the config named by `path`, else by the CEMS_CONFIG environment variable."""
    path = path or os.environ.get("CEMS_CONFIG")
    if not path:
        raise ConfigError("no configuration: pass --config FILE or set CEMS_CONFIG")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start})") from None
    return parse_config(text, str(p), p.resolve().parent)
