# Included by _fastdecode.pyx (one Cython module, split for reading): Field names, plain values and a native record (or an envelope around a body).

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
    """Characters of a UTF-8 string, or -1 if it holds an encoded surrogate (left to Python).

    Eight bytes at a time while they are ASCII (prompts and responses nearly always are):
    counting byte by byte was the scan's largest cost after parsing itself.
    """
    cdef size_t i = 0, j
    cdef Py_ssize_t count = 0
    cdef unsigned char c
    cdef uint64_t word
    while i < n:
        if i + 8 <= n:
            memcpy(&word, p + i, 8)
            if (word & <uint64_t>0x8080808080808080) == 0:
                count += 8
                i += 8
                continue
            j = i + 8
        else:
            j = n
        while i < j:
            c = <unsigned char>p[i]
            if (c & 0xC0) != 0x80:
                count += 1
                if c == 0xED and i + 1 < n and (<unsigned char>p[i + 1]) >= 0xA0:
                    return -1
            i += 1
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
        if yyjson_get_uint(v) > EXACT_INT:
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
    if yyjson_is_uint(v) and yyjson_get_uint(v) <= EXACT_INT:
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
            if yyjson_get_uint(x) > EXACT_INT:
                return -1
            f = <double>yyjson_get_uint(x)
        elif yyjson_is_sint(x):
            if yyjson_get_sint(x) < -<int64_t>EXACT_INT:
                return -1
            f = <double>yyjson_get_sint(x)
        else:
            return -1
        if f == 0.0 and yyjson_is_sint(x):
            return -1  # an integer `-0`: how each side signs it is not worth the doubt
        # a real -0.0 is kept with its sign, as numpy's float32 cast keeps it (the simulator's
        # rounding writes one in about a tenth of its embeddings)
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
        elif f == F_TENANT:
            if span_of(v, base, &row.s[S_TENANT], True):
                return -1
        elif f == F_ENDPOINT:
            if span_of(v, base, &row.s[S_ENDPOINT], True):
                return -1
        elif f == F_PROMPT:
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
        if yyjson_is_arr(body):  # a stream of chunks
            if read_gemini_stream(body, o, row, base) == 0:
                return 0
            return read_openai_stream(body, o, row, base)
        if read_gemini(body, o, row, base) == 0:
            return 0
        if read_openai(body, o, row, base) == 0:
            return 0
        if read_prompt_filtered(body, o, row) == 0:
            return 0
        o.n_scores = row.sc_off  # what a failed OpenAI attempt scored
        return read_palm(body, o, row, base)
    return 0
