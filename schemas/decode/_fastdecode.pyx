# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled fast path of the decoder: a whole poll of messages → columns, in one call.

A FAST PATH only. It reads the lines it fully understands (native records whose every field is
of the expected type, inside its bounds, written in the plain forms the Python decoder reads
the same way) and writes their columns directly, embeddings as float32. Every other line (any
doubt at all: a wire format it does not read yet, malformed JSON, a value out of range, a
timestamp in an unusual spelling, a duplicated key) is handed back by position, and the
Python decoder (`schemas.decode`), the reference and the only source of errors, decodes it.
When a line's fate depends on the rest of its message (a pretty-printed document, the
embedding width rule), the whole message is handed back. `schemas.decode.compiled` merges both.

Phase 1 (scan) walks every line with the GIL released: yyjson parses a private copy of each
record in place, so strings stay valid in that copy and only offsets are kept. Phase 2 turns
the kept values into numpy columns and Python strings, with the GIL.
"""

from libc.math cimport NAN, isinf, signbit
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, memset

import numpy as np

from schemas.decode.finish import canonical_finish_reason, finish_facts, response_block_reason
from schemas.decode.safety import CATEGORY_CACHE, normalise_category
from schemas.prediction_log import deterministic_request_id


cdef extern from "yyjson.h" nogil:
    ctypedef struct yyjson_doc:
        pass
    ctypedef struct yyjson_val:
        pass
    ctypedef struct yyjson_alc:
        pass
    ctypedef uint32_t yyjson_read_flag
    ctypedef struct yyjson_read_err:
        pass
    ctypedef struct yyjson_obj_iter:
        pass
    ctypedef struct yyjson_arr_iter:
        pass
    const yyjson_read_flag YYJSON_READ_INSITU
    yyjson_doc *yyjson_read_opts(char *dat, size_t len, yyjson_read_flag flg,
                                 const yyjson_alc *alc, yyjson_read_err *err)
    void yyjson_doc_free(yyjson_doc *doc)
    yyjson_val *yyjson_doc_get_root(yyjson_doc *doc)
    yyjson_val *yyjson_obj_getn(yyjson_val *obj, const char *key, size_t key_len)
    bint yyjson_is_null(yyjson_val *val)
    bint yyjson_is_true(yyjson_val *val)
    bint yyjson_is_false(yyjson_val *val)
    bint yyjson_is_uint(yyjson_val *val)
    bint yyjson_is_sint(yyjson_val *val)
    bint yyjson_is_real(yyjson_val *val)
    bint yyjson_is_str(yyjson_val *val)
    bint yyjson_is_arr(yyjson_val *val)
    bint yyjson_is_obj(yyjson_val *val)
    const char *yyjson_get_str(yyjson_val *val)
    size_t yyjson_get_len(yyjson_val *val)
    uint64_t yyjson_get_uint(yyjson_val *val)
    int64_t yyjson_get_sint(yyjson_val *val)
    double yyjson_get_real(yyjson_val *val)
    bint yyjson_obj_iter_init(yyjson_val *obj, yyjson_obj_iter *it)
    yyjson_val *yyjson_obj_iter_next(yyjson_obj_iter *it)
    yyjson_val *yyjson_obj_iter_get_val(yyjson_val *key)
    bint yyjson_arr_iter_init(yyjson_val *arr, yyjson_arr_iter *it)
    yyjson_val *yyjson_arr_iter_next(yyjson_arr_iter *it)
    yyjson_alc *yyjson_alc_dyn_new()
    void yyjson_alc_dyn_free(yyjson_alc *alc)

DEF PAD = 4  # YYJSON_PADDING_SIZE: zero bytes after each record for in-place parsing
DEF EXACT = 9007199254740992.0  # 2**53: integers above it are left to the reference

# ---------------------------------------------------------------- what phase 1 keeps

cdef struct Span:
    Py_ssize_t off  # into the private copy; -1 = absent / null
    Py_ssize_t len

cdef enum:
    S_REQUEST_ID, S_MODEL, S_MODEL_VERSION, S_BLOCK_REASON, S_FINISH, S_ERROR, S_TRACE, S_SPAN,
    N_SPANS

cdef enum:
    D_TS, D_LATENCY, D_TTFT, D_TIN, D_TOUT, D_CITATIONS, D_RESPLEN, N_DOUBLES

cdef struct Row:
    int64_t msg
    int64_t line
    double d[N_DOUBLES]
    Span s[N_SPANS]
    uint8_t blocked
    uint8_t stage  # 0 none, 1 prompt, 2 response
    uint8_t provider  # 0 none, 1 Gemini, 2 OpenAI, 3 PaLM body, 4 OTLP span (blocks: own words)
    Py_ssize_t rec_off  # the stripped record in the message's own bytes (for hashed ids)
    Py_ssize_t rec_len
    Py_ssize_t emb_off  # into the float buffer; emb_len 0 = no embedding
    Py_ssize_t emb_len
    Py_ssize_t sc_off  # into the score buffer
    Py_ssize_t sc_n

cdef struct Score:
    Span key
    double value
    uint8_t provider  # a provider's category name, normalised in phase 2 (max per category)

cdef struct Fallback:
    int64_t msg
    int64_t line
    Py_ssize_t start  # the raw line in the message's bytes
    Py_ssize_t end
    int kind  # LINE_OTHER (valid JSON on its own) or LINE_UNREAD

cdef struct Out:
    Row *rows
    Py_ssize_t n_rows, cap_rows
    Score *scores
    Py_ssize_t n_scores, cap_scores
    float *floats
    Py_ssize_t n_floats, cap_floats
    Fallback *falls
    Py_ssize_t n_falls, cap_falls
    char *copy  # every record, each followed by PAD zero bytes
    Py_ssize_t n_copy, cap_copy

cdef int grow(void **buf, Py_ssize_t *cap, Py_ssize_t need, size_t item) noexcept nogil:
    cdef Py_ssize_t new_cap
    cdef void *p
    if need <= cap[0]:
        return 0
    new_cap = max(need, cap[0] * 2, 64)
    p = realloc(buf[0], new_cap * item)
    if p == NULL:
        return -1
    buf[0] = p
    cap[0] = new_cap
    return 0

# ---------------------------------------------------------------- field names

cdef enum:
    F_UNKNOWN = -1
    F_REQUEST_ID, F_TIMESTAMP, F_MODEL, F_MODEL_VERSION, F_ENDPOINT, F_TENANT, F_LABELS,
    F_LATENCY, F_TTFT, F_TIN, F_TOUT, F_BLOCKED, F_BLOCK_STAGE, F_BLOCK_REASON,
    F_SAFETY, F_FINISH, F_CITATIONS, F_PROMPT, F_RESPONSE, F_EMBEDDING, F_ERROR,
    F_OTHER_FORMAT,  # a field of another wire format: not read here
    F_BODY  # an envelope's response_body

#: envelope fields a body also supplies (the envelope's win): with a body, left to Python
cdef uint32_t BODY_FACTS = (
    (1 << F_TIN) | (1 << F_TOUT) | (1 << F_BLOCKED) | (1 << F_BLOCK_STAGE)
    | (1 << F_BLOCK_REASON) | (1 << F_SAFETY) | (1 << F_FINISH) | (1 << F_CITATIONS)
    | (1 << F_RESPONSE) | (1 << F_ERROR)
)

cdef inline bint is_key(const char *k, size_t n, const char *name, size_t m) noexcept nogil:
    return n == m and memcmp(k, name, m) == 0

cdef int field_of(const char *k, size_t n) noexcept nogil:
    if is_key(k, n, b"request_id", 10): return F_REQUEST_ID
    if is_key(k, n, b"timestamp", 9): return F_TIMESTAMP
    if is_key(k, n, b"model", 5): return F_MODEL
    if is_key(k, n, b"model_version", 13): return F_MODEL_VERSION
    if is_key(k, n, b"endpoint", 8): return F_ENDPOINT
    if is_key(k, n, b"tenant", 6): return F_TENANT
    if is_key(k, n, b"labels", 6): return F_LABELS
    if is_key(k, n, b"latency_ms", 10): return F_LATENCY
    if is_key(k, n, b"time_to_first_token_ms", 22): return F_TTFT
    if is_key(k, n, b"input_tokens", 12): return F_TIN
    if is_key(k, n, b"output_tokens", 13): return F_TOUT
    if is_key(k, n, b"blocked", 7): return F_BLOCKED
    if is_key(k, n, b"block_stage", 11): return F_BLOCK_STAGE
    if is_key(k, n, b"block_reason", 12): return F_BLOCK_REASON
    if is_key(k, n, b"safety_scores", 13): return F_SAFETY
    if is_key(k, n, b"finish_reason", 13): return F_FINISH
    if is_key(k, n, b"citation_count", 14): return F_CITATIONS
    if is_key(k, n, b"prompt", 6): return F_PROMPT
    if is_key(k, n, b"response", 8): return F_RESPONSE
    if is_key(k, n, b"embedding", 9): return F_EMBEDDING
    if is_key(k, n, b"error", 5): return F_ERROR
    if is_key(k, n, b"response_body", 13):
        return F_BODY
    if (is_key(k, n, b"jsonPayload", 11)
            or is_key(k, n, b"insertId", 8) or is_key(k, n, b"resourceSpans", 13)
            or is_key(k, n, b"candidates", 10) or is_key(k, n, b"choices", 7)
            or is_key(k, n, b"predictions", 11)):
        return F_OTHER_FORMAT
    return F_UNKNOWN

# ---------------------------------------------------------------- values

cdef Py_ssize_t chars_of(const char *p, size_t n) noexcept nogil:
    """Characters of a UTF-8 string, or -1 if it holds an encoded surrogate (left to Python)."""
    cdef size_t i
    cdef Py_ssize_t count = 0
    cdef unsigned char c
    for i in range(n):
        c = <unsigned char>p[i]
        if (c & 0xC0) != 0x80:
            count += 1
            if c == 0xED and i + 1 < n and (<unsigned char>p[i + 1]) >= 0xA0:
                return -1
    return count

cdef inline int span_of(yyjson_val *v, const char *base, Span *out, bint nullable) noexcept nogil:
    """A string (or null) → its span in the copy; -1 if it is anything else."""
    if yyjson_is_str(v):
        if chars_of(yyjson_get_str(v), yyjson_get_len(v)) < 0:
            return -1
        out.off = yyjson_get_str(v) - base
        out.len = <Py_ssize_t>yyjson_get_len(v)
        return 0
    if nullable and yyjson_is_null(v):
        out.off = -1
        return 0
    return -1

cdef inline int number_of(yyjson_val *v, double *out) noexcept nogil:
    """A non-negative JSON number as msgspec reads a float field; -1 when in any doubt."""
    cdef double x
    if yyjson_is_uint(v):
        if <double>yyjson_get_uint(v) > EXACT:
            return -1
        out[0] = <double>yyjson_get_uint(v)
        return 0
    if yyjson_is_real(v):
        x = yyjson_get_real(v)
        if not (x >= 0.0) or (x == 0.0 and signbit(x)):
            return -1
        out[0] = x
        return 0
    return -1

cdef inline int count_of(yyjson_val *v, double *out) noexcept nogil:
    """A non-negative JSON integer (null → NaN); -1 when in any doubt."""
    if yyjson_is_null(v):
        out[0] = NAN
        return 0
    if yyjson_is_uint(v) and <double>yyjson_get_uint(v) <= EXACT:
        out[0] = <double>yyjson_get_uint(v)
        return 0
    return -1

cdef inline int digits(const char *p, int n, int *out) noexcept nogil:
    cdef int i, v = 0
    for i in range(n):
        if p[i] < 48 or p[i] > 57:
            return -1
        v = v * 10 + (p[i] - 48)
    out[0] = v
    return 0

cdef int64_t days_from_civil(int64_t y, int64_t m, int64_t d) noexcept nogil:
    # Howard Hinnant's days_from_civil: days since 1970-01-01 of a proleptic Gregorian date
    y -= m <= 2
    cdef int64_t era = (y if y >= 0 else y - 399) // 400
    cdef int64_t yoe = y - era * 400
    cdef int64_t doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    cdef int64_t doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468

cdef int timestamp_of(const char *p, size_t n, double *out) noexcept nogil:
    """`YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|±HH:MM)` → seconds since the epoch, as
    `datetime.timestamp()` computes them (microseconds / 10**6, one correctly rounded division).
    Any other spelling, and any date msgspec might judge differently, is left to the reference.
    """
    cdef int y, mo, d, h, mi, s, us = 0, oh, om, k, i
    cdef int64_t total
    cdef int mdays[13]
    if n < 20 or digits(p, 4, &y) or p[4] != 45 or digits(p + 5, 2, &mo) or p[7] != 45:
        return -1
    if digits(p + 8, 2, &d) or p[10] != 84 or digits(p + 11, 2, &h) or p[13] != 58:
        return -1
    if digits(p + 14, 2, &mi) or p[16] != 58 or digits(p + 17, 2, &s):
        return -1
    i = 19
    if p[i] == 46:  # '.'
        k = 0
        i += 1
        while i < <int>n and 48 <= p[i] <= 57:
            if k == 6:
                return -1
            us = us * 10 + (p[i] - 48)
            k += 1
            i += 1
        if k == 0:
            return -1
        while k < 6:
            us *= 10
            k += 1
    if i == <int>n - 1 and p[i] == 90:  # 'Z'
        oh = 0
        om = 0
    elif i == <int>n - 6 and (p[i] == 43 or p[i] == 45) and p[i + 3] == 58:
        if digits(p + i + 1, 2, &oh) or digits(p + i + 4, 2, &om) or oh > 23 or om > 59:
            return -1
        if p[i] == 45:
            oh = -oh
            om = -om
    else:
        return -1
    if y < 1971 or y > 9998 or mo < 1 or mo > 12 or h > 23 or mi > 59 or s > 59:
        return -1
    mdays[:] = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0:
        mdays[2] = 29
    if d < 1 or d > mdays[mo]:
        return -1
    total = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - oh * 3600 - om * 60
    out[0] = <double>(total * 1000000 + us) / 1e6
    return 0

# ---------------------------------------------------------------- one record

cdef int read_embedding(yyjson_val *v, Out *o, Row *row) noexcept nogil:
    cdef yyjson_arr_iter it
    cdef yyjson_val *x
    cdef double f
    cdef Py_ssize_t start = o.n_floats
    if yyjson_is_null(v):
        return 0
    if not yyjson_is_arr(v) or not yyjson_arr_iter_init(v, &it):
        return -1
    while True:
        x = yyjson_arr_iter_next(&it)
        if x == NULL:
            break
        if yyjson_is_real(x):
            f = yyjson_get_real(x)
        elif yyjson_is_uint(x):
            f = <double>yyjson_get_uint(x)
            if f > EXACT:
                return -1
        elif yyjson_is_sint(x):
            f = <double>yyjson_get_sint(x)
            if f < -EXACT:
                return -1
        else:
            return -1
        if f == 0.0 and (signbit(f) or yyjson_is_sint(x)):
            return -1  # how each side spells a negative zero is not worth the doubt
        if o.n_floats == o.cap_floats and grow(<void **>&o.floats, &o.cap_floats,
                                               o.n_floats + 1, sizeof(float)):
            return -1
        o.floats[o.n_floats] = <float>f
        if isinf(o.floats[o.n_floats]):
            return -1  # too large for float32: numpy warns there, so the reference decides
        o.n_floats += 1
    if o.n_floats == start:
        return -1  # `[]` is an error the reference words
    row.emb_off = start
    row.emb_len = o.n_floats - start
    return 0

cdef int read_scores(yyjson_val *v, Out *o, Row *row, const char *base) noexcept nogil:
    cdef yyjson_obj_iter it
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef double f
    cdef Py_ssize_t j
    cdef Score *sc
    row.sc_off = o.n_scores
    if yyjson_is_null(v):
        return 0
    if not yyjson_is_obj(v) or not yyjson_obj_iter_init(v, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            break
        x = yyjson_obj_iter_get_val(k)
        if number_of(x, &f) or f > 1.0:
            return -1
        if grow(<void **>&o.scores, &o.cap_scores, o.n_scores + 1, sizeof(Score)):
            return -1
        sc = &o.scores[o.n_scores]
        if span_of(k, base, &sc.key, False):
            return -1
        for j in range(row.sc_off, o.n_scores):  # a repeated category: left to the reference
            if o.scores[j].key.len == sc.key.len and memcmp(
                base + o.scores[j].key.off, base + sc.key.off, sc.key.len
            ) == 0:
                return -1
        sc.value = f
        sc.provider = 0
        o.n_scores += 1
    row.sc_n = o.n_scores - row.sc_off
    return 0

cdef int read_labels(yyjson_val *v) noexcept nogil:
    cdef yyjson_obj_iter it
    cdef yyjson_val *k
    cdef yyjson_val *x
    if yyjson_is_null(v):
        return 0
    if not yyjson_is_obj(v) or not yyjson_obj_iter_init(v, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            return 0
        x = yyjson_obj_iter_get_val(k)
        if not yyjson_is_str(x) or chars_of(yyjson_get_str(x), yyjson_get_len(x)) < 0:
            return -1
        if chars_of(yyjson_get_str(k), yyjson_get_len(k)) < 0:
            return -1

cdef int read_native(yyjson_val *root, Out *o, Row *row, const char *base,
                     double entry_ts, Span entry_id) noexcept nogil:
    """A native record or an envelope → `row`; -1 if anything is not plainly fine.

    `entry_ts` and `entry_id` are what a LogEntry around it supplies (NaN / off -1: none).
    """
    cdef yyjson_obj_iter it
    cdef yyjson_val *k
    cdef yyjson_val *v
    cdef int f, i
    cdef uint32_t seen = 0
    cdef Span tmp
    cdef Py_ssize_t n
    cdef yyjson_val *body = NULL
    for i in range(N_DOUBLES):
        row.d[i] = NAN
    for i in range(N_SPANS):
        row.s[i].off = -1
    row.blocked = 0
    row.stage = 0
    row.provider = 0
    row.emb_len = 0
    row.sc_n = 0
    row.sc_off = o.n_scores
    if not yyjson_is_obj(root) or not yyjson_obj_iter_init(root, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            break
        f = field_of(yyjson_get_str(k), yyjson_get_len(k))
        if f == F_UNKNOWN:
            continue
        if f == F_BODY and body == NULL:
            body = yyjson_obj_iter_get_val(k)
            continue
        if f == F_OTHER_FORMAT or f == F_BODY or seen & ((<uint32_t>1) << f):
            return -1
        seen |= (<uint32_t>1) << f
        v = yyjson_obj_iter_get_val(k)
        if f == F_REQUEST_ID or f == F_MODEL:
            i = S_REQUEST_ID if f == F_REQUEST_ID else S_MODEL
            if span_of(v, base, &row.s[i], f == F_REQUEST_ID):
                return -1
            if row.s[i].off >= 0:
                n = chars_of(base + row.s[i].off, row.s[i].len)
                if n < 1 or n > 256:
                    return -1
        elif f == F_TIMESTAMP:
            if not yyjson_is_str(v) or timestamp_of(
                yyjson_get_str(v), yyjson_get_len(v), &row.d[D_TS]
            ):
                return -1
        elif f == F_MODEL_VERSION:
            if span_of(v, base, &row.s[S_MODEL_VERSION], True):
                return -1
        elif f == F_BLOCK_REASON:
            if span_of(v, base, &row.s[S_BLOCK_REASON], True):
                return -1
        elif f == F_FINISH:
            if span_of(v, base, &row.s[S_FINISH], True):
                return -1
        elif f == F_ERROR:
            if span_of(v, base, &row.s[S_ERROR], True):
                return -1
        elif f == F_ENDPOINT or f == F_TENANT or f == F_PROMPT:
            if span_of(v, base, &tmp, True):
                return -1
        elif f == F_RESPONSE:
            if span_of(v, base, &tmp, True):
                return -1
            if tmp.off >= 0:
                row.d[D_RESPLEN] = <double>chars_of(base + tmp.off, tmp.len)
        elif f == F_LABELS:
            if read_labels(v):
                return -1
        elif f == F_LATENCY or f == F_TTFT:
            i = D_LATENCY if f == F_LATENCY else D_TTFT
            if not yyjson_is_null(v) and number_of(v, &row.d[i]):
                return -1
        elif f == F_TIN or f == F_TOUT or f == F_CITATIONS:
            i = D_TIN if f == F_TIN else (D_TOUT if f == F_TOUT else D_CITATIONS)
            if count_of(v, &row.d[i]):
                return -1
        elif f == F_BLOCKED:
            if yyjson_is_true(v):
                row.blocked = 1
            elif not (yyjson_is_false(v) or yyjson_is_null(v)):
                return -1
        elif f == F_BLOCK_STAGE:
            if yyjson_is_null(v):
                pass
            elif yyjson_is_str(v) and is_key(yyjson_get_str(v), yyjson_get_len(v), b"prompt", 6):
                row.stage = 1
            elif yyjson_is_str(v) and is_key(yyjson_get_str(v), yyjson_get_len(v), b"response", 8):
                row.stage = 2
            else:
                return -1
        elif f == F_SAFETY:
            if read_scores(v, o, row, base):
                return -1
        elif f == F_EMBEDDING:
            if read_embedding(v, o, row):
                return -1
    if row.d[D_TS] != row.d[D_TS]:
        row.d[D_TS] = entry_ts
    if row.s[S_REQUEST_ID].off < 0:
        row.s[S_REQUEST_ID] = entry_id
    # required: a timestamp and a model (their absence is an error the reference words)
    if row.d[D_TS] != row.d[D_TS] or row.s[S_MODEL].off < 0:
        return -1
    if body != NULL:
        # the envelope's own values win over the body's: only the plain case is read here
        if seen & BODY_FACTS:
            return -1
        if read_gemini(body, o, row, base) == 0:
            return 0
        o.n_scores = row.sc_off
        if read_openai(body, row, base) == 0:
            return 0
        return read_palm(body, o, row, base)
    return 0

# ---------------------------------------------------------------- a Cloud Logging LogEntry

cdef int read_record(yyjson_val *root, Out *o, Row *row, const char *base) noexcept nogil:
    """A top-level record: a LogEntry around a native record or envelope, or one of those."""
    cdef yyjson_obj_iter it
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef yyjson_val *payload = NULL
    cdef uint32_t seen = 0
    cdef const char *name
    cdef size_t n
    cdef Span none, insert_id
    cdef double ts = NAN
    none.off = -1
    insert_id.off = -1
    if not yyjson_is_obj(root) or not yyjson_obj_iter_init(root, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            break
        name = yyjson_get_str(k)
        n = yyjson_get_len(k)
        if is_key(name, n, b"jsonPayload", 11):
            if not known(&seen, 0):
                return -1
            payload = yyjson_obj_iter_get_val(k)
    if payload == NULL or yyjson_is_null(payload):
        x = yyjson_obj_getn(root, b"resourceSpans", 13)
        if x != NULL:
            return read_otlp(root, x, row, base)
        return read_native(root, o, row, base, NAN, none)
    # a LogEntry: besides its payload it may carry only its id, time and labels (all checked)
    yyjson_obj_iter_init(root, &it)
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            break
        name = yyjson_get_str(k)
        n = yyjson_get_len(k)
        x = yyjson_obj_iter_get_val(k)
        if is_key(name, n, b"jsonPayload", 11):
            continue
        if is_key(name, n, b"insertId", 8):
            if not known(&seen, 1) or span_of(x, base, &insert_id, True):
                return -1
        elif is_key(name, n, b"timestamp", 9):
            if not known(&seen, 2) or not yyjson_is_str(x):
                return -1
            if timestamp_of(yyjson_get_str(x), yyjson_get_len(x), &ts):
                return -1
        elif is_key(name, n, b"labels", 6):
            if not known(&seen, 3) or read_labels(x):
                return -1
        elif field_of(name, n) != F_UNKNOWN:
            return -1
    if insert_id.off >= 0 and insert_id.len == 0:
        insert_id.off = -1  # `insertId or None`
    return read_native(payload, o, row, base, ts, insert_id)

# ---------------------------------------------------------------- an OTLP span

cdef inline yyjson_val *only_item(yyjson_val *arr) noexcept nogil:
    """The one element of an array, else NULL."""
    cdef yyjson_arr_iter it
    cdef yyjson_val *x
    if arr == NULL or not yyjson_is_arr(arr) or not yyjson_arr_iter_init(arr, &it):
        return NULL
    x = yyjson_arr_iter_next(&it)
    if x == NULL or yyjson_arr_iter_next(&it) != NULL:
        return NULL
    return x

cdef yyjson_val *only_member(yyjson_val *obj, const char *name, size_t n) noexcept nogil:
    """`obj[name]` of an object naming it once (no other field of its struct); else NULL."""
    cdef yyjson_obj_iter it
    cdef yyjson_val *k
    cdef yyjson_val *out = NULL
    if not yyjson_is_obj(obj) or not yyjson_obj_iter_init(obj, &it):
        return NULL
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            return out
        if is_key(yyjson_get_str(k), yyjson_get_len(k), name, n):
            if out != NULL:
                return NULL
            out = yyjson_obj_iter_get_val(k)

cdef int nanos_of(yyjson_val *v, int64_t *out) noexcept nogil:
    """Nanoseconds: a JSON integer or a string of digits only (what `int()` surely reads)."""
    cdef const char *p
    cdef size_t n, i
    cdef int64_t x = 0
    if v == NULL:
        return -1
    if yyjson_is_uint(v):
        if yyjson_get_uint(v) > <uint64_t>4000000000000000000:
            return -1
        out[0] = <int64_t>yyjson_get_uint(v)
        return 0
    if not yyjson_is_str(v):
        return -1
    p = yyjson_get_str(v)
    n = yyjson_get_len(v)
    if n == 0 or n > 19:
        return -1
    for i in range(n):
        if p[i] < 48 or p[i] > 57 or x > <int64_t>400000000000000000:
            return -1
        x = x * 10 + (p[i] - 48)
    out[0] = x
    return 0

cdef enum:
    A_OTHER, A_REQUEST_MODEL, A_RESPONSE_MODEL, A_RESPONSE_ID, A_INPUT, A_PROMPT, A_OUTPUT,
    A_COMPLETION, A_FINISH, A_ERROR_TYPE, N_ATTRS

cdef int attr_of(const char *k, size_t n) noexcept nogil:
    if is_key(k, n, b"gen_ai.request.model", 20): return A_REQUEST_MODEL
    if is_key(k, n, b"gen_ai.response.model", 21): return A_RESPONSE_MODEL
    if is_key(k, n, b"gen_ai.response.id", 18): return A_RESPONSE_ID
    if is_key(k, n, b"gen_ai.usage.input_tokens", 25): return A_INPUT
    if is_key(k, n, b"gen_ai.usage.prompt_tokens", 26): return A_PROMPT
    if is_key(k, n, b"gen_ai.usage.output_tokens", 26): return A_OUTPUT
    if is_key(k, n, b"gen_ai.usage.completion_tokens", 30): return A_COMPLETION
    if is_key(k, n, b"gen_ai.response.finish_reasons", 30): return A_FINISH
    if is_key(k, n, b"error.type", 10): return A_ERROR_TYPE
    return A_OTHER

cdef int any_value(yyjson_val *v, yyjson_val **string, yyjson_val **integer,
                   yyjson_val **array) noexcept nogil:
    """An `AnyValue` holding exactly one string, integer or array (of strings); else -1."""
    cdef yyjson_obj_iter it
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef int found = 0
    cdef const char *name
    cdef size_t n
    string[0] = NULL
    integer[0] = NULL
    array[0] = NULL
    if not yyjson_is_obj(v) or not yyjson_obj_iter_init(v, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            break
        name = yyjson_get_str(k)
        n = yyjson_get_len(k)
        x = yyjson_obj_iter_get_val(k)
        if is_key(name, n, b"stringValue", 11):
            if string[0] != NULL or not yyjson_is_str(x) or chars_of(
                yyjson_get_str(x), yyjson_get_len(x)
            ) < 0:
                return -1
            string[0] = x
        elif is_key(name, n, b"intValue", 8):
            if integer[0] != NULL:
                return -1
            integer[0] = x
        elif is_key(name, n, b"arrayValue", 10):
            if array[0] != NULL:
                return -1
            array[0] = x
        elif is_key(name, n, b"doubleValue", 11) or is_key(name, n, b"boolValue", 9):
            return -1
        else:
            continue
        found += 1
    return 0 if found == 1 else -1

cdef int read_otlp(yyjson_val *root, yyjson_val *resource_spans, Row *row,
                   const char *base) noexcept nogil:
    """An OTLP export of exactly one GenAI span (one resource, one scope), status not ERROR."""
    cdef yyjson_obj_iter it
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef yyjson_val *span
    cdef yyjson_val *attrs = NULL
    cdef yyjson_val *status = NULL
    cdef yyjson_val *start_v = NULL
    cdef yyjson_val *end_v = NULL
    cdef yyjson_val *s
    cdef yyjson_val *ival
    cdef yyjson_val *arr
    cdef yyjson_val *key
    cdef yyjson_val *value
    cdef yyjson_val *seen_keys[64]
    cdef yyjson_val *attr[N_ATTRS]
    cdef yyjson_val *attr_int[N_ATTRS]
    cdef yyjson_val *attr_arr[N_ATTRS]
    cdef yyjson_arr_iter ait, vit
    cdef yyjson_val *sval
    cdef yyjson_val *aval
    cdef uint32_t seen = 0
    cdef int a, i, j, n_keys = 0, n_spans = 0
    cdef bint genai = False
    cdef int64_t start, end, count
    cdef const char *name
    cdef size_t n
    for a in range(N_ATTRS):
        attr[a] = NULL
        attr_int[a] = NULL
        attr_arr[a] = NULL
    for a in range(N_DOUBLES):
        row.d[a] = NAN
    for a in range(N_SPANS):
        row.s[a].off = -1
    row.blocked = 0
    row.stage = 0
    row.emb_len = 0
    row.sc_n = 0
    # the document: besides resourceSpans, no field of a record or of another format
    if not yyjson_obj_iter_init(root, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            break
        if is_key(yyjson_get_str(k), yyjson_get_len(k), b"resourceSpans", 13):
            n_spans += 1
        elif field_of(yyjson_get_str(k), yyjson_get_len(k)) != F_UNKNOWN:
            return -1
    if n_spans != 1:
        return -1
    s = only_item(resource_spans)
    if s == NULL:
        return -1
    s = only_item(only_member(s, b"scopeSpans", 10))
    if s == NULL:
        return -1
    span = only_item(only_member(s, b"spans", 5))
    if span == NULL or not yyjson_obj_iter_init(span, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            break
        name = yyjson_get_str(k)
        n = yyjson_get_len(k)
        x = yyjson_obj_iter_get_val(k)
        if is_key(name, n, b"traceId", 7):
            if not known(&seen, 0) or span_of(x, base, &row.s[S_TRACE], False):
                return -1
        elif is_key(name, n, b"spanId", 6):
            if not known(&seen, 1) or span_of(x, base, &row.s[S_SPAN], False):
                return -1
        elif is_key(name, n, b"startTimeUnixNano", 17):
            if not known(&seen, 2):
                return -1
            start_v = x
        elif is_key(name, n, b"endTimeUnixNano", 15):
            if not known(&seen, 3):
                return -1
            end_v = x
        elif is_key(name, n, b"attributes", 10):
            if not known(&seen, 4):
                return -1
            attrs = x
        elif is_key(name, n, b"status", 6):
            if not known(&seen, 5):
                return -1
            status = x
    if row.s[S_TRACE].off < 0 or row.s[S_SPAN].off < 0 or attrs == NULL:
        return -1
    if not yyjson_is_arr(attrs) or not yyjson_arr_iter_init(attrs, &ait):
        return -1
    while True:
        x = yyjson_arr_iter_next(&ait)
        if x == NULL:
            break
        key = only_member(x, b"key", 3)
        value = only_member(x, b"value", 5)
        if key == NULL or value == NULL or not yyjson_is_str(key):
            return -1
        for j in range(n_keys):  # a repeated attribute: the last wins there; left to Python
            if is_key(yyjson_get_str(key), yyjson_get_len(key), yyjson_get_str(seen_keys[j]),
                      yyjson_get_len(seen_keys[j])):
                return -1
        if n_keys == 64:
            return -1
        seen_keys[n_keys] = key
        n_keys += 1
        name = yyjson_get_str(key)
        n = yyjson_get_len(key)
        if n >= 7 and memcmp(name, b"gen_ai.", 7) == 0:
            genai = True
        a = attr_of(name, n)
        if any_value(value, &attr[a], &attr_int[a], &attr_arr[a]):
            return -1
        if attr_int[a] != NULL and nanos_of(attr_int[a], &count):
            return -1  # an integer we read as Python's int() would, or nothing
        if attr_arr[a] != NULL:
            arr = only_member(attr_arr[a], b"values", 6)
            if arr == NULL or not yyjson_is_arr(arr):
                return -1
            # only lists of strings are read here
            yyjson_arr_iter_init(arr, &vit)
            while True:
                s = yyjson_arr_iter_next(&vit)
                if s == NULL:
                    break
                if any_value(s, &sval, &ival, &aval) or sval == NULL:
                    return -1
            if a == A_OTHER:
                continue
            s = only_item(arr)
            if a == A_FINISH and s != NULL:  # the finish reason of one choice
                any_value(s, &attr[a], &ival, &aval)
            elif not (a == A_FINISH and array_len(arr) == 0):
                return -1
    if not genai:
        return -1  # not a GenAI span: no record at all, left to Python
    if status != NULL and not (yyjson_is_null(status) or yyjson_is_obj(status)):
        return -1
    if status != NULL and not yyjson_is_null(status):
        x = only_member(status, b"code", 4)
        if x != NULL and not (yyjson_is_null(x) or (yyjson_is_uint(x) and yyjson_get_uint(x) < 2)):
            return -1
        x = only_member(status, b"message", 7)
        if x != NULL and not (yyjson_is_str(x) or yyjson_is_null(x)):
            return -1
    if nanos_of(start_v, &start) or nanos_of(end_v, &end) or end < start:
        return -1
    if end - start > <int64_t>9007199254740992:
        return -1
    row.d[D_TS] = <double>(start // 1000) / 1e6
    row.d[D_LATENCY] = <double>(end - start) / 1e6
    # model: gen_ai.request.model, else gen_ai.response.model (non-empty strings)
    if attr[A_REQUEST_MODEL] != NULL and yyjson_get_len(attr[A_REQUEST_MODEL]) > 0:
        span_of(attr[A_REQUEST_MODEL], base, &row.s[S_MODEL], False)
    elif attr[A_RESPONSE_MODEL] != NULL and yyjson_get_len(attr[A_RESPONSE_MODEL]) > 0:
        span_of(attr[A_RESPONSE_MODEL], base, &row.s[S_MODEL], False)
    else:
        return -1
    if attr[A_RESPONSE_MODEL] != NULL and yyjson_get_len(attr[A_RESPONSE_MODEL]) > 0:
        span_of(attr[A_RESPONSE_MODEL], base, &row.s[S_MODEL_VERSION], False)
    if attr[A_RESPONSE_ID] != NULL and yyjson_get_len(attr[A_RESPONSE_ID]) > 0:
        span_of(attr[A_RESPONSE_ID], base, &row.s[S_REQUEST_ID], False)
    # tokens: the first key present; a string there is an error the reference words
    cdef int token_attrs[4]
    cdef int token_cols[4]
    token_attrs[:] = [A_INPUT, A_PROMPT, A_OUTPUT, A_COMPLETION]
    token_cols[:] = [D_TIN, D_TIN, D_TOUT, D_TOUT]
    for i in range(4):
        a = token_attrs[i]
        j = token_cols[i]
        if row.d[j] == row.d[j]:
            continue
        if attr[a] != NULL or attr_arr[a] != NULL:
            return -1
        if attr_int[a] != NULL:
            nanos_of(attr_int[a], &count)
            row.d[j] = <double>count
    if attr[A_FINISH] != NULL:
        span_of(attr[A_FINISH], base, &row.s[S_FINISH], False)
    elif attr_int[A_FINISH] != NULL:
        return -1
    row.provider = 4
    return 0

# ---------------------------------------------------------------- a Gemini body

cdef inline bint known(uint32_t *seen, int bit) noexcept nogil:
    """Mark a struct field seen; False if it was already (a repeated key: left to Python)."""
    if seen[0] & ((<uint32_t>1) << bit):
        return False
    seen[0] |= (<uint32_t>1) << bit
    return True

cdef int read_ratings(yyjson_val *v, Out *o, const char *base) noexcept nogil:
    """Gemini `safetyRatings[]`, every one with a category name and a score in 0..1."""
    cdef yyjson_arr_iter it
    cdef yyjson_obj_iter fit
    cdef yyjson_val *r
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef uint32_t seen
    cdef const char *name
    cdef size_t n
    cdef Score sc
    cdef double score
    if yyjson_is_null(v):
        return 0
    if not yyjson_is_arr(v) or not yyjson_arr_iter_init(v, &it):
        return -1
    while True:
        r = yyjson_arr_iter_next(&it)
        if r == NULL:
            return 0
        if not yyjson_is_obj(r) or not yyjson_obj_iter_init(r, &fit):
            return -1
        seen = 0
        score = -1.0
        sc.key.off = -1
        while True:
            k = yyjson_obj_iter_next(&fit)
            if k == NULL:
                break
            name = yyjson_get_str(k)
            n = yyjson_get_len(k)
            x = yyjson_obj_iter_get_val(k)
            if is_key(name, n, b"category", 8):
                if not known(&seen, 0) or not yyjson_is_str(x) or span_of(x, base, &sc.key, False):
                    return -1
            elif is_key(name, n, b"probability", 11):
                if not known(&seen, 1) or not (
                    yyjson_is_str(x) or yyjson_is_uint(x) or yyjson_is_sint(x) or yyjson_is_null(x)
                ):
                    return -1
            elif is_key(name, n, b"probabilityScore", 16):
                if not known(&seen, 2) or number_of(x, &score) or score > 1.0:
                    return -1
            elif is_key(name, n, b"blocked", 7):
                if not known(&seen, 3) or not (
                    yyjson_is_true(x) or yyjson_is_false(x) or yyjson_is_null(x)
                ):
                    return -1
        if sc.key.off < 0 or score < 0.0:
            return -1  # a band instead of a score, or no category: left to Python
        if grow(<void **>&o.scores, &o.cap_scores, o.n_scores + 1, sizeof(Score)):
            return -1
        sc.value = score
        sc.provider = 1
        o.scores[o.n_scores] = sc
        o.n_scores += 1

cdef Py_ssize_t array_len(yyjson_val *v) noexcept nogil:
    """Elements of an array (0 for null), -1 for anything else."""
    cdef yyjson_arr_iter it
    cdef Py_ssize_t n = 0
    if yyjson_is_null(v):
        return 0
    if not yyjson_is_arr(v) or not yyjson_arr_iter_init(v, &it):
        return -1
    while yyjson_arr_iter_next(&it) != NULL:
        n += 1
    return n

cdef int read_citations(yyjson_val *v, double *count) noexcept nogil:
    cdef yyjson_obj_iter it
    cdef yyjson_val *k
    cdef uint32_t seen = 0
    cdef Py_ssize_t n
    if yyjson_is_null(v):
        return 0
    if not yyjson_is_obj(v) or not yyjson_obj_iter_init(v, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            return 0
        if is_key(yyjson_get_str(k), yyjson_get_len(k), b"citations", 9):
            if not known(&seen, 0):
                return -1
        elif is_key(yyjson_get_str(k), yyjson_get_len(k), b"citationSources", 15):
            if not known(&seen, 1):
                return -1
        else:
            continue
        n = array_len(yyjson_obj_iter_get_val(k))
        if n < 0:
            return -1
        count[0] += n

cdef int read_content(yyjson_val *v, double *chars, const char *base) noexcept nogil:
    """`content.parts[]`: the characters of the texts that are not thoughts (NaN: none)."""
    cdef yyjson_obj_iter it, pit
    cdef yyjson_arr_iter ait
    cdef yyjson_val *k
    cdef yyjson_val *parts = NULL
    cdef yyjson_val *part
    cdef yyjson_val *text
    cdef yyjson_val *x
    cdef bint thought
    cdef uint32_t seen
    cdef Py_ssize_t n
    if yyjson_is_null(v):
        return 0
    if not yyjson_is_obj(v) or not yyjson_obj_iter_init(v, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            break
        if is_key(yyjson_get_str(k), yyjson_get_len(k), b"parts", 5):
            if parts != NULL:
                return -1
            parts = yyjson_obj_iter_get_val(k)
    if parts == NULL or yyjson_is_null(parts):
        return 0
    if not yyjson_is_arr(parts) or not yyjson_arr_iter_init(parts, &ait):
        return -1
    while True:
        part = yyjson_arr_iter_next(&ait)
        if part == NULL:
            return 0
        if not yyjson_is_obj(part) or not yyjson_obj_iter_init(part, &pit):
            return -1
        seen = 0
        text = NULL
        thought = False
        while True:
            k = yyjson_obj_iter_next(&pit)
            if k == NULL:
                break
            x = yyjson_obj_iter_get_val(k)
            if is_key(yyjson_get_str(k), yyjson_get_len(k), b"text", 4):
                if not known(&seen, 0) or not (yyjson_is_str(x) or yyjson_is_null(x)):
                    return -1
                text = x
            elif is_key(yyjson_get_str(k), yyjson_get_len(k), b"thought", 7):
                if not known(&seen, 1) or not (
                    yyjson_is_true(x) or yyjson_is_false(x) or yyjson_is_null(x)
                ):
                    return -1
                thought = yyjson_is_true(x)
        if text != NULL and yyjson_is_str(text) and not thought:
            n = chars_of(yyjson_get_str(text), yyjson_get_len(text))
            if n < 0:
                return -1
            chars[0] = (0.0 if chars[0] != chars[0] else chars[0]) + n

cdef int read_candidate(yyjson_val *c, Out *o, Row *row, const char *base) noexcept nogil:
    cdef yyjson_obj_iter it
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef uint32_t seen = 0
    cdef const char *name
    cdef size_t n
    if not yyjson_is_obj(c) or not yyjson_obj_iter_init(c, &it):
        return -1
    row.d[D_CITATIONS] = 0.0
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            return 0
        name = yyjson_get_str(k)
        n = yyjson_get_len(k)
        x = yyjson_obj_iter_get_val(k)
        if is_key(name, n, b"index", 5):
            # the primary answer only (index 0 or none): several answers are left to Python
            if not known(&seen, 0) or not (
                yyjson_is_null(x) or (yyjson_is_uint(x) and yyjson_get_uint(x) == 0)
            ):
                return -1
        elif is_key(name, n, b"content", 7):
            if not known(&seen, 1) or read_content(x, &row.d[D_RESPLEN], base):
                return -1
        elif is_key(name, n, b"finishReason", 12):
            if not known(&seen, 2) or span_of(x, base, &row.s[S_FINISH], True):
                return -1
        elif is_key(name, n, b"safetyRatings", 13):
            if not known(&seen, 3) or read_ratings(x, o, base):
                return -1
        elif is_key(name, n, b"citationMetadata", 16):
            if not known(&seen, 4) or read_citations(x, &row.d[D_CITATIONS]):
                return -1

cdef int read_usage(yyjson_val *v, Row *row) noexcept nogil:
    cdef yyjson_obj_iter it
    cdef yyjson_val *k
    cdef uint32_t seen = 0
    cdef int i
    cdef double counts[4]
    cdef const char *name
    cdef size_t n
    if yyjson_is_null(v):
        return 0
    if not yyjson_is_obj(v) or not yyjson_obj_iter_init(v, &it):
        return -1
    for i in range(4):
        counts[i] = NAN
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            break
        name = yyjson_get_str(k)
        n = yyjson_get_len(k)
        if is_key(name, n, b"promptTokenCount", 16):
            i = 0
        elif is_key(name, n, b"candidatesTokenCount", 20):
            i = 1
        elif is_key(name, n, b"thoughtsTokenCount", 18):
            i = 2
        elif is_key(name, n, b"totalTokenCount", 15):
            i = 3
        else:
            continue
        if not known(&seen, i) or count_of(yyjson_obj_iter_get_val(k), &counts[i]):
            return -1
    # as the reference: a usage block with a prompt or total count reads missing ones as 0
    if counts[0] == counts[0] or counts[3] == counts[3]:
        row.d[D_TIN] = counts[0] if counts[0] == counts[0] else 0.0
        row.d[D_TOUT] = (counts[1] if counts[1] == counts[1] else 0.0) + (
            counts[2] if counts[2] == counts[2] else 0.0
        )
    return 0

cdef int read_gemini(yyjson_val *body, Out *o, Row *row, const char *base) noexcept nogil:
    """One Gemini `generateContent` response with one answer, not a prompt block, not an
    error; anything else (PaLM, OpenAI, streams, several answers) is left to Python."""
    cdef yyjson_obj_iter it
    cdef yyjson_arr_iter ait
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef yyjson_val *candidates = NULL
    cdef yyjson_val *c
    cdef uint32_t seen = 0
    cdef const char *name
    cdef size_t n
    cdef Span version
    version.off = -1
    row.sc_off = o.n_scores
    if not yyjson_is_obj(body) or not yyjson_obj_iter_init(body, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            break
        name = yyjson_get_str(k)
        n = yyjson_get_len(k)
        x = yyjson_obj_iter_get_val(k)
        if is_key(name, n, b"candidates", 10):
            if not known(&seen, 0):
                return -1
            candidates = x
        elif is_key(name, n, b"usageMetadata", 13):
            if not known(&seen, 1) or read_usage(x, row):
                return -1
        elif is_key(name, n, b"modelVersion", 12):
            if not known(&seen, 2) or span_of(x, base, &version, True):
                return -1
        elif (is_key(name, n, b"predictions", 11) or is_key(name, n, b"metadata", 8)
              or is_key(name, n, b"promptFeedback", 14) or is_key(name, n, b"choices", 7)
              or is_key(name, n, b"usage", 5) or is_key(name, n, b"model", 5)
              or is_key(name, n, b"object", 6) or is_key(name, n, b"prompt_filter_results", 21)
              or is_key(name, n, b"error", 5)):
            return -1
    if candidates == NULL or not yyjson_is_arr(candidates):
        return -1
    if not yyjson_arr_iter_init(candidates, &ait):
        return -1
    c = yyjson_arr_iter_next(&ait)
    if c == NULL or yyjson_arr_iter_next(&ait) != NULL:
        return -1  # no answer, or several: left to Python
    if read_candidate(c, o, row, base):
        return -1
    if row.s[S_MODEL_VERSION].off < 0:
        row.s[S_MODEL_VERSION] = version
    row.sc_n = o.n_scores - row.sc_off
    row.provider = 1
    return 0

# ---------------------------------------------------------------- an OpenAI body

cdef int read_message(yyjson_val *v, double *chars, double *citations) noexcept nogil:
    """`message` or `delta`: its text's characters added to `chars`; url citations counted."""
    cdef yyjson_obj_iter it, ait
    cdef yyjson_arr_iter lit
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef yyjson_val *a
    cdef yyjson_val *t
    cdef uint32_t seen = 0
    cdef Py_ssize_t n
    if yyjson_is_null(v):
        return 0
    if not yyjson_is_obj(v) or not yyjson_obj_iter_init(v, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            return 0
        x = yyjson_obj_iter_get_val(k)
        if is_key(yyjson_get_str(k), yyjson_get_len(k), b"content", 7):
            if not known(&seen, 0) or not (yyjson_is_str(x) or yyjson_is_null(x)):
                return -1
            if yyjson_is_str(x):
                n = chars_of(yyjson_get_str(x), yyjson_get_len(x))
                if n < 0:
                    return -1
                chars[0] = (0.0 if chars[0] != chars[0] else chars[0]) + n
        elif citations != NULL and is_key(yyjson_get_str(k), yyjson_get_len(k), b"annotations", 11):
            if not known(&seen, 1):
                return -1
            if yyjson_is_null(x):
                continue
            if not yyjson_is_arr(x) or not yyjson_arr_iter_init(x, &lit):
                return -1
            if citations[0] != citations[0]:
                citations[0] = 0.0
            while True:
                a = yyjson_arr_iter_next(&lit)
                if a == NULL:
                    break
                if not yyjson_is_obj(a) or not yyjson_obj_iter_init(a, &ait):
                    return -1
                t = NULL
                while True:
                    k = yyjson_obj_iter_next(&ait)
                    if k == NULL:
                        break
                    if is_key(yyjson_get_str(k), yyjson_get_len(k), b"type", 4):
                        if t != NULL:
                            return -1
                        t = yyjson_obj_iter_get_val(k)
                        if not (yyjson_is_str(t) or yyjson_is_null(t)):
                            return -1
                if t != NULL and yyjson_is_str(t) and is_key(
                    yyjson_get_str(t), yyjson_get_len(t), b"url_citation", 12
                ):
                    citations[0] += 1

cdef int read_choice(yyjson_val *c, Row *row, const char *base) noexcept nogil:
    cdef yyjson_obj_iter it
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef uint32_t seen = 0
    cdef const char *name
    cdef size_t n
    if not yyjson_is_obj(c) or not yyjson_obj_iter_init(c, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            return 0
        name = yyjson_get_str(k)
        n = yyjson_get_len(k)
        x = yyjson_obj_iter_get_val(k)
        if is_key(name, n, b"index", 5):
            if not known(&seen, 0) or not (
                yyjson_is_null(x) or (yyjson_is_uint(x) and yyjson_get_uint(x) == 0)
            ):
                return -1
        elif is_key(name, n, b"message", 7):
            if not known(&seen, 1) or read_message(x, &row.d[D_RESPLEN], &row.d[D_CITATIONS]):
                return -1
        elif is_key(name, n, b"delta", 5):
            if not known(&seen, 2) or read_message(x, &row.d[D_RESPLEN], NULL):
                return -1
        elif is_key(name, n, b"finish_reason", 13):
            if not known(&seen, 3) or span_of(x, base, &row.s[S_FINISH], True):
                return -1
        elif is_key(name, n, b"content_filter_results", 22):
            return -1  # Azure's filters: left to Python

cdef int read_openai(yyjson_val *body, Row *row, const char *base) noexcept nogil:
    """One OpenAI chat completion with one answer and no Azure filter results."""
    cdef yyjson_obj_iter it, uit
    cdef yyjson_arr_iter ait
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef yyjson_val *choices = NULL
    cdef yyjson_val *c
    cdef uint32_t seen = 0, useen
    cdef const char *name
    cdef size_t n
    cdef Span version
    cdef int i
    version.off = -1
    row.s[S_FINISH].off = -1
    row.d[D_TIN] = NAN
    row.d[D_TOUT] = NAN
    row.d[D_CITATIONS] = NAN
    row.d[D_RESPLEN] = NAN
    if not yyjson_is_obj(body) or not yyjson_obj_iter_init(body, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            break
        name = yyjson_get_str(k)
        n = yyjson_get_len(k)
        x = yyjson_obj_iter_get_val(k)
        if is_key(name, n, b"choices", 7):
            if not known(&seen, 0):
                return -1
            choices = x
        elif is_key(name, n, b"usage", 5):
            if not known(&seen, 1):
                return -1
            if yyjson_is_null(x):
                continue
            if not yyjson_is_obj(x) or not yyjson_obj_iter_init(x, &uit):
                return -1
            useen = 0
            while True:
                k = yyjson_obj_iter_next(&uit)
                if k == NULL:
                    break
                if is_key(yyjson_get_str(k), yyjson_get_len(k), b"prompt_tokens", 13):
                    i = D_TIN
                elif is_key(yyjson_get_str(k), yyjson_get_len(k), b"completion_tokens", 17):
                    i = D_TOUT
                else:
                    continue
                if not known(&useen, i) or count_of(yyjson_obj_iter_get_val(k), &row.d[i]):
                    return -1
        elif is_key(name, n, b"model", 5):
            if not known(&seen, 2) or span_of(x, base, &version, True):
                return -1
        elif is_key(name, n, b"object", 6):
            if not known(&seen, 3) or not (yyjson_is_str(x) or yyjson_is_null(x)):
                return -1
        elif (is_key(name, n, b"predictions", 11) or is_key(name, n, b"metadata", 8)
              or is_key(name, n, b"candidates", 10) or is_key(name, n, b"promptFeedback", 14)
              or is_key(name, n, b"usageMetadata", 13) or is_key(name, n, b"modelVersion", 12)
              or is_key(name, n, b"prompt_filter_results", 21) or is_key(name, n, b"error", 5)):
            return -1
    if choices == NULL or not yyjson_is_arr(choices) or not yyjson_arr_iter_init(choices, &ait):
        return -1
    c = yyjson_arr_iter_next(&ait)
    if c == NULL or yyjson_arr_iter_next(&ait) != NULL:
        return -1
    if read_choice(c, row, base):
        return -1
    # `chunk.model or None`: an empty name says nothing
    if row.s[S_MODEL_VERSION].off < 0 and version.off >= 0 and version.len > 0:
        row.s[S_MODEL_VERSION] = version
    row.sc_n = 0
    row.provider = 2
    return 0

# ---------------------------------------------------------------- a PaLM body

cdef int read_attributes(yyjson_val *v, Out *o, Row *row, const char *base) noexcept nogil:
    """`safetyAttributes` (one object): category scores paired up, ratings, `blocked`."""
    cdef yyjson_obj_iter it
    cdef yyjson_arr_iter cit, sit
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef yyjson_val *categories = NULL
    cdef yyjson_val *scores = NULL
    cdef yyjson_val *c
    cdef yyjson_val *f
    cdef uint32_t seen = 0
    cdef const char *name
    cdef size_t n
    cdef Score sc
    cdef double score
    if yyjson_is_null(v):
        return 0
    if not yyjson_is_obj(v) or not yyjson_obj_iter_init(v, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            break
        name = yyjson_get_str(k)
        n = yyjson_get_len(k)
        x = yyjson_obj_iter_get_val(k)
        if is_key(name, n, b"categories", 10):
            if not known(&seen, 0):
                return -1
            categories = x
        elif is_key(name, n, b"scores", 6):
            if not known(&seen, 1):
                return -1
            scores = x
        elif is_key(name, n, b"blocked", 7):
            if not known(&seen, 2):
                return -1
            if yyjson_is_true(x):
                row.blocked = 1
                row.stage = 2
            elif not (yyjson_is_false(x) or yyjson_is_null(x)):
                return -1
        elif is_key(name, n, b"safetyRatings", 13):
            if not known(&seen, 3) or read_ratings(x, o, base):
                return -1
    if categories == NULL or scores == NULL:
        return -1
    if not yyjson_is_arr(categories) or not yyjson_arr_iter_init(categories, &cit):
        return -1
    if not yyjson_is_arr(scores) or not yyjson_arr_iter_init(scores, &sit):
        return -1
    while True:
        c = yyjson_arr_iter_next(&cit)
        f = yyjson_arr_iter_next(&sit)
        if c == NULL and f == NULL:
            return 0
        if c == NULL or f == NULL:
            return -1  # unpaired: an error the reference words
        if span_of(c, base, &sc.key, False) or number_of(f, &score) or score > 1.0:
            return -1
        if grow(<void **>&o.scores, &o.cap_scores, o.n_scores + 1, sizeof(Score)):
            return -1
        sc.value = score
        sc.provider = 1
        o.scores[o.n_scores] = sc
        o.n_scores += 1

cdef int read_token_count(yyjson_val *v, double *out) noexcept nogil:
    """`{"totalTokens": n}`: a whole, non-negative number (null: unknown)."""
    cdef yyjson_obj_iter it
    cdef yyjson_val *k
    cdef yyjson_val *x = NULL
    if yyjson_is_null(v):
        return 0
    if not yyjson_is_obj(v) or not yyjson_obj_iter_init(v, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            break
        if is_key(yyjson_get_str(k), yyjson_get_len(k), b"totalTokens", 11):
            if x != NULL:
                return -1
            x = yyjson_obj_iter_get_val(k)
    if x == NULL or yyjson_is_null(x):
        return 0
    if number_of(x, out) or out[0] != <double>(<int64_t>out[0]):
        return -1
    return 0

cdef int read_palm_metadata(yyjson_val *v, Row *row) noexcept nogil:
    cdef yyjson_obj_iter it, tit
    cdef yyjson_val *k
    cdef yyjson_val *tokens = NULL
    cdef uint32_t seen = 0
    if yyjson_is_null(v):
        return 0
    if not yyjson_is_obj(v) or not yyjson_obj_iter_init(v, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            break
        if is_key(yyjson_get_str(k), yyjson_get_len(k), b"tokenMetadata", 13):
            if tokens != NULL:
                return -1
            tokens = yyjson_obj_iter_get_val(k)
    if tokens == NULL or yyjson_is_null(tokens):
        return 0
    if not yyjson_is_obj(tokens) or not yyjson_obj_iter_init(tokens, &tit):
        return -1
    while True:
        k = yyjson_obj_iter_next(&tit)
        if k == NULL:
            return 0
        if is_key(yyjson_get_str(k), yyjson_get_len(k), b"inputTokenCount", 15):
            if not known(&seen, 0) or read_token_count(yyjson_obj_iter_get_val(k), &row.d[D_TIN]):
                return -1
        elif is_key(yyjson_get_str(k), yyjson_get_len(k), b"outputTokenCount", 16):
            if not known(&seen, 1) or read_token_count(
                yyjson_obj_iter_get_val(k), &row.d[D_TOUT]
            ):
                return -1

cdef int read_palm(yyjson_val *body, Out *o, Row *row, const char *base) noexcept nogil:
    """One Vertex AI PaLM `predict` response with one prediction."""
    cdef yyjson_obj_iter it, pit
    cdef yyjson_arr_iter ait
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef yyjson_val *predictions = NULL
    cdef yyjson_val *p
    cdef uint32_t seen = 0, pseen = 0
    cdef const char *name
    cdef size_t n
    cdef Span content
    row.s[S_FINISH].off = -1
    row.d[D_TIN] = NAN
    row.d[D_TOUT] = NAN
    row.d[D_CITATIONS] = 0.0
    row.d[D_RESPLEN] = NAN
    row.sc_off = o.n_scores
    if not yyjson_is_obj(body) or not yyjson_obj_iter_init(body, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            break
        name = yyjson_get_str(k)
        n = yyjson_get_len(k)
        x = yyjson_obj_iter_get_val(k)
        if is_key(name, n, b"predictions", 11):
            if not known(&seen, 0):
                return -1
            predictions = x
        elif is_key(name, n, b"metadata", 8):
            if not known(&seen, 1) or read_palm_metadata(x, row):
                return -1
        elif (is_key(name, n, b"candidates", 10) or is_key(name, n, b"promptFeedback", 14)
              or is_key(name, n, b"usageMetadata", 13) or is_key(name, n, b"modelVersion", 12)
              or is_key(name, n, b"choices", 7) or is_key(name, n, b"usage", 5)
              or is_key(name, n, b"model", 5) or is_key(name, n, b"object", 6)
              or is_key(name, n, b"prompt_filter_results", 21) or is_key(name, n, b"error", 5)):
            return -1
    if predictions == NULL or not yyjson_is_arr(predictions):
        return -1
    if not yyjson_arr_iter_init(predictions, &ait):
        return -1
    p = yyjson_arr_iter_next(&ait)
    if p == NULL or yyjson_arr_iter_next(&ait) != NULL:
        return -1
    if not yyjson_is_obj(p) or not yyjson_obj_iter_init(p, &pit):
        return -1
    while True:
        k = yyjson_obj_iter_next(&pit)
        if k == NULL:
            break
        name = yyjson_get_str(k)
        n = yyjson_get_len(k)
        x = yyjson_obj_iter_get_val(k)
        if is_key(name, n, b"content", 7):
            if not known(&pseen, 0) or span_of(x, base, &content, True):
                return -1
            if content.off >= 0:
                row.d[D_RESPLEN] = <double>chars_of(base + content.off, content.len)
        elif is_key(name, n, b"safetyAttributes", 16):
            if not known(&pseen, 1) or read_attributes(x, o, row, base):
                return -1
        elif is_key(name, n, b"citationMetadata", 16):
            if not known(&pseen, 2) or read_citations(x, &row.d[D_CITATIONS]):
                return -1
    row.sc_n = o.n_scores - row.sc_off
    row.provider = 3
    return 0

# ---------------------------------------------------------------- lines and messages

cdef inline bint blank(char c) noexcept nogil:
    # the bytes `bytes.strip()` removes
    return c == 32 or c == 9 or c == 10 or c == 13 or c == 11 or c == 12

cdef enum:
    LINE_FAST, LINE_OTHER, LINE_UNREAD

cdef int read_line(Out *o, Row *row, const char *rec, Py_ssize_t n, yyjson_alc *alc) noexcept nogil:
    """LINE_FAST (kept in `row`), LINE_OTHER (valid JSON, not read here) or LINE_UNREAD."""
    cdef yyjson_doc *doc
    cdef char *copy
    cdef Py_ssize_t scores = o.n_scores, floats = o.n_floats
    cdef int ok
    if grow(<void **>&o.copy, &o.cap_copy, o.n_copy + n + PAD, 1):
        return -1
    copy = o.copy + o.n_copy
    memcpy(copy, rec, n)
    memset(copy + n, 0, PAD)
    doc = yyjson_read_opts(copy, n, YYJSON_READ_INSITU, alc, NULL)
    if doc == NULL:
        return LINE_UNREAD
    ok = read_record(yyjson_doc_get_root(doc), o, row, o.copy)
    if ok != 0:
        row.emb_len = width_hint(yyjson_doc_get_root(doc))
        yyjson_doc_free(doc)
        o.n_scores = scores
        o.n_floats = floats
        return LINE_OTHER
    yyjson_doc_free(doc)
    o.n_copy += n + PAD  # the row's strings live in this copy
    return LINE_FAST

cdef Py_ssize_t width_hint(yyjson_val *root) noexcept nogil:
    """The length of a record's `embedding` array (or its LogEntry payload's), else 0: a line
    left to Python whose embedding is wider or narrower than the fast rows' makes the width
    rule the whole message's, so the message goes whole at once instead of being redone."""
    cdef yyjson_val *v
    cdef Py_ssize_t n
    if not yyjson_is_obj(root):
        return 0
    v = yyjson_obj_getn(root, b"jsonPayload", 11)
    if v != NULL and yyjson_is_obj(v):
        root = v
    v = yyjson_obj_getn(root, b"embedding", 9)
    if v == NULL:
        return 0
    n = array_len(v)
    return n if n > 0 else 0


cdef int scan_message(Out *o, int64_t msg, const char *data, Py_ssize_t n, int64_t first_line,
                      Py_ssize_t max_bytes, Py_ssize_t want_dim, yyjson_alc *alc) noexcept nogil:
    """Append a message's fast rows and other lines; 1 = the whole message goes to Python."""
    cdef Py_ssize_t rows = o.n_rows, falls = o.n_falls, scores = o.n_scores
    cdef Py_ssize_t floats = o.n_floats, copied = o.n_copy
    cdef Py_ssize_t pos = 0, end, a, b, nonblank = 0, width = want_dim
    cdef int64_t line = first_line
    cdef const char *nl
    cdef int kind
    cdef Row *row
    cdef bint whole = False
    while pos <= n and not whole:
        nl = <const char *>memchr(data + pos, 10, n - pos)
        end = n if nl == NULL else nl - data
        a = pos
        b = end
        while a < b and blank(data[a]):
            a += 1
        while b > a and blank(data[b - 1]):
            b -= 1
        if a < b:
            nonblank += 1
            if data[a] == 91:  # '[': several records on one line, each judged with the rest
                whole = True
                break
            if b - a > max_bytes:
                kind = LINE_UNREAD
            else:
                if grow(<void **>&o.rows, &o.cap_rows, o.n_rows + 1, sizeof(Row)):
                    return -1
                row = &o.rows[o.n_rows]
                kind = read_line(o, row, data + a, b - a, alc)
                if kind < 0:
                    return -1
            if kind == LINE_UNREAD and nonblank == 1:
                whole = True  # it may start a pretty-printed document
                break
            if kind != LINE_UNREAD:
                if row.emb_len:
                    if width < 0:
                        width = row.emb_len
                    elif width != row.emb_len:
                        whole = True  # the width rule is the message's: the reference's job
                        break
            if kind == LINE_FAST:
                row.msg = msg
                row.line = line
                row.rec_off = a
                row.rec_len = b - a
                o.n_rows += 1
            else:
                if grow(<void **>&o.falls, &o.cap_falls, o.n_falls + 1, sizeof(Fallback)):
                    return -1
                o.falls[o.n_falls].msg = msg
                o.falls[o.n_falls].line = line
                o.falls[o.n_falls].start = pos
                o.falls[o.n_falls].end = end
                o.falls[o.n_falls].kind = kind
                o.n_falls += 1
        line += 1
        pos = end + 1
    if nonblank == 1 and o.n_falls > falls:
        whole = True  # a lone record is read as a whole document, raw bytes and all
    if whole:
        o.n_rows = rows
        o.n_falls = falls
        o.n_scores = scores
        o.n_floats = floats
        o.n_copy = copied
        return 1
    return 0

# ---------------------------------------------------------------- phase 2: Python columns

_STAGES = (None, "prompt", "response")
#: provider word → canonical finish reason, bounded like the reference's own cache
_FINISH: dict = {}


cdef object text(Out *o, Span s):
    if s.off < 0:
        return None
    return PyUnicode_DecodeUTF8(o.copy + s.off, s.len, NULL)


cdef object finish_word(Out *o, Span s):
    cdef object raw, word
    if s.off < 0:
        return None
    raw = PyUnicode_DecodeUTF8(o.copy + s.off, s.len, NULL)
    word = _FINISH.get(raw)
    if word is None:
        word = canonical_finish_reason(raw)
        if len(_FINISH) < 1024:
            _FINISH[raw] = word
    return word


cdef dict columns(Out *o, list datas):
    cdef Py_ssize_t n = o.n_rows, i, j
    cdef Row *r
    origin = np.empty(n, dtype=np.int64)
    line = np.empty(n, dtype=np.int64)
    doubles = np.empty((N_DOUBLES, n), dtype=np.float64)
    blocked = np.empty(n, dtype=np.bool_)
    width = np.zeros(n, dtype=np.int64)
    cdef int64_t[::1] origin_v = origin, line_v = line, width_v = width
    cdef double[:, ::1] doubles_v = doubles
    cdef uint8_t[::1] blocked_v = blocked.view(np.uint8)
    names = ("request_id", "model", "model_version", "block_reason", "finish_reason", "error")
    lists = [[None] * n for _ in names]
    stages = [None] * n
    ids, models, versions, reasons, finishes, errors = lists
    for i in range(n):
        r = &o.rows[i]
        origin_v[i] = r.msg
        line_v[i] = r.line
        for j in range(N_DOUBLES):
            doubles_v[j, i] = r.d[j]
        blocked_v[i] = r.blocked
        width_v[i] = r.emb_len
        if r.s[S_REQUEST_ID].off >= 0:
            ids[i] = text(o, r.s[S_REQUEST_ID])
        elif r.provider == 4:  # a span has no bytes of its own: its trace and span ids
            ids[i] = deterministic_request_id(
                f"otlp:{text(o, r.s[S_TRACE])}:{text(o, r.s[S_SPAN])}".encode()
            )
        else:
            ids[i] = deterministic_request_id(datas[r.msg][r.rec_off : r.rec_off + r.rec_len])
        models[i] = text(o, r.s[S_MODEL])
        if r.s[S_MODEL_VERSION].off >= 0:
            versions[i] = text(o, r.s[S_MODEL_VERSION])
        if r.s[S_BLOCK_REASON].off >= 0:
            reasons[i] = text(o, r.s[S_BLOCK_REASON])
        if r.provider == 4:
            if r.s[S_FINISH].off >= 0:
                word = text(o, r.s[S_FINISH])
                finishes[i] = canonical_finish_reason(word)
                block = response_block_reason(word)
                if block is not None:
                    blocked_v[i] = 1
                    stages[i] = "response"
                    reasons[i] = block
        elif r.provider == 3:
            if r.blocked:
                reasons[i] = "SAFETY"
        elif r.provider:
            if r.s[S_FINISH].off >= 0:
                word, block = finish_facts(text(o, r.s[S_FINISH]))
                finishes[i] = canonical_finish_reason(word)
                if block is not None:
                    blocked_v[i] = 1
                    stages[i] = "response"
                    reasons[i] = block if r.provider == 1 else "CONTENT_FILTER"
        elif r.s[S_FINISH].off >= 0:
            finishes[i] = finish_word(o, r.s[S_FINISH])
        if r.s[S_ERROR].off >= 0:
            errors[i] = text(o, r.s[S_ERROR])
        if r.stage:
            stages[i] = _STAGES[r.stage]
    out = {"origin": origin, "line": line, "blocked": blocked, "width": width}
    for j, name in enumerate(
        ("timestamp", "latency_ms", "time_to_first_token_ms", "input_tokens", "output_tokens",
         "citation_count", "response_length")
    ):
        out[name] = doubles[j]
    for name, values in zip(names, lists):
        column = np.empty(n, dtype=object)
        column[:] = values
        out[name] = column
    column = np.empty(n, dtype=object)
    column[:] = stages
    out["block_stage"] = column
    out["safety_scores"] = score_columns(o, n)
    flat = np.empty(o.n_floats, dtype=np.float32)
    cdef float[::1] flat_v = flat
    if o.n_floats:
        memcpy(&flat_v[0], o.floats, o.n_floats * sizeof(float))
    out["embedding_values"] = flat
    return out


cdef dict score_columns(Out *o, Py_ssize_t n):
    """category → float64 column (NaN where a row had no score for it)."""
    cdef Py_ssize_t i, j, m = o.n_scores
    cdef Row *r
    category = np.empty(m, dtype=np.int64)
    rows = np.empty(m, dtype=np.int64)
    values = np.empty(m, dtype=np.float64)
    cdef int64_t[::1] category_v = category, rows_v = rows
    cdef double[::1] values_v = values
    index: dict = {}
    cdef Py_ssize_t k = 0
    for i in range(n):
        r = &o.rows[i]
        for j in range(r.sc_off, r.sc_off + r.sc_n):
            key = PyUnicode_DecodeUTF8(o.copy + o.scores[j].key.off, o.scores[j].key.len, NULL)
            if o.scores[j].provider:
                key = CATEGORY_CACHE.get(key) or normalise_category(key)
            category_v[k] = index.setdefault(key, len(index))
            rows_v[k] = i
            values_v[k] = o.scores[j].value
            k += 1
    out = {}
    for key, c in sorted(index.items()):
        column = np.full(n, np.nan, dtype=np.float64)
        pick = category[:k] == c
        # a provider may rate one category twice (two spellings): the highest score wins
        np.fmax.at(column, rows[:k][pick], values[:k][pick])
        out[key] = column
    return out


def scan(list datas, list first_lines, list eligible, Py_ssize_t max_bytes, Py_ssize_t want_dim):
    """Phase 1 over a poll (GIL released), then its columns.

    Returns (columns of the fast rows, [(message, line, start, end, valid JSON) of each other
    line],
    [messages left whole to the reference]). `eligible[i]` false: message i is left whole.
    """
    cdef Py_ssize_t m = len(datas), i
    cdef Out o
    memset(&o, 0, sizeof(Out))
    cdef const char **ptrs = <const char **>malloc(max(m, 1) * sizeof(char *))
    cdef Py_ssize_t *lens = <Py_ssize_t *>malloc(max(m, 1) * sizeof(Py_ssize_t))
    cdef int64_t *firsts = <int64_t *>malloc(max(m, 1) * sizeof(int64_t))
    cdef uint8_t *whole = <uint8_t *>malloc(max(m, 1))
    cdef int status = 0
    cdef yyjson_alc *alc = NULL
    cdef bytes data
    try:
        if ptrs == NULL or lens == NULL or firsts == NULL or whole == NULL:
            raise MemoryError
        for i in range(m):
            data = datas[i]
            ptrs[i] = data
            lens[i] = len(data)
            firsts[i] = first_lines[i]
            whole[i] = 0 if eligible[i] else 1
        with nogil:
            alc = yyjson_alc_dyn_new()
            if alc == NULL:
                status = -1
            else:
                for i in range(m):
                    if whole[i]:
                        continue
                    status = scan_message(&o, i, ptrs[i], lens[i], firsts[i], max_bytes,
                                          want_dim, alc)
                    if status < 0:
                        break
                    whole[i] = status
                    status = 0
                yyjson_alc_dyn_free(alc)
        if status < 0:
            raise MemoryError
        fast = columns(&o, datas)
        others = [
            (o.falls[i].msg, o.falls[i].line, o.falls[i].start, o.falls[i].end,
             o.falls[i].kind == LINE_OTHER)
            for i in range(o.n_falls)
        ]
        left = [i for i in range(m) if whole[i]]
        return fast, others, left
    finally:
        free(ptrs)
        free(lens)
        free(firsts)
        free(whole)
        free(o.rows)
        free(o.scores)
        free(o.floats)
        free(o.falls)
        free(o.copy)
