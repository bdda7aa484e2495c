"""One function per physical step of DESIGN §4 (china regime defaults), for scalars or arrays.

Each is jitted so kernels can call it; each works on NumPy arrays and plain floats alike.
"""

from .jit import kernel


@kernel
def actual_flow_from_velocity(velocity_ms, area_m2, kv):
    """Actual wet flue-gas flow [m3/h] from mean velocity.

    Parameters
    ----------
    velocity_ms : mean flue-gas velocity [m/s]
    area_m2 : stack cross-section at the measuring plane [m2]
    kv : velocity field coefficient [-]

    Notes
    -----
    ``Qs = 3600 * F * Kv * v`` (HJ 212-2017 App. D eq. 30; HJ 75-2017).
    """
    return 3600.0 * area_m2 * kv * velocity_ms


@kernel
def dry_standard_flow(qs_m3_h, temp_c, press_kpa, h2o_pct, t0_k, p0_kpa):
    """Dry flue-gas flow at standard conditions [m3/h].

    Parameters
    ----------
    qs_m3_h : actual wet flow [m3/h]
    temp_c : flue-gas temperature [degC]
    press_kpa : flue-gas absolute pressure [kPa]
    h2o_pct : moisture [% vol]
    t0_k : standard temperature [K] (273 in HJ 212-2017, 273.15 in the MRR)
    p0_kpa : standard pressure [kPa]

    Notes
    -----
    ``Qsn = Qs * T0 / (T0 + t) * P / P0 * (1 - Xsw)`` (HJ 212-2017 App. D eq. 31).
    """
    return qs_m3_h * t0_k / (t0_k + temp_c) * press_kpa / p0_kpa * (1.0 - h2o_pct / 100.0)


@kernel
def wet_standard_to_dry(qs_std_wet_m3_h, h2o_pct):
    """Dry standard flow [m3/h] from a flow already at standard conditions on a wet basis."""
    return qs_std_wet_m3_h * (1.0 - h2o_pct / 100.0)


@kernel
def co2_wet_to_dry(co2_wet_pct, h2o_pct):
    """CO2 on a dry basis [% vol] from a wet-basis reading: ``C_dry = C_wet / (1 - Xsw)`` (HJ 212-2017 eq. 19)."""
    return co2_wet_pct / (1.0 - h2o_pct / 100.0)


@kernel
def co2_mass_concentration(co2_dry_pct, density_kg_m3):
    """CO2 mass concentration [mg/m3] at standard dry conditions.

    Notes
    -----
    ``CQ = C% * 1e4 * M / Vm`` (HJ 212-2017 App. D eq. 20), with ``M / Vm = 44.01 / 22.4 kg/m3`` by
    default; 1 % vol = 1e4 ppm, and ppm x kg/m3 = mg/m3.
    """
    return co2_dry_pct * 1.0e4 * density_kg_m3


@kernel
def part75_co2_rate_short_tons_h(co2_wet_pct, q_scfh, k):
    """CO2 mass rate [short ton/h] = ``K * CO2w * Qh`` (40 CFR 75 App. F eq. F-11; K = 5.7e-7).

    For a dry CO2 analyser pass ``CO2d * (100 - H2O) / 100`` as `co2_wet_pct` (eq. F-2).
    """
    return k * co2_wet_pct * q_scfh


@kernel
def mass_rate_kg_h(cq_mg_m3, qsn_m3_h):
    """CO2 mass rate [kg/h] = ``CQ [mg/m3] * Qsn [m3/h] * 1e-6`` (HJ 212-2017 App. D eq. 33)."""
    return cq_mg_m3 * qsn_m3_h * 1.0e-6
