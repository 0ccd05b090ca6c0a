# Included by _fastdecode.pyx (one Cython module, split for reading): A Cloud Logging LogEntry around a record, and an OTLP export of one GenAI span.

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
    A_COMPLETION, A_FINISH, A_ERROR_TYPE, A_OPERATION, N_ATTRS

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
    if is_key(k, n, b"gen_ai.operation.name", 21): return A_OPERATION
    return A_OTHER

cdef bint not_a_model_call(yyjson_val *v) noexcept nogil:
    """`schemas.decode.otlp.NOT_MODEL_CALLS`: an agent's or a tool's span."""
    cdef const char *p = yyjson_get_str(v)
    cdef size_t n = yyjson_get_len(v)
    return (is_key(p, n, b"invoke_agent", 12) or is_key(p, n, b"create_agent", 12)
            or is_key(p, n, b"execute_tool", 12))

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
    if attr[A_OPERATION] != NULL and not_a_model_call(attr[A_OPERATION]):
        return -1  # not a model call: no record either
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
