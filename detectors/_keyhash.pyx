# cython: boundscheck=False, wraparound=False
"""SipHash-2-4 of request ids, the keys pandas' `hash_array(..., categorize=False)` gives, and
the hash set a window keeps them in (`KeySet`, at the end).

The stored reservoir keys were made with pandas; computing the same 64-bit values here lets a
replay or a worker start without importing pandas (a quarter of a second at every start-up).
`detectors.reservoir` checks this against pandas in the tests and falls back to pandas when the
module was not built (`LOOKOUT_PURE_PYTHON=1`).
Source: J.-P. Aumasson and D. J. Bernstein, "SipHash: a fast short-input PRF" (2012).
"""

from libc.stdint cimport uint8_t, uint64_t
from cpython.unicode cimport PyUnicode_Check
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

import numpy as np


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except? NULL


cdef inline uint64_t _rotl(uint64_t x, int b) noexcept nogil:
    return (x << b) | (x >> (64 - b))


cdef inline uint64_t _le64(const uint8_t* p) noexcept nogil:
    return (<uint64_t>p[0] | (<uint64_t>p[1] << 8) | (<uint64_t>p[2] << 16)
            | (<uint64_t>p[3] << 24) | (<uint64_t>p[4] << 32) | (<uint64_t>p[5] << 40)
            | (<uint64_t>p[6] << 48) | (<uint64_t>p[7] << 56))


cdef inline void _rounds(uint64_t* v, int count) noexcept nogil:
    """`count` SipRounds on the state v[0..3]."""
    cdef int r
    for r in range(count):
        v[0] += v[1]; v[1] = _rotl(v[1], 13); v[1] ^= v[0]; v[0] = _rotl(v[0], 32)
        v[2] += v[3]; v[3] = _rotl(v[3], 16); v[3] ^= v[2]
        v[0] += v[3]; v[3] = _rotl(v[3], 21); v[3] ^= v[0]
        v[2] += v[1]; v[1] = _rotl(v[1], 17); v[1] ^= v[2]; v[2] = _rotl(v[2], 32)


cdef uint64_t _siphash24(const uint8_t* data, Py_ssize_t length, uint64_t k0, uint64_t k1) noexcept nogil:
    cdef uint64_t v[4]
    v[0] = 0x736f6d6570736575ULL ^ k0
    v[1] = 0x646f72616e646f6dULL ^ k1
    v[2] = 0x6c7967656e657261ULL ^ k0
    v[3] = 0x7465646279746573ULL ^ k1
    cdef uint64_t b = (<uint64_t>length) << 56
    cdef uint64_t m
    cdef Py_ssize_t end = length - (length % 8)
    cdef Py_ssize_t i = 0
    cdef int left
    while i < end:
        m = _le64(data + i)
        v[3] ^= m
        _rounds(v, 2)
        v[0] ^= m
        i += 8
    left = <int>(length - end)
    while left > 0:
        left -= 1
        b |= (<uint64_t>data[end + left]) << (8 * left)
    v[3] ^= b
    _rounds(v, 2)
    v[0] ^= b
    v[2] ^= 0xff
    _rounds(v, 4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def siphash_strings(object values, bytes key):
    """SipHash-2-4 of each value's UTF-8 (str; bytes as they are; anything else as `str(x)`),
    keyed by the 16-byte `key`, as a uint64 array (before pandas' final bit mixing).

    Two passes: one with the GIL finds each value's bytes (for a str, its cached UTF-8, alive
    as long as the str, which `values` keeps alive), then the hashing runs without the GIL, so
    the thread that decodes a poll can hash its ids while the engine folds the previous one."""
    cdef Py_ssize_t n = len(values), i, size
    cdef const char* data
    cdef const uint8_t* k = <const uint8_t*>PyBytes_AS_STRING(key)
    cdef uint64_t k0, k1
    if PyBytes_GET_SIZE(key) != 16:
        raise ValueError("the SipHash key must be 16 bytes")
    k0 = _le64(k)
    k1 = _le64(k + 8)
    out = np.empty(n, dtype=np.uint64)
    cdef uint64_t[::1] keys = out
    addresses = np.empty(n, dtype=np.uintp)
    lengths = np.empty(n, dtype=np.intp)
    cdef size_t[::1] where = addresses
    cdef Py_ssize_t[::1] sizes = lengths
    cdef list made = []  # bytes made here (str(x), surrogates): alive until the hashing ends
    cdef bytes encoded
    cdef object[:] column = np.asarray(values, dtype=object)  # each item a pointer away
    for i in range(n):
        value = column[i]
        if isinstance(value, bytes):
            encoded = <bytes>value
        else:
            if not PyUnicode_Check(value):
                value = str(value)
                made.append(value)
            try:
                data = PyUnicode_AsUTF8AndSize(value, &size)
            except UnicodeEncodeError:  # lone surrogates: pandas encodes with "surrogatepass"
                encoded = (<str>value).encode("utf8", "surrogatepass")
            else:
                where[i] = <size_t>data
                sizes[i] = size
                continue
            made.append(encoded)
        where[i] = <size_t>PyBytes_AS_STRING(encoded)
        sizes[i] = PyBytes_GET_SIZE(encoded)
    with nogil:
        for i in range(n):
            keys[i] = _siphash24(<const uint8_t*>where[i], sizes[i], k0, k1)
    return out


# ------------------------------------------------------------------ a window's set of keys

from libc.stdlib cimport calloc, free


cdef inline Py_ssize_t _slot(uint64_t key, int shift) noexcept nogil:
    # Fibonacci hashing: the keys are SipHash values already, the multiply only spreads them
    # over the table's high bits whatever its size
    return <Py_ssize_t>((key * <uint64_t>0x9E3779B97F4A7C15) >> shift)


cdef class KeySet:
    """The 64-bit keys a window saw, in an open-addressing hash table (linear probing, at most
    half full). Key 0 marks an empty slot and is kept aside.

    `worker.window_state.SeenIds` uses it when it was built: a batch costs one probe per key,
    where keeping the keys sorted cost a sort of the batch, a binary search per key in each
    sorted run and a merge (a quarter of the engine's thread on 100-record Pub/Sub messages
    that all land in one window). The loops keep the GIL: a poll's keys take microseconds,
    and the GIL is what makes the table safe to share between threads. It takes 16 to 32 bytes a key against 8 (8 KiB at the least
    per window): 32 MiB for a window of a million ids at the worst.
    """

    cdef uint64_t *_table
    cdef Py_ssize_t _capacity
    cdef int _shift
    cdef Py_ssize_t _count
    cdef bint _has_zero

    def __cinit__(self) -> None:
        self._capacity = 0
        self._table = NULL
        self._count = 0
        self._has_zero = False
        self._grow_to(1024)

    def __dealloc__(self) -> None:
        free(self._table)

    def __len__(self) -> int:
        return self._count + self._has_zero

    cdef int _grow_to(self, Py_ssize_t capacity) except -1:
        cdef uint64_t *old = self._table
        cdef Py_ssize_t old_capacity = self._capacity, i, at
        cdef int shift = 64
        cdef Py_ssize_t c = 1
        while c < capacity:
            c <<= 1
            shift -= 1
        cdef uint64_t *table = <uint64_t *>calloc(c, sizeof(uint64_t))
        if table == NULL:
            raise MemoryError
        for i in range(old_capacity):
            if old[i]:
                at = _slot(old[i], shift)
                while table[at]:
                    at = (at + 1) & (c - 1)
                table[at] = old[i]
        self._table = table
        self._capacity = c
        self._shift = shift
        free(old)
        return 0

    cdef inline bint _insert(self, uint64_t key) noexcept nogil:
        """True if the key was not there (and is now)."""
        cdef Py_ssize_t at, mask = self._capacity - 1
        if key == 0:
            if self._has_zero:
                return False
            self._has_zero = True
            return True
        at = _slot(key, self._shift)
        while self._table[at]:
            if self._table[at] == key:
                return False
            at = (at + 1) & mask
        self._table[at] = key
        self._count += 1
        return True

    cdef inline bint _has(self, uint64_t key) noexcept nogil:
        cdef Py_ssize_t at, mask = self._capacity - 1
        if key == 0:
            return self._has_zero
        at = _slot(key, self._shift)
        while self._table[at]:
            if self._table[at] == key:
                return True
            at = (at + 1) & mask
        return False

    def remember_new(self, const uint64_t[::1] keys):
        """Add the keys in row order; per row, whether it was new (not seen before and the
        first row of its key here), or None when every row was."""
        cdef Py_ssize_t n = keys.shape[0], i, fresh = 0
        if 2 * (self._count + n) > self._capacity:
            self._grow_to(2 * (self._count + n))
        out = np.empty(n, dtype=np.bool_)
        cdef char[::1] out_v = out.view(np.int8)
        for i in range(n):
            out_v[i] = self._insert(keys[i])
            fresh += out_v[i]
        return None if fresh == n else out

    def contains(self, const uint64_t[::1] keys):
        """Per key, whether it was seen."""
        cdef Py_ssize_t n = keys.shape[0], i
        out = np.empty(n, dtype=np.bool_)
        cdef char[::1] out_v = out.view(np.int8)
        for i in range(n):
            out_v[i] = self._has(keys[i])
        return out
