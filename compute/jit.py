"""The house jit decorator: nopython, cached on disk, no fastmath (results must equal the reference)."""

import numba


def kernel(*args, **kwargs):
    """`numba.njit(cache=True)` with the house defaults; pass explicit signatures where useful."""
    kwargs.setdefault("cache", True)
    kwargs.setdefault("nogil", True)
    return numba.njit(*args, **kwargs)
