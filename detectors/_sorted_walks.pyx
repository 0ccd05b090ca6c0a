# cython: boundscheck=False, wraparound=False, initializedcheck=False
"""Single passes over two sorted arrays, for the two places a window's verdict does this.

- `ks_extremes`: the two-sample Kolmogorov–Smirnov extremes as `detectors._ks` reads them with
  four binary searches per value; here one merge walk (n + m steps instead of 4n·log m, and
  no temporary arrays). The counts and the floating-point operations on them are the same, so
  the result is the same number.
- `merge_disjoint`: the union of two reservoirs (sorted unique keys, a row each) cut at
  `size` rows, each row copied once to its place; numpy's fancy-index scatter of wide rows
  cost a millisecond a window while an embedding reference grew.

`detectors._ks` and `detectors.reservoir` fall back to numpy when this module was not built
(`LOOKOUT_PURE_PYTHON=1`); the tests compare both on random inputs.
"""

from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy


def ks_extremes(const double[::1] a, const double[::1] b):
    """(max of F_a − F_b at the values of a, right-continuous; max of F_b − F_a just before
    them) for `a`, `b` sorted ascending, non-empty, without NaN."""
    cdef Py_ssize_t n = a.shape[0], m = b.shape[0]
    cdef Py_ssize_t i = 0, end, below = 0, at_or_below = 0
    cdef double x, rise, fall
    cdef double dn = <double>n, dm = <double>m
    cdef double rises = -2.0, falls = -2.0
    with nogil:
        while i < n:
            x = a[i]
            end = i + 1
            while end < n and a[end] == x:  # a run of ties in a: one value of the CDF
                end += 1
            while below < m and b[below] < x:
                below += 1
            if at_or_below < below:
                at_or_below = below
            while at_or_below < m and b[at_or_below] <= x:
                at_or_below += 1
            rise = <double>end / dn - <double>at_or_below / dm
            fall = <double>below / dm - <double>i / dn
            if rise > rises:
                rises = rise
            if fall > falls:
                falls = fall
            i = end
    return rises, falls


def merge_disjoint(
    const uint64_t[::1] a_keys,
    const uint8_t[:, ::1] a_rows,
    const uint64_t[::1] b_keys,
    const uint8_t[:, ::1] b_rows,
    uint64_t[::1] keys,
    uint8_t[:, ::1] rows,
):
    """Fill `keys` / `rows` (len(keys) of them) with the smallest keys of a ∪ b and their rows;
    -1, with the outputs partly written, as soon as a key is in both (the caller takes the
    general path), else the number written."""
    cdef Py_ssize_t size = keys.shape[0], width = rows.shape[1]
    cdef Py_ssize_t na = a_keys.shape[0], nb = b_keys.shape[0]
    cdef Py_ssize_t i = 0, j = 0, k = 0
    cdef bint shared = False
    with nogil:
        while k < size and (i < na or j < nb):
            if j >= nb or (i < na and a_keys[i] < b_keys[j]):
                keys[k] = a_keys[i]
                if width:
                    memcpy(&rows[k, 0], &a_rows[i, 0], width)
                i += 1
            elif i >= na or b_keys[j] < a_keys[i]:
                keys[k] = b_keys[j]
                if width:
                    memcpy(&rows[k, 0], &b_rows[j, 0], width)
                j += 1
            else:
                shared = True
                break
            k += 1
    return -1 if shared else k
