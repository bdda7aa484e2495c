"""Regulatory constants, each named once and cited.

Units are in the names. Kernels take these as arguments (numba freezes module globals at compile time).
"""

T0_K_CHINA = 273.0  # HJ 212-2017 App. D eq. 31 writes 273 K for standard temperature
T0_K_EU = 273.15  # EU 2018/2066 (MRR) Annex I: 273.15 K, 101.325 kPa
P0_KPA = 101.325  # standard pressure, HJ 212-2017 App. D eq. 31
M_CO2_OVER_VM = 44.01 / 22.4  # kg/m3: molar mass of CO2 over molar volume, HJ 212-2017 App. D eq. 20
HOUR_MIN_VALID_PCT_CHINA = 75  # % of operating minutes, HJ 75-2017 / HJ 212-2017 eq. 24 (45 of 60)
HOUR_MIN_VALID_PCT_EU = 80  # % of possible data points, MRR Art. 44(2)
MINUTE_MIN_SAMPLES = 12  # valid readings a minute needs at 5 s sampling (HJ 75-2017)
LATENESS_S = 2 * 3600  # default lateness window after an hour's end before it is final (DESIGN §5)
LOCK_AFTER_DAYS = 10  # Chinese correction deadline (DESIGN §5)
MAX_FUTURE_S = 300  # readings more than 5 minutes ahead of the service clock are rejected (DESIGN §3)
DAY_VALID_MEASURED_HOURS = 20  # of 24 operating hours, pro rata (DESIGN §4)

# US 40 CFR Part 75 (regime `us_part75`)
K_PART75 = 5.7e-7  # short ton CO2 / (scf x % CO2), 40 CFR 75 App. F eq. F-11
T0_K_US = 293.15  # 68 degF, 40 CFR 72.2 standard conditions
P0_KPA_US = 29.92 * 3.386389  # 29.92 inHg in kPa
SCF_PER_M3 = 35.31466672  # cubic feet per cubic metre
KG_PER_SHORT_TON = 907.18474
HOUR_MIN_VALID_PCT_US = 0  # Part 75 judges an hour by the quadrant rule (75.10(d)), not a share of minutes
# t CO2 per t carbon burnt, exactly as DESIGN §5 (and the accounting guidelines) write it. With today's
# molar masses it would be 44.0095 / 12.011 = 3.6641 (0.07 % less).
CO2_PER_C = 44 / 12
