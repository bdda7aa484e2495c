"""Numeric core: pure functions over NumPy arrays, jitted with numba, with plain NumPy references.

Nothing in this package does I/O, reads a clock or imports another carbon-cems package.
"""
