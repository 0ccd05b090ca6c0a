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
    bint yyjson_is_ctn(yyjson_val *val)
    size_t yyjson_doc_get_val_count(yyjson_doc *doc)
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
#: 2**53: integers beyond it are left to the reference (a C global: compared without the GIL)
cdef uint64_t EXACT_INT = 9007199254740992

# ---------------------------------------------------------------- what phase 1 keeps

cdef struct Span:
    Py_ssize_t off  # into the private copy; -1 = absent / null
    Py_ssize_t len

cdef enum:
    S_REQUEST_ID, S_MODEL, S_MODEL_VERSION, S_BLOCK_REASON, S_FINISH, S_ERROR, S_TRACE, S_SPAN,
    S_TENANT, S_ENDPOINT, N_SPANS

cdef enum:
    D_TS, D_LATENCY, D_TTFT, D_TIN, D_TOUT, D_CITATIONS, D_RESPLEN, N_DOUBLES

cdef struct Row:
    int64_t msg
    int64_t line
    double d[N_DOUBLES]
    Span s[N_SPANS]
    uint8_t blocked
    uint8_t stage  # 0 none, 1 prompt, 2 response
    uint8_t provider  # 0 none, 1 Gemini, 2 OpenAI, 3 PaLM body, 4 OTLP span (blocks: own words), 5 Azure prompt filter
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
include "_fast_record.pxi"
include "_fast_otlp.pxi"
include "_fast_gemini.pxi"
include "_fast_openai_palm.pxi"

# ---------------------------------------------------------------- lines and messages

cdef inline bint blank(char c) noexcept nogil:
    # the bytes `bytes.strip()` removes
    return c == 32 or c == 9 or c == 10 or c == 13 or c == 11 or c == 12

cdef enum:
    LINE_FAST, LINE_OTHER, LINE_UNREAD

cdef int read_line(Out *o, Row *row, const char *rec, Py_ssize_t n, Py_ssize_t max_depth,
                   yyjson_alc *alc) noexcept nogil:
    """LINE_FAST (kept in `row`), LINE_OTHER (valid JSON, not read here) or LINE_UNREAD."""
    cdef yyjson_doc *doc
    cdef yyjson_val *root
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
    root = yyjson_doc_get_root(doc)
    if (yyjson_doc_get_val_count(doc) > <size_t>max_depth and yyjson_is_ctn(root)
            and nests_deeper(root, max_depth)):
        yyjson_doc_free(doc)
        return LINE_UNREAD  # too deep: the reference refuses it, naming decode.max_depth
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


cdef bint nests_deeper(yyjson_val *v, Py_ssize_t room) noexcept nogil:
    """Whether container `v` nests more than `room` levels deep (itself counted): the parsed
    form of the reference's `guards.too_deep`, which such a line is left to. Walking the
    parsed values costs about a nanosecond each; a pass over the bytes cost several times more.
    The recursion is bounded by `room` (decode.max_depth): yyjson itself parses iteratively."""
    cdef yyjson_arr_iter ai
    cdef yyjson_obj_iter oi
    cdef yyjson_val *x
    if room <= 0:
        return True
    if yyjson_is_arr(v):
        yyjson_arr_iter_init(v, &ai)
        while True:
            x = yyjson_arr_iter_next(&ai)
            if x == NULL:
                return False
            if yyjson_is_ctn(x) and nests_deeper(x, room - 1):
                return True
    yyjson_obj_iter_init(v, &oi)
    while True:
        x = yyjson_obj_iter_next(&oi)
        if x == NULL:
            return False
        x = yyjson_obj_iter_get_val(x)
        if yyjson_is_ctn(x) and nests_deeper(x, room - 1):
            return True


cdef int scan_message(Out *o, int64_t msg, const char *data, Py_ssize_t n, int64_t first_line,
                      Py_ssize_t max_bytes, Py_ssize_t max_depth, Py_ssize_t want_dim,
                      yyjson_alc *alc) noexcept nogil:
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
                kind = read_line(o, row, data + a, b - a, max_depth, alc)
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


cdef object text(Out *o, Span s):
    if s.off < 0:
        return None
    return PyUnicode_DecodeUTF8(o.copy + s.off, s.len, NULL)


cdef object same_or_text(Out *o, Span s, Span *last, object last_text):
    """`text(o, s)`, or `last_text` when its bytes (span `last`) are the same: model names,
    versions, tenants and endpoints repeat row after row, so a compare replaces a new string."""
    if s.off < 0:
        return None
    if (last_text is not None and last.len == s.len
            and memcmp(o.copy + last.off, o.copy + s.off, s.len) == 0):
        return last_text
    last[0] = s
    return text(o, s)


#: (provider word, from a span) → (canonical finish reason, block reason): two Python calls per
#: row otherwise; bounded like the reference's own caches
_PROVIDER_FINISH: dict = {}


cdef tuple provider_finish(Out *o, Span s, bint span):
    """A provider's finish word → (canonical finish reason, block reason or None), as the
    reference derives them: a span's word directly, a body's through `finish_facts`."""
    cdef object raw = PyUnicode_DecodeUTF8(o.copy + s.off, s.len, NULL)
    cdef object key = (raw, span)
    cdef object out = _PROVIDER_FINISH.get(key)
    if out is None:
        if span:
            out = (canonical_finish_reason(raw), response_block_reason(raw))
        else:
            word, block = finish_facts(raw)
            out = (canonical_finish_reason(word), block)
        if len(_PROVIDER_FINISH) < 1024:
            _PROVIDER_FINISH[key] = out
    return <tuple>out


#: distinct finish words `columns` remembers per call (more are looked up each time)
cdef enum:
    KNOWN_FINISHES = 16


cdef struct FinishCache:
    Py_ssize_t n
    const char *word[KNOWN_FINISHES]
    Py_ssize_t len[KNOWN_FINISHES]
    bint span[KNOWN_FINISHES]


cdef tuple finish_of(Out *o, Span s, bint span, FinishCache *seen, list results):
    """`provider_finish`, remembered by the word's bytes for the rest of the call: a poll
    repeats a few finish words on every row, and a new str and a dict lookup per row were a
    quarter of building the columns."""
    cdef Py_ssize_t t
    cdef const char *word = o.copy + s.off
    for t in range(seen.n):
        if (seen.len[t] == s.len and seen.span[t] == span
                and memcmp(seen.word[t], word, s.len) == 0):
            return <tuple>results[t]
    out = provider_finish(o, s, span)
    if seen.n < KNOWN_FINISHES:
        seen.word[seen.n] = word
        seen.len[seen.n] = s.len
        seen.span[seen.n] = span
        seen.n += 1
        results.append(out)
    return out


cdef dict columns(Out *o, list datas):
    """The fast rows as numpy columns. Object columns are made as arrays (numpy fills them
    with None) and only the values a row has are set, through typed views: assigning whole
    lists (`column[:] = values`) made numpy discover each item's type, 4 ms per 100k rows and
    column even when they were all None, a third of a scan of plain native lines."""
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
    names = ("request_id", "model", "model_version", "block_reason", "finish_reason", "error",
             "tenant", "endpoint", "block_stage")
    arrays = [np.empty(n, dtype=object) for _ in names]
    cdef object[::1] ids = arrays[0], models = arrays[1], versions = arrays[2]
    cdef object[::1] reasons = arrays[3], finishes = arrays[4], errors = arrays[5]
    cdef object[::1] tenants = arrays[6], endpoints = arrays[7], stages = arrays[8]
    cdef Span last_model, last_version, last_tenant, last_endpoint
    cdef object model = None, version = None, tenant = None, endpoint = None, value
    cdef FinishCache finishes_seen
    finishes_seen.n = 0
    cdef list finish_results = []
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
        value = same_or_text(o, r.s[S_MODEL], &last_model, model)
        if value is not None:
            models[i] = model = value
        if r.s[S_MODEL_VERSION].off >= 0:
            versions[i] = version = same_or_text(o, r.s[S_MODEL_VERSION], &last_version, version)
        if r.s[S_TENANT].off >= 0:
            tenants[i] = tenant = same_or_text(o, r.s[S_TENANT], &last_tenant, tenant)
        if r.s[S_ENDPOINT].off >= 0:
            endpoints[i] = endpoint = same_or_text(o, r.s[S_ENDPOINT], &last_endpoint, endpoint)
        if r.s[S_BLOCK_REASON].off >= 0:
            reasons[i] = text(o, r.s[S_BLOCK_REASON])
        if r.provider == 4:
            if r.s[S_FINISH].off >= 0:
                finish, block = finish_of(o, r.s[S_FINISH], True, &finishes_seen, finish_results)
                finishes[i] = finish
                if block is not None:
                    blocked_v[i] = 1
                    stages[i] = "response"
                    reasons[i] = block
        elif r.provider == 3:
            if r.blocked:
                reasons[i] = "SAFETY"
        elif r.provider == 5:  # Azure's prompt filter, as an error body
            reasons[i] = "CONTENT_FILTER"
        elif r.provider:
            if r.s[S_FINISH].off >= 0:
                finish, block = finish_of(o, r.s[S_FINISH], False, &finishes_seen, finish_results)
                finishes[i] = finish
                if block is not None and r.stage != 1:  # a blocked prompt's block wins
                    blocked_v[i] = 1
                    stages[i] = "response"
                    reasons[i] = block if r.provider == 1 else "CONTENT_FILTER"
            if r.provider == 2 and r.blocked:  # Azure's filters
                reasons[i] = "CONTENT_FILTER"
        elif r.s[S_FINISH].off >= 0:  # a native record's word: blocking ones block
            finish, block = finish_of(o, r.s[S_FINISH], True, &finishes_seen, finish_results)
            finishes[i] = finish
            if block is not None and not r.blocked:
                blocked_v[i] = 1
                if not r.stage:
                    stages[i] = "response"
                if r.s[S_BLOCK_REASON].off < 0 or r.s[S_BLOCK_REASON].len == 0:
                    reasons[i] = block  # as the reference's `block_reason or block`
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
    for name, column in zip(names, arrays):
        out[name] = column
    out["safety_scores"] = score_columns(o, n)
    flat = np.empty(o.n_floats, dtype=np.float32)
    cdef float[::1] flat_v = flat
    if o.n_floats:
        memcpy(&flat_v[0], o.floats, o.n_floats * sizeof(float))
    out["embedding_values"] = flat
    return out


#: distinct key spellings `score_columns` remembers per call (more are decoded each time)
cdef enum:
    KNOWN_KEYS = 32


cdef dict score_columns(Out *o, Py_ssize_t n):
    """category → float64 column (NaN where a row had no score for it)."""
    cdef Py_ssize_t i, j
    cdef Row *r
    index: dict = {}
    cdef Py_ssize_t t, found
    # the key spellings met so far, as bytes in the copy: a poll repeats a handful of category
    # names on every row, and making a str of each (then hashing it twice) was a third of the
    # decode's time with the GIL held
    cdef const char *seen_key[KNOWN_KEYS]
    cdef Py_ssize_t seen_len[KNOWN_KEYS]
    cdef uint8_t seen_provider[KNOWN_KEYS]
    cdef int64_t seen_column[KNOWN_KEYS]
    cdef Py_ssize_t n_seen = 0
    cdef const char *key_bytes
    cdef Py_ssize_t key_len
    # each score's column, found once: the columns are filled in one pass below, because
    # numpy's `fmax.at` on a mask per category was a fifth of the decode's time
    cdef int64_t *column_of = <int64_t *>malloc(max(o.n_scores, 1) * sizeof(int64_t))
    if column_of == NULL:
        raise MemoryError
    cdef double[:, ::1] table_v
    cdef double value, cell
    try:
        for i in range(n):
            r = &o.rows[i]
            for j in range(r.sc_off, r.sc_off + r.sc_n):
                key_bytes = o.copy + o.scores[j].key.off
                key_len = o.scores[j].key.len
                found = -1
                for t in range(n_seen):
                    if (seen_len[t] == key_len and seen_provider[t] == o.scores[j].provider
                            and memcmp(seen_key[t], key_bytes, key_len) == 0):
                        found = seen_column[t]
                        break
                if found < 0:
                    key = PyUnicode_DecodeUTF8(key_bytes, key_len, NULL)
                    if o.scores[j].provider:
                        key = CATEGORY_CACHE.get(key) or normalise_category(key)
                    found = index.setdefault(key, len(index))
                    if n_seen < KNOWN_KEYS:
                        seen_key[n_seen] = key_bytes
                        seen_len[n_seen] = key_len
                        seen_provider[n_seen] = o.scores[j].provider
                        seen_column[n_seen] = found
                        n_seen += 1
                column_of[j] = found
        table = np.full((len(index), n), np.nan, dtype=np.float64)
        if len(index):
            table_v = table
            for i in range(n):
                r = &o.rows[i]
                for j in range(r.sc_off, r.sc_off + r.sc_n):
                    # a provider may rate one category twice (two spellings): the highest
                    # wins, as numpy's fmax takes it (the first of equals; NaN loses)
                    value = o.scores[j].value
                    cell = table_v[column_of[j], i]
                    if not (cell >= value or value != value):
                        table_v[column_of[j], i] = value
    finally:
        free(column_of)
    return {key: table[c] for key, c in sorted(index.items())}


# ---------------------------------------------------------------- buffers kept between calls

#: one call's buffers, kept for the next (the pages stay mapped: fresh ones cost a page fault
#: each, about a twentieth of a scan); a call that finds them in use allocates its own
cdef Out _spare
memset(&_spare, 0, sizeof(Out))
cdef bint _spare_busy = False
#: buffers larger than this (bytes, all together) are freed rather than kept
cdef Py_ssize_t KEEP_BYTES = 64 * 1024 * 1024


cdef void take_spare(Out *o, bint *took):
    """Start `o` with the kept buffers when free (the GIL makes the check and the take one step)."""
    global _spare_busy
    memset(o, 0, sizeof(Out))
    took[0] = False
    if not _spare_busy:
        _spare_busy = True
        took[0] = True
        o[0] = _spare
        o.n_rows = o.n_scores = o.n_floats = o.n_falls = o.n_copy = 0


cdef void release(Out *o, bint took):
    """Keep `o`'s buffers for the next call when they were the kept ones and are not huge."""
    global _spare_busy, _spare
    cdef Py_ssize_t size = (o.cap_rows * sizeof(Row) + o.cap_scores * sizeof(Score)
                            + o.cap_floats * sizeof(float) + o.cap_falls * sizeof(Fallback)
                            + o.cap_copy)
    if took and size <= KEEP_BYTES:
        _spare = o[0]
        _spare_busy = False
        return
    free(o.rows)
    free(o.scores)
    free(o.floats)
    free(o.falls)
    free(o.copy)
    if took:
        memset(&_spare, 0, sizeof(Out))
        _spare_busy = False


def scan(list datas, list first_lines, list eligible, Py_ssize_t max_bytes, Py_ssize_t max_depth,
         Py_ssize_t want_dim):
    """Phase 1 over a poll (GIL released), then its columns.

    Returns (columns of the fast rows, [(message, line, start, end, valid JSON) of each other
    line],
    [messages left whole to the reference]). `eligible[i]` false: message i is left whole.
    """
    cdef Py_ssize_t m = len(datas), i
    cdef Out o
    cdef bint took
    take_spare(&o, &took)
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
                                          max_depth, want_dim, alc)
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
        release(&o, took)
