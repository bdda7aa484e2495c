"""Tests of the TOML configuration (DESIGN §7a): a full config, defaults, and errors that name the key."""

import math
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from cems.compute import constants as K
from cems.config import Config, ConfigError, load_config, parse_config

FULL = textwrap.dedent('''\
    [mqtt]
    host = "broker.example"
    port = 8883
    username = "cems"
    password = "s3cret"
    client_id = "cems-a"

    [influx]
    url = "http://influx.example:8086"
    database = "cems_prod"
    username = "writer"
    password = "pw"
    token = "tok"
    org = "acme"
    bucket = "cems"

    [api]
    host = "0.0.0.0"
    port = 9090

    [[api.tokens]]
    token = "operator-token-1"
    role = "operator"
    plants = ["wusha"]

    [[api.tokens]]
    token = "regulator-token-1"
    role = "regulator"

    [[api.tokens]]
    token = "gateway-token-1"
    role = "gateway"
    plants = ["wusha", "rotterdam"]
    name = "edge gateways"

    [storage]
    data_dir = "/var/lib/cems"

    [[plants]]
    id = "wusha"
    name = "Wusha CHP"
    timezone = "Asia/Shanghai"
    regime = "china"
    substitution = "part75"
    lock_after_days = 10

    [[plants.stacks]]
    id = "u1"
    name = "Unit 1"
    flow_basis = "actual_wet"
    co2_basis = "dry"
    minute_min_samples = 10
    ranges = { co2_pct = [0, 20], flow_m3h = [0, 3.0e6] }
    calibration = { co2_pct = [0.1, 1.02] }
    max_potential = { co2_pct = 20, flow_m3h = 3.0e6 }

    [[plants.stacks]]
    id = "u2"
    area_m2 = 28.3
    kv = 0.95
    flow_basis = "actual_wet"
    co2_basis = "wet"
    co2_density_kg_m3 = 1.977
    ranges = { velocity_ms = [0, 40] }
    calibration = { velocity_ms = [-0.2, 1.1], temp_c = [0, 1] }

    [[plants]]
    id = "rotterdam"
    timezone = "Europe/Amsterdam"
    regime = "eu"
    substitution = "eu_mrr"
    lock_after_days = 30
    lateness_h = 4

    [[plants.stacks]]
    id = "main-1"

    [hj212]
    listen = "0.0.0.0:6001"
    ambient_kpa = 100.5

    [[hj212.devices]]
    mn = "88888880000001"
    password = "123456"
    plant = "wusha"
    stack = "u1"
    co2_unit = "mg_m3"
    pressure = "absolute"
    flow_unit = "m3_h"
    pressure_unit = "Pa"
    sm4_key = "0123456789abcdef0123456789ABCDEF"
''')

MINIMAL = textwrap.dedent('''\
    [[plants]]
    id = "p1"

    [[plants.stacks]]
    id = "s1"
''')


def config_error(text: str, source: str = "<config>") -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source)
    msg = str(info.value)
    assert msg.startswith(f"{source}: ")
    return msg


def with_stack(extra: str, plant_extra: str = "") -> str:
    """One plant `p1` (with `plant_extra` lines) with a plain stack `s0` and a stack `s1` with `extra` lines."""
    return (f'[[plants]]\nid = "p1"\n{plant_extra}\n\n'
            f'[[plants.stacks]]\nid = "s0"\n\n[[plants.stacks]]\nid = "s1"\n{extra}\n')


# --- a full valid config ------------------------------------------------------------------------------


def test_full_config_parses_with_the_right_values():
    cfg = parse_config(FULL)
    assert isinstance(cfg, Config)
    assert cfg.mqtt.host == "broker.example" and cfg.mqtt.port == 8883
    assert (cfg.mqtt.username, cfg.mqtt.password, cfg.mqtt.client_id) == ("cems", "s3cret", "cems-a")
    assert cfg.influx.url == "http://influx.example:8086" and cfg.influx.database == "cems_prod"
    assert (cfg.influx.username, cfg.influx.password) == ("writer", "pw")
    assert (cfg.influx.token, cfg.influx.org, cfg.influx.bucket) == ("tok", "acme", "cems")
    assert (cfg.api.host, cfg.api.port) == ("0.0.0.0", 9090)
    assert [(t.token, t.role, t.plants) for t in cfg.api.tokens] == [
        ("operator-token-1", "operator", ["wusha"]),
        ("regulator-token-1", "regulator", ["*"]),
        ("gateway-token-1", "gateway", ["wusha", "rotterdam"]),
    ]
    assert cfg.api.tokens[2].name == "edge gateways"
    assert cfg.storage.data_dir == Path("/var/lib/cems")

    assert [p.id for p in cfg.plants] == ["wusha", "rotterdam"]
    wusha, rotterdam = cfg.plants
    assert wusha.display_name == "Wusha CHP" and rotterdam.display_name == "rotterdam"
    assert (wusha.timezone, wusha.regime, wusha.substitution, wusha.lock_after_days) == (
        "Asia/Shanghai", "china", "part75", 10)
    assert (rotterdam.timezone, rotterdam.regime, rotterdam.substitution, rotterdam.lock_after_days) == (
        "Europe/Amsterdam", "eu", "eu_mrr", 30)
    assert rotterdam.lateness_h == 4.0

    u1, u2 = wusha.stacks
    assert u1.display_name == "Unit 1" and u2.display_name == "u2"
    assert u1.area_m2 is None and u1.kv is None
    assert (u1.flow_basis, u1.co2_basis, u1.minute_min_samples) == ("actual_wet", "dry", 10)
    assert u1.ranges == {"co2_pct": (0.0, 20.0), "flow_m3h": (0.0, 3.0e6)}
    assert u1.calibration == {"co2_pct": (0.1, 1.02)}
    assert u1.max_potential == {"co2_pct": 20.0, "flow_m3h": 3.0e6}
    assert (u2.area_m2, u2.kv, u2.flow_basis, u2.co2_basis) == (28.3, 0.95, "actual_wet", "wet")
    assert u2.co2_density_kg_m3 == 1.977
    assert u2.ranges == {"velocity_ms": (0.0, 40.0)}
    assert u2.calibration == {"velocity_ms": (-0.2, 1.1), "temp_c": (0.0, 1.0)}
    assert [s.id for s in rotterdam.stacks] == ["main-1"]

    assert cfg.hj212 is not None
    assert (cfg.hj212.listen, cfg.hj212.ambient_kpa) == ("0.0.0.0:6001", 100.5)
    (dev,) = cfg.hj212.devices
    assert (dev.mn, dev.password, dev.plant, dev.stack) == ("88888880000001", "123456", "wusha", "u1")
    assert (dev.co2_unit, dev.pressure, dev.flow_unit, dev.pressure_unit) == ("mg_m3", "absolute", "m3_h", "Pa")
    assert dev.sm4_key == "0123456789abcdef0123456789ABCDEF"

    assert cfg.plant("rotterdam") is rotterdam and cfg.plant("nowhere") is None
    assert cfg.unknown_token_plants() == []


def test_stack_specs_per_regime():
    specs = parse_config(FULL).stack_specs()
    assert [(p.id, s.id) for p, s, _ in specs] == [("wusha", "u1"), ("wusha", "u2"), ("rotterdam", "main-1")]
    (_, _, u1), (_, _, u2), (_, _, eu) = specs
    assert u1.t0_k == 273.0 == K.T0_K_CHINA and u1.hour_min_valid_pct == 75
    assert u2.t0_k == 273.0 and u2.hour_min_valid_pct == 75
    assert eu.t0_k == 273.15 == K.T0_K_EU and eu.hour_min_valid_pct == 80
    assert u1.area_m2 is None and u1.kv == 1.0
    assert (u2.area_m2, u2.kv, u2.flow_basis, u2.co2_basis, u2.co2_density_kg_m3) == (28.3, 0.95, "actual_wet", "wet",
                                                                                     1.977)
    assert u1.minute_min_samples == 10 and eu.minute_min_samples == K.MINUTE_MIN_SAMPLES
    assert u1.ranges == (("co2_pct", 0.0, 20.0), ("flow_m3h", 0.0, 3.0e6))
    assert u1.calibration == (("co2_pct", 0.1, 1.02),)
    assert u2.calibration == (("velocity_ms", -0.2, 1.1), ("temp_c", 0.0, 1.0))
    assert eu.ranges == () and eu.calibration == ()


def test_config_is_frozen():
    cfg = parse_config(MINIMAL)
    with pytest.raises(ValidationError):
        cfg.mqtt.port = 1


# --- defaults -----------------------------------------------------------------------------------------


def test_defaults():
    cfg = parse_config(MINIMAL)
    assert cfg.mqtt.host == "127.0.0.1" and cfg.mqtt.port == 1883
    assert cfg.mqtt.username is None and cfg.mqtt.password is None
    assert cfg.influx.url == "http://127.0.0.1:8086" and cfg.influx.database == "cems"
    assert cfg.api.port == 8080 and cfg.api.tokens == []
    assert cfg.storage.data_dir == Path("var/data")
    assert cfg.hj212 is None
    (plant,) = cfg.plants
    assert plant.regime == "china"
    assert plant.timezone == "Asia/Shanghai"
    assert plant.lock_after_days == 10 == K.LOCK_AFTER_DAYS
    assert plant.lateness_h == 2.0
    assert plant.name is None and plant.display_name == "p1"
    (stack,) = plant.stacks
    assert (stack.flow_basis, stack.co2_basis) == ("actual_wet", "dry")
    assert stack.area_m2 is None and stack.kv is None
    assert stack.minute_min_samples == K.MINUTE_MIN_SAMPLES
    assert stack.co2_density_kg_m3 == pytest.approx(44.01 / 22.4)
    assert stack.ranges == {} and stack.calibration == {}
    (_, _, spec), = cfg.stack_specs()
    assert spec.t0_k == 273.0 and spec.hour_min_valid_pct == 75


def test_token_plants_default_to_all():
    cfg = parse_config(MINIMAL + '\n[[api.tokens]]\ntoken = "abcdefgh"\nrole = "admin"\n')
    assert cfg.api.tokens[0].plants == ["*"]
    assert cfg.unknown_token_plants() == []


def test_hj212_device_defaults():
    cfg = parse_config(MINIMAL + '\n[hj212]\n[[hj212.devices]]\nmn = "1"\nplant = "p1"\nstack = "s1"\n')
    assert cfg.hj212 is not None
    assert (cfg.hj212.listen, cfg.hj212.ambient_kpa) == ("0.0.0.0:6000", 101.325)
    dev = cfg.hj212.devices[0]
    assert (dev.co2_unit, dev.pressure, dev.flow_unit, dev.pressure_unit, dev.sm4_key) == (
        "pct", "gauge", "m3_s", "kPa", "")


# --- errors name the key ------------------------------------------------------------------------------


def test_unknown_key_in_a_plant():
    msg = config_error(with_stack("", plant_extra="foo = 1"))
    assert "plants[0].foo: unknown key" in msg


def test_unknown_key_in_a_stack():
    assert "plants[0].stacks[1].bar: unknown key" in config_error(with_stack("bar = 1"))


def test_unknown_key_at_the_top_level():
    assert "<config>: foo: unknown key" in config_error("foo = 1\n" + MINIMAL)


@pytest.mark.parametrize(("section", "key"), [("mqtt", "hostname"), ("influx", "db"), ("api", "tokenz"),
                                              ("storage", "dir")])
def test_unknown_key_in_a_section(section, key):
    assert f"{section}.{key}: unknown key" in config_error(f'[{section}]\n{key} = "x"\n' + MINIMAL)


def test_unknown_key_in_a_token():
    msg = config_error(MINIMAL + '\n[[api.tokens]]\ntoken = "abcdefgh"\nrole = "admin"\nscope = "all"\n')
    assert "api.tokens[0].scope: unknown key" in msg


def test_unknown_section_at_the_top_level():
    assert "database: unknown key" in config_error(MINIMAL + '\n[database]\nurl = "x"\n')


@pytest.mark.parametrize(("section", "port", "problem"), [
    ("mqtt", 0, "greater than or equal to 1"),
    ("mqtt", 65536, "less than or equal to 65535"),
    ("mqtt", -1883, "greater than or equal to 1"),
    ("api", 70000, "less than or equal to 65535"),
])
def test_bad_port_range(section, port, problem):
    msg = config_error(f"[{section}]\nport = {port}\n" + MINIMAL)
    assert f"{section}.port: " in msg and problem in msg


def test_port_of_the_wrong_type():
    assert "mqtt.port: " in config_error('[mqtt]\nport = "eighty"\n' + MINIMAL)


@pytest.mark.parametrize("area", ["-1.0", "0", "-28.3"])
def test_non_positive_area_m2(area):
    msg = config_error(with_stack(f"area_m2 = {area}"))
    assert "plants[0].stacks[1].area_m2: " in msg
    assert "greater than 0" in msg


def test_non_positive_kv():
    assert "plants[0].stacks[1].kv: " in config_error(with_stack("area_m2 = 1\nkv = 0"))


@pytest.mark.parametrize("pair", ["[25, 0]", "[5, 5]", "[-1, -2]"])
def test_range_with_low_not_below_high(pair):
    msg = config_error(with_stack(f"ranges = {{ co2_pct = {pair} }}"))
    assert "plants[0].stacks[1].ranges: " in msg
    assert "co2_pct" in msg and "low < high" in msg


def test_range_of_the_wrong_shape():
    msg = config_error(with_stack("ranges = { co2_pct = [0, 1, 2] }"))
    assert "plants[0].stacks[1].ranges.co2_pct" in msg


def test_calibration_slope_zero():
    msg = config_error(with_stack("calibration = { o2_pct = [1.0, 0] }"))
    assert "plants[0].stacks[1].calibration: " in msg
    assert "o2_pct" in msg and "slope" in msg


@pytest.mark.parametrize("table", ["ranges", "calibration"])
def test_unknown_channel_name(table):
    msg = config_error(with_stack(f"{table} = {{ co3_pct = [0, 1] }}"))
    assert f"plants[0].stacks[1].{table}.co3_pct" in msg
    assert "co2_pct" in msg  # says what is allowed


@pytest.mark.parametrize("extra", ["kv = 0.9", "ranges = { velocity_ms = [0, 40] }",
                                   "calibration = { velocity_ms = [0, 1.1] }"])
def test_velocity_settings_without_area_m2(extra):
    msg = config_error(with_stack(extra))
    assert "plants[0].stacks[1]: " in msg
    assert "area_m2" in msg


def test_area_m2_without_kv_is_fine():
    cfg = parse_config(with_stack("area_m2 = 12.5"))
    assert cfg.plants[0].stacks[1].kv is None
    assert cfg.stack_specs()[1][2].kv == 1.0


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "Asia/Shangai", "", "../../etc/passwd", "+08:00"])
def test_bad_timezone(tz):
    msg = config_error(with_stack("", plant_extra=f'timezone = "{tz}"'))
    assert "plants[0].timezone: " in msg and "unknown timezone" in msg


@pytest.mark.parametrize("tz", ["Asia", "America", "Europe"])
def test_timezone_naming_a_zoneinfo_folder_is_a_config_error(tz):
    """An IANA area (a folder of tzdata) is not a zone: must be ConfigError, not an escaping OSError."""
    msg = config_error(with_stack("", plant_extra=f'timezone = "{tz}"'))
    assert "plants[0].timezone: " in msg and "unknown timezone" in msg


def test_unknown_regime():
    msg = config_error(with_stack("", plant_extra='regime = "mars"'))
    assert "plants[0].regime: " in msg
    assert "china" in msg and "eu" in msg


def test_regime_us_part75_uses_its_standard_conditions_and_quadrant_rule():
    cfg = parse_config(with_stack('co2_basis = "wet"', plant_extra='regime = "us_part75"'))
    spec = cfg.stack_specs()[1][2]
    assert spec.regime == "us_part75" and spec.t0_k == 293.15 and spec.hour_min_valid_pct == 0
    assert abs(spec.p0_kpa - 101.3207) < 1e-3  # 29.92 inHg

def test_regime_eu_accepted():
    assert parse_config(with_stack("", plant_extra='regime = "eu"')).plants[0].regime == "eu"


@pytest.mark.parametrize(("key", "value"), [("flow_basis", "actual_dry"), ("co2_basis", "moist"),
                                            ("minute_min_samples", "0"), ("co2_density_kg_m3", "0")])
def test_bad_stack_values(key, value):
    v = value if value.isdigit() else f'"{value}"'
    assert f"plants[0].stacks[1].{key}: " in config_error(with_stack(f"{key} = {v}"))


def test_duplicate_stack_ids():
    text = MINIMAL + '\n[[plants.stacks]]\nid = "s2"\n\n[[plants.stacks]]\nid = "s1"\n'
    msg = config_error(text)
    assert "plants[0].stacks: " in msg and "repeat" in msg and "s1" in msg


def test_same_stack_id_in_two_plants_is_fine():
    cfg = parse_config(MINIMAL + '\n[[plants]]\nid = "p2"\n[[plants.stacks]]\nid = "s1"\n')
    assert [(p.id, s.id) for p, s, _ in cfg.stack_specs()] == [("p1", "s1"), ("p2", "s1")]


def test_duplicate_plant_ids():
    msg = config_error(MINIMAL + "\n" + MINIMAL)
    assert "plants" in msg and "repeat" in msg and "p1" in msg


def test_no_plants():
    assert "plants: " in config_error('[mqtt]\nhost = "x"\n')
    assert "plants: " in config_error("plants = []\n")


def test_plant_without_stacks():
    assert "plants[0].stacks: " in config_error('[[plants]]\nid = "p1"\n')


def test_duplicate_tokens():
    text = MINIMAL + textwrap.dedent('''
        [[api.tokens]]
        token = "same-token"
        role = "operator"
        [[api.tokens]]
        token = "other-token"
        role = "admin"
        [[api.tokens]]
        token = "same-token"
        role = "regulator"
    ''')
    msg = config_error(text)
    assert "api.tokens: " in msg and "[2]" in msg and "repeats" in msg


def test_bad_token_role():
    msg = config_error(MINIMAL + '\n[[api.tokens]]\ntoken = "abcdefgh"\nrole = "root"\n')
    assert "api.tokens[0].role: " in msg
    assert "operator" in msg and "regulator" in msg


@pytest.mark.parametrize("role", ["operator", "regulator", "gateway", "admin"])
def test_good_token_roles(role):
    assert parse_config(MINIMAL + f'\n[[api.tokens]]\ntoken = "abcdefgh"\nrole = "{role}"\n').api.tokens[0].role == role


def test_token_shorter_than_8_characters():
    msg = config_error(MINIMAL + '\n[[api.tokens]]\ntoken = "abcdefg"\nrole = "admin"\n')
    assert "api.tokens[0].token: " in msg and "8" in msg


def test_token_of_exactly_8_characters():
    assert parse_config(MINIMAL + '\n[[api.tokens]]\ntoken = "abcdefgh"\nrole = "admin"\n').api.tokens


@pytest.mark.parametrize(("text", "key"), [
    ('[[plants]]\nid = "Wusha"\n[[plants.stacks]]\nid = "u1"\n', "plants[0].id"),
    ('[[plants]]\nid = "wusha"\n[[plants.stacks]]\nid = "U1"\n', "plants[0].stacks[0].id"),
    ('[[plants]]\nid = "wu sha"\n[[plants.stacks]]\nid = "u1"\n', "plants[0].id"),
    (f'[[plants]]\nid = "{"a" * 65}"\n[[plants.stacks]]\nid = "u1"\n', "plants[0].id"),
    ('[[plants]]\nid = ""\n[[plants.stacks]]\nid = "u1"\n', "plants[0].id"),
])
def test_bad_id_pattern(text, key):
    msg = config_error(text)
    assert f"{key}: " in msg and "pattern" in msg


def test_id_of_64_characters_accepted():
    assert parse_config(f'[[plants]]\nid = "{"a" * 64}"\n[[plants.stacks]]\nid = "u_1-x"\n').plants[0].id == "a" * 64


@pytest.mark.parametrize("text", ['[mqtt\nport = 1\n', "x = = 1\n", '[[plants]]\nid = "p1\n', MINIMAL + MINIMAL[:12]])
def test_invalid_toml(text):
    msg = config_error(text, source="cems.toml")
    assert msg.startswith("cems.toml: not valid TOML")


def test_hj212_device_for_an_unknown_stack():
    msg = config_error(MINIMAL + '\n[hj212]\n[[hj212.devices]]\nmn = "1"\nplant = "p1"\nstack = "s9"\n')
    assert "hj212.devices[0]" in msg and "unknown plant/stack" in msg and "p1/s9" in msg


def test_hj212_device_for_an_unknown_plant():
    text = MINIMAL + textwrap.dedent('''
        [hj212]
        [[hj212.devices]]
        mn = "1"
        plant = "p1"
        stack = "s1"
        [[hj212.devices]]
        mn = "2"
        plant = "p9"
        stack = "s1"
    ''')
    msg = config_error(text)
    assert "hj212.devices[1]" in msg and "p9/s1" in msg


def test_hj212_bad_sm4_key():
    text = MINIMAL + '\n[hj212]\n[[hj212.devices]]\nmn = "1"\nplant = "p1"\nstack = "s1"\nsm4_key = "xyz"\n'
    assert "hj212.devices[0].sm4_key: " in config_error(text)


def test_every_error_is_reported():
    msg = config_error("[mqtt]\nport = 0\n" + with_stack("area_m2 = -1", plant_extra="foo = 1"))
    assert "mqtt.port: " in msg and "plants[0].foo: unknown key" in msg and "plants[0].stacks[1].area_m2: " in msg


@pytest.mark.parametrize(("extra", "key"), [
    ("area_m2 = inf", "area_m2"),
    ("area_m2 = 1\nkv = inf", "kv"),
    ("calibration = { co2_pct = [0, nan] }", "calibration"),
    ("calibration = { co2_pct = [nan, 1] }", "calibration"),
])
def test_non_finite_numbers_refused(extra, key):
    """A NaN slope passes the `b == 0` check yet makes every calibrated value NaN; an infinite area or Kv
    makes every flow infinite. Both should be refused at start-up with the key named."""
    assert f"plants[0].stacks[1].{key}" in config_error(with_stack(extra))


# --- tokens for plants this instance does not serve ---------------------------------------------------


def test_tokens_may_name_plants_not_in_the_config():
    text = MINIMAL + textwrap.dedent('''
        [[api.tokens]]
        token = "operator-a"
        role = "operator"
        plants = ["p1", "zhuhai", "anshan"]
        [[api.tokens]]
        token = "operator-b"
        role = "operator"
        plants = ["*", "zhuhai"]
        [[api.tokens]]
        token = "regulator"
        role = "regulator"
    ''')
    cfg = parse_config(text)
    assert cfg.unknown_token_plants() == ["anshan", "zhuhai"]


# --- storage.data_dir and load_config -----------------------------------------------------------------


def test_relative_data_dir_resolved_against_base_dir(tmp_path):
    cfg = parse_config('[storage]\ndata_dir = "state/data"\n' + MINIMAL, base_dir=tmp_path)
    assert cfg.storage.data_dir == tmp_path / "state" / "data"


def test_resolving_a_relative_data_dir_keeps_the_other_storage_keys(tmp_path):
    cfg = parse_config('[storage]\ndata_dir = "d"\njournal_max_mb = 64\nspool_max_mb = 128\n' + MINIMAL,
                       base_dir=tmp_path)
    assert (cfg.storage.data_dir, cfg.storage.journal_max_mb, cfg.storage.spool_max_mb) == (tmp_path / "d", 64, 128)


def test_relative_data_dir_left_alone_without_base_dir():
    cfg = parse_config('[storage]\ndata_dir = "state"\n' + MINIMAL)
    assert cfg.storage.data_dir == Path("state")


def test_absolute_data_dir_kept(tmp_path):
    cfg = parse_config(f'[storage]\ndata_dir = "{tmp_path / "abs"}"\n' + MINIMAL, base_dir=Path("/elsewhere"))
    assert cfg.storage.data_dir == tmp_path / "abs"


def test_load_config_resolves_data_dir_against_the_file(tmp_path, monkeypatch):
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    (conf_dir / "cems.toml").write_text('[storage]\ndata_dir = "data"\n' + MINIMAL, encoding="utf-8")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(conf_dir / "cems.toml")
    assert cfg.storage.data_dir == conf_dir.resolve() / "data"
    assert cfg.storage.data_dir.is_absolute()


def test_load_config_default_data_dir_is_beside_the_file(tmp_path):
    path = tmp_path / "cems.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    assert load_config(str(path)).storage.data_dir == tmp_path.resolve() / "var" / "data"


def test_load_config_from_cems_config(tmp_path, monkeypatch):
    path = tmp_path / "from-env.toml"
    path.write_text(FULL, encoding="utf-8")
    monkeypatch.setenv("CEMS_CONFIG", str(path))
    cfg = load_config()
    assert [p.id for p in cfg.plants] == ["wusha", "rotterdam"]


def test_explicit_path_wins_over_cems_config(tmp_path, monkeypatch):
    path = tmp_path / "explicit.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    monkeypatch.setenv("CEMS_CONFIG", str(tmp_path / "missing.toml"))
    assert load_config(path).plants[0].id == "p1"


@pytest.mark.parametrize("env", [None, ""])
def test_load_config_without_path_or_env(monkeypatch, env):
    if env is None:
        monkeypatch.delenv("CEMS_CONFIG", raising=False)
    else:
        monkeypatch.setenv("CEMS_CONFIG", env)
    with pytest.raises(ConfigError) as info:
        load_config()
    assert "CEMS_CONFIG" in str(info.value) and "--config" in str(info.value)


def test_load_config_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg and "cannot read" in msg


def test_load_config_missing_file_named_by_cems_config(tmp_path, monkeypatch):
    path = tmp_path / "gone.toml"
    monkeypatch.setenv("CEMS_CONFIG", str(path))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config()


def test_load_config_directory(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


def test_load_config_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(with_stack("area_m2 = -1"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: plants[0].stacks[1].area_m2: ")


def test_load_config_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[[plants]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: not valid TOML")


def test_load_config_file_not_utf8(tmp_path):
    """TOML is UTF-8; a Latin-1 file must give a ConfigError naming the file, not a UnicodeDecodeError."""
    path = tmp_path / "latin1.toml"
    path.write_bytes(MINIMAL.replace('id = "p1"', 'id = "p1"\nname = "Düsseldorf"').encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_load_config_utf8_names(tmp_path):
    path = tmp_path / "utf8.toml"
    path.write_text(MINIMAL.replace('id = "p1"', 'id = "p1"\nname = "乌沙电厂"'), encoding="utf-8")
    assert load_config(path).plants[0].display_name == "乌沙电厂"


def test_nan_range_refused_and_open_range_accepted():
    assert "plants[0].stacks[1].ranges: " in config_error(with_stack("ranges = { co2_pct = [nan, 1] }"))
    stack = parse_config(with_stack("ranges = { co2_pct = [0, inf] }")).plants[0].stacks[1]
    assert stack.ranges["co2_pct"] == (0.0, math.inf)


def test_velocity_flow_must_be_actual_wet():
    msg = config_error(with_stack('area_m2 = 20.0\nflow_basis = "std_dry"'))
    assert "plants[0].stacks[1]" in msg and "actual_wet" in msg


def test_every_config_key_is_in_the_configuration_reference():
    """docs/configuration.md names every key the config models accept."""
    import re

    from pydantic import BaseModel

    from cems import config as C

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    named = set(re.findall(r"`(?:[a-z_]+\[\]\.)?([a-z0-9_]+)`", doc))
    sections = {"plants", "stacks", "tokens", "mqtt", "influx", "api", "storage", "hj212", "devices"}
    missing = [f"{name}.{f}" for name, cls in vars(C).items()
               if isinstance(cls, type) and issubclass(cls, BaseModel) and cls.__module__ == C.__name__
               for f in cls.model_fields if f not in named and f not in sections]
    assert not missing, f"not in docs/configuration.md: {missing}"


# --- TLS to the broker and the database ----------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from tests.tlscerts import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


def test_tls_is_off_by_default():
    from cems.config import tls_context

    cfg = parse_config(MINIMAL)
    assert tls_context(cfg.mqtt) is None and tls_context(cfg.influx) is None


def test_tls_files_are_relative_to_the_config_file_and_verify_the_server(tmp_path, pki):
    import shutil
    import ssl

    from cems.config import tls_context

    (tmp_path / "certs").mkdir()
    for f in (pki.ca, pki.client_cert, pki.client_key):
        shutil.copy(f, tmp_path / "certs" / f.name)
    (tmp_path / "cems.toml").write_text(
        '[mqtt]\nport = 8883\ntls = true\nca_file = "certs/ca.crt"\ncert_file = "certs/client.crt"\n'
        'key_file = "certs/client.key"\n\n[influx]\nurl = "https://db.example:8086"\nca_file = "certs/ca.crt"\n'
        + MINIMAL)
    cfg = load_config(tmp_path / "cems.toml")
    assert cfg.mqtt.ca_file == tmp_path.resolve() / "certs" / "ca.crt"
    assert cfg.influx.ca_file == tmp_path.resolve() / "certs" / "ca.crt"
    assert cfg.mqtt.key_file == tmp_path.resolve() / "certs" / "client.key"
    for section in (cfg.mqtt, cfg.influx):
        ctx = tls_context(section)
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
        assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "test CA"),),)]


def test_tls_without_a_ca_file_trusts_the_system_cas():
    from cems.config import tls_context

    ctx = tls_context(parse_config('[mqtt]\ntls = true\n\n[influx]\nurl = "HTTPS://db:8086"\n' + MINIMAL).mqtt)
    assert ctx is not None and ctx.check_hostname


def test_tls_verify_hostname_off_still_verifies_the_chain(pki):
    import ssl

    from cems.config import tls_context

    cfg = parse_config(f'[mqtt]\ntls = true\nca_file = "{pki.ca}"\ntls_verify_hostname = false\n' + MINIMAL)
    ctx = tls_context(cfg.mqtt)
    assert not ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize("section, text, problem", [
    ("mqtt", 'ca_file = "/etc/ssl/ca.crt"', "mqtt: ca_file set without TLS: set tls = true"),
    ("mqtt", "tls_verify_hostname = false", "mqtt: tls_verify_hostname set without TLS"),
    ("influx", 'ca_file = "/etc/ssl/ca.crt"', "influx: ca_file set without TLS: they apply to an https:// url"),
    ("mqtt", 'tls = true\nkey_file = "/k.pem"', "mqtt: key_file set without cert_file"),
])
def test_tls_keys_where_they_cannot_apply_are_errors(section, text, problem):
    assert problem in config_error(f"[{section}]\n{text}\n" + MINIMAL)


@pytest.mark.parametrize("section, head", [("mqtt", "tls = true"), ("influx", 'url = "https://db:8086"')])
def test_a_missing_ca_file_is_a_config_error_naming_the_key(tmp_path, section, head):
    msg = config_error(f'[{section}]\n{head}\nca_file = "{tmp_path}/none.crt"\n' + MINIMAL)
    assert f"{section}.ca_file {tmp_path}/none.crt: not a readable PEM CA certificate" in msg


def test_a_ca_file_that_is_not_pem_is_a_config_error(tmp_path):
    (tmp_path / "ca.crt").write_text("not a certificate\n")
    assert "mqtt.ca_file" in config_error(f'[mqtt]\ntls = true\nca_file = "{tmp_path}/ca.crt"\n' + MINIMAL)


def test_a_client_key_not_matching_its_certificate_is_a_config_error(pki):
    msg = config_error(f'[mqtt]\ntls = true\ncert_file = "{pki.client_cert}"\nkey_file = "{pki.server_key}"\n'
                       + MINIMAL)
    assert f"mqtt.cert_file {pki.client_cert} / key_file {pki.server_key}: not a matching" in msg


def test_a_bucket_alone_names_the_database_an_explicit_database_wins():
    assert parse_config('[influx]\ntoken = "t"\nbucket = "plant-b"\n' + MINIMAL).influx.database == "plant-b"
    both = parse_config('[influx]\ntoken = "t"\nbucket = "plant-b"\ndatabase = "mapped"\n' + MINIMAL).influx
    assert (both.database, both.bucket) == ("mapped", "plant-b")
    assert parse_config(MINIMAL).influx.database == "cems"


def test_check_config_says_what_it_will_connect_to(tmp_path, capsys, pki):
    from cems.cli import main

    path = tmp_path / "c.toml"
    path.write_text(f'[mqtt]\nhost = "b.example"\nport = 8883\ntls = true\nca_file = "{pki.ca}"\n\n'
                    '[influx]\nurl = "https://db.example:8086/"\ndatabase = "plant"\n' + MINIMAL)
    assert main(["check-config", "--config", str(path)]) == 0
    assert capsys.readouterr().out == ("ok: 1 plant(s), 1 stack(s), 0 token(s); broker mqtts://b.example:8883, "
                                       "database https://db.example:8086 (plant)\n")
