"""The calculation method (DESIGN §5): CO2 from fuel data, for the CEMS-vs-calculation comparison."""

from .constants import CO2_PER_C


def fuel_co2_t(fuel_t: float, carbon_frac: float, oxidation: float) -> float:
    """CO2 by the calculation method [t].

    Parameters
    ----------
    fuel_t : fuel burnt [t]
    carbon_frac : carbon content of the fuel, mass fraction [-]
    oxidation : oxidation factor [-]

    Notes
    -----
    ``E = fuel_t * carbon_frac * oxidation * 44/12`` (DESIGN §5; China's accounting guideline for power
    generation, EU MRR Art. 46 corroborating calculation, with the emission factor from the carbon content).
    """
    return fuel_t * carbon_frac * oxidation * CO2_PER_C


def deviation_pct(cems_t: float, calculated_t: float | None) -> float | None:
    """(CEMS - calculated) / calculated x 100; None without a calculated figure or when it is 0."""
    if calculated_t is None or calculated_t == 0:
        return None
    return (cems_t - calculated_t) / calculated_t * 100.0
