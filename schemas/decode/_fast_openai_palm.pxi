# Included by _fastdecode.pyx (one Cython module, split for reading): An OpenAI chat completion body and a Vertex AI PaLM predict body (one answer each).

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

cdef int severity_score(yyjson_val *v, double *out) noexcept nogil:
    """Azure's harm severity as the reference scores it; -1 for any other word (band words the
    reference maps through its own tables are left to it)."""
    cdef const char *p = yyjson_get_str(v)
    cdef size_t n = yyjson_get_len(v)
    if is_key(p, n, b"safe", 4):
        out[0] = 0.0
    elif is_key(p, n, b"low", 3):
        out[0] = 0.25
    elif is_key(p, n, b"medium", 6):
        out[0] = 0.5
    elif is_key(p, n, b"high", 4):
        out[0] = 0.75
    else:
        return -1
    return 0

cdef int read_filters(yyjson_val *v, Out *o, const char *base, bint *filtered) noexcept nogil:
    """Azure `content_filter_results`: a score per category (severity, else detected), and
    whether any category was filtered; a list (custom blocklists) carries none."""
    cdef yyjson_obj_iter it, fit
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef yyjson_val *f
    cdef yyjson_val *field
    cdef yyjson_val *severity
    cdef yyjson_val *detected
    cdef uint32_t seen
    cdef const char *name
    cdef size_t n
    cdef double score
    # the categories met so far: the reference reads the object as a dict, where a repeated
    # name keeps its last value, so one is left to it (escapes make equal names of unequal
    # bytes in the line, which the record's own check cannot see)
    cdef const char *categories[32]
    cdef size_t category_lens[32]
    cdef int n_categories = 0, t
    if yyjson_is_null(v):
        return 0
    if not yyjson_is_obj(v) or not yyjson_obj_iter_init(v, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            return 0
        name = yyjson_get_str(k)
        n = yyjson_get_len(k)
        for t in range(n_categories):
            if category_lens[t] == n and memcmp(categories[t], name, n) == 0:
                return -1
        if n_categories == 32:
            return -1
        categories[n_categories] = name
        category_lens[n_categories] = n
        n_categories += 1
        x = yyjson_obj_iter_get_val(k)
        if yyjson_is_arr(x):
            continue
        if not yyjson_is_obj(x) or not yyjson_obj_iter_init(x, &fit):
            return -1
        seen = 0
        severity = NULL
        detected = NULL
        while True:
            f = yyjson_obj_iter_next(&fit)
            if f == NULL:
                break
            name = yyjson_get_str(f)
            n = yyjson_get_len(f)
            field = yyjson_obj_iter_get_val(f)
            if is_key(name, n, b"filtered", 8):
                if not known(&seen, 0) or not (
                    yyjson_is_true(field) or yyjson_is_false(field) or yyjson_is_null(field)
                ):
                    return -1
                if yyjson_is_true(field):
                    filtered[0] = True
            elif is_key(name, n, b"severity", 8):
                if not known(&seen, 1) or not (yyjson_is_str(field) or yyjson_is_null(field)):
                    return -1
                severity = field
            elif is_key(name, n, b"detected", 8):
                if not known(&seen, 2) or not (
                    yyjson_is_true(field) or yyjson_is_false(field) or yyjson_is_null(field)
                ):
                    return -1
                detected = field
        if severity != NULL and yyjson_is_str(severity):
            if severity_score(severity, &score):
                return -1
        elif detected != NULL and not yyjson_is_null(detected):
            score = 1.0 if yyjson_is_true(detected) else 0.0
        else:
            continue
        if grow(<void **>&o.scores, &o.cap_scores, o.n_scores + 1, sizeof(Score)):
            return -1
        if span_of(k, base, &o.scores[o.n_scores].key, False):
            return -1
        o.scores[o.n_scores].value = score
        o.scores[o.n_scores].provider = 1
        o.n_scores += 1

cdef int read_prompt_filters(yyjson_val *v, Out *o, const char *base,
                             bint *filtered) noexcept nogil:
    """Azure `prompt_filter_results[]`: each entry's `content_filter_results`."""
    cdef yyjson_arr_iter ait
    cdef yyjson_obj_iter it
    cdef yyjson_val *p
    cdef yyjson_val *k
    cdef uint32_t seen
    if yyjson_is_null(v):
        return 0
    if not yyjson_is_arr(v) or not yyjson_arr_iter_init(v, &ait):
        return -1
    while True:
        p = yyjson_arr_iter_next(&ait)
        if p == NULL:
            return 0
        if not yyjson_is_obj(p) or not yyjson_obj_iter_init(p, &it):
            return -1
        seen = 0
        while True:
            k = yyjson_obj_iter_next(&it)
            if k == NULL:
                break
            if is_key(yyjson_get_str(k), yyjson_get_len(k), b"content_filter_results", 22):
                if not known(&seen, 0) or read_filters(
                    yyjson_obj_iter_get_val(k), o, base, filtered
                ):
                    return -1

cdef int read_choice(yyjson_val *c, Out *o, Row *row, const char *base, int *reasons,
                     bint *filtered) noexcept nogil:
    """The primary choice into `row`: text and citations add to earlier stream chunks'; a
    finish reason replaces the one before and is counted in `reasons`."""
    cdef yyjson_obj_iter it
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef uint32_t seen = 0
    cdef const char *name
    cdef size_t n
    cdef Span reason
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
            if not known(&seen, 3) or span_of(x, base, &reason, True):
                return -1
            if reason.off >= 0:
                row.s[S_FINISH] = reason
                reasons[0] += 1
        elif is_key(name, n, b"content_filter_results", 22):
            if not known(&seen, 4) or read_filters(x, o, base, filtered):
                return -1

cdef int read_openai_usage(yyjson_val *x, Row *row) noexcept nogil:
    """`usage`: a block replaces the token counts before it; a count it lacks is unknown."""
    cdef yyjson_obj_iter uit
    cdef yyjson_val *k
    cdef uint32_t useen = 0
    cdef int i
    if yyjson_is_null(x):
        return 0
    if not yyjson_is_obj(x) or not yyjson_obj_iter_init(x, &uit):
        return -1
    row.d[D_TIN] = NAN
    row.d[D_TOUT] = NAN
    while True:
        k = yyjson_obj_iter_next(&uit)
        if k == NULL:
            return 0
        if is_key(yyjson_get_str(k), yyjson_get_len(k), b"prompt_tokens", 13):
            i = D_TIN
        elif is_key(yyjson_get_str(k), yyjson_get_len(k), b"completion_tokens", 17):
            i = D_TOUT
        else:
            continue
        if not known(&useen, i) or count_of(yyjson_obj_iter_get_val(k), &row.d[i]):
            return -1

cdef inline void filter_block(Out *o, Row *row, bint prompt, bint response) noexcept nogil:
    """Azure's filters as the reference reads them: a filtered prompt blocks at the prompt
    stage, else a filtered answer at the response stage (the reason is CONTENT_FILTER)."""
    row.sc_n = o.n_scores - row.sc_off
    if prompt:
        row.blocked, row.stage = 1, 1
    elif response:
        row.blocked, row.stage = 1, 2

cdef inline bint not_openai(const char *name, size_t n) noexcept nogil:
    """A key of a PaLM, Gemini or error body: not an OpenAI chunk."""
    return (is_key(name, n, b"predictions", 11) or is_key(name, n, b"metadata", 8)
            or is_key(name, n, b"candidates", 10) or is_key(name, n, b"promptFeedback", 14)
            or is_key(name, n, b"usageMetadata", 13) or is_key(name, n, b"modelVersion", 12)
            or is_key(name, n, b"error", 5))

cdef inline void reset_openai(Out *o, Row *row) noexcept nogil:
    """What a Gemini attempt on the same body may have written."""
    o.n_scores = row.sc_off
    row.s[S_FINISH].off = -1
    row.d[D_TIN] = NAN
    row.d[D_TOUT] = NAN
    row.d[D_CITATIONS] = NAN
    row.d[D_RESPLEN] = NAN

cdef int read_openai(yyjson_val *body, Out *o, Row *row, const char *base) noexcept nogil:
    """One OpenAI (or Azure OpenAI) chat completion with one answer."""
    cdef yyjson_obj_iter it
    cdef yyjson_arr_iter ait
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef yyjson_val *choices = NULL
    cdef yyjson_val *c
    cdef uint32_t seen = 0
    cdef const char *name
    cdef size_t n
    cdef Span version
    cdef int reasons = 0
    cdef bint prompt_filtered = False, response_filtered = False
    version.off = -1
    reset_openai(o, row)
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
            if not known(&seen, 1) or read_openai_usage(x, row):
                return -1
        elif is_key(name, n, b"model", 5):
            if not known(&seen, 2) or span_of(x, base, &version, True):
                return -1
        elif is_key(name, n, b"object", 6):
            if not known(&seen, 3) or not (yyjson_is_str(x) or yyjson_is_null(x)):
                return -1
        elif is_key(name, n, b"prompt_filter_results", 21):
            if not known(&seen, 4) or read_prompt_filters(x, o, base, &prompt_filtered):
                return -1
        elif not_openai(name, n):
            return -1
    if choices == NULL or not yyjson_is_arr(choices) or not yyjson_arr_iter_init(choices, &ait):
        return -1
    c = yyjson_arr_iter_next(&ait)
    if c == NULL or yyjson_arr_iter_next(&ait) != NULL:
        return -1
    if read_choice(c, o, row, base, &reasons, &response_filtered):
        return -1
    # `chunk.model or None`: an empty name says nothing
    if row.s[S_MODEL_VERSION].off < 0 and version.off >= 0 and version.len > 0:
        row.s[S_MODEL_VERSION] = version
    filter_block(o, row, prompt_filtered, response_filtered)
    row.provider = 2
    return 0

cdef int read_openai_stream(yyjson_val *body, Out *o, Row *row, const char *base) noexcept nogil:
    """An OpenAI stream (chat completion chunks as a JSON array) with one answer, as the
    reference folds its chunks: the first non-empty model, the last usage block, the text of
    every delta, Azure's filters of every chunk. Left to Python: an empty stream, a chunk of
    another shape (or of none), several answers, two finish reasons."""
    cdef yyjson_arr_iter ait, cit
    cdef yyjson_obj_iter it
    cdef yyjson_val *chunk
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef yyjson_val *choices
    cdef yyjson_val *c
    cdef uint32_t seen
    cdef const char *name
    cdef size_t n
    cdef int reasons = 0
    cdef bint openai
    cdef Py_ssize_t chunks = 0
    cdef Span version, v
    cdef bint prompt_filtered = False, response_filtered = False
    version.off = -1
    reset_openai(o, row)
    if not yyjson_arr_iter_init(body, &ait):
        return -1
    while True:
        chunk = yyjson_arr_iter_next(&ait)
        if chunk == NULL:
            break
        chunks += 1
        if not yyjson_is_obj(chunk) or not yyjson_obj_iter_init(chunk, &it):
            return -1
        seen = 0
        openai = False
        choices = NULL
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
                openai = openai or not yyjson_is_null(x)
            elif is_key(name, n, b"usage", 5):
                if not known(&seen, 1) or read_openai_usage(x, row):
                    return -1
            elif is_key(name, n, b"model", 5):
                if not known(&seen, 2) or span_of(x, base, &v, True):
                    return -1
                if version.off < 0 and v.off >= 0 and v.len > 0:
                    version = v
            elif is_key(name, n, b"object", 6):
                if not known(&seen, 3) or not (yyjson_is_str(x) or yyjson_is_null(x)):
                    return -1
                if yyjson_is_str(x) and yyjson_get_len(x) >= 15 and memcmp(
                    yyjson_get_str(x), b"chat.completion", 15
                ) == 0:
                    openai = True
            elif is_key(name, n, b"prompt_filter_results", 21):
                if not known(&seen, 4) or read_prompt_filters(x, o, base, &prompt_filtered):
                    return -1
                openai = openai or not yyjson_is_null(x)
            elif not_openai(name, n):
                return -1
        if not openai:
            return -1  # a chunk the reference cannot place
        if choices == NULL or yyjson_is_null(choices):
            continue
        if not yyjson_is_arr(choices) or not yyjson_arr_iter_init(choices, &cit):
            return -1
        c = yyjson_arr_iter_next(&cit)
        if c == NULL:
            continue
        if yyjson_arr_iter_next(&cit) != NULL:
            return -1  # several answers: left to Python
        if read_choice(c, o, row, base, &reasons, &response_filtered):
            return -1
    if chunks == 0 or reasons > 1:
        return -1
    if row.s[S_MODEL_VERSION].off < 0 and version.off >= 0:
        row.s[S_MODEL_VERSION] = version
    filter_block(o, row, prompt_filtered, response_filtered)
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
    # beyond 2**53 first: the reference words that error, and casting a larger double to an
    # integer is undefined in C
    if number_of(x, out) or out[0] > <double>EXACT_INT or out[0] != <double>(<int64_t>out[0]):
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

# ---------------------------------------------------------------- an error body

cdef inline bint plain_str(yyjson_val *x) noexcept nogil:
    """A string (that the record's check found valid UTF-8) or null."""
    return yyjson_is_str(x) or yyjson_is_null(x)

cdef int read_prompt_filtered(yyjson_val *body, Out *o, Row *row) noexcept nogil:
    """`{"error": {"code": "content_filter", ...}}` without `innererror`: Azure OpenAI's
    prompt filter (HTTP 400), which the reference counts as a block at the prompt stage
    (`bodies.error_facts`). Every other error body, and a filter with its per-category
    results, is left to Python."""
    cdef yyjson_obj_iter it
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef yyjson_val *error = NULL
    cdef uint32_t seen = 0
    cdef const char *name
    cdef size_t n
    cdef bint filtered = False
    reset_openai(o, row)
    if not yyjson_is_obj(body) or not yyjson_obj_iter_init(body, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            break
        if error != NULL or not is_key(yyjson_get_str(k), yyjson_get_len(k), b"error", 5):
            return -1  # another key can make it another shape: left to Python
        error = yyjson_obj_iter_get_val(k)
    if error == NULL or not yyjson_is_obj(error) or not yyjson_obj_iter_init(error, &it):
        return -1
    while True:
        k = yyjson_obj_iter_next(&it)
        if k == NULL:
            break
        name = yyjson_get_str(k)
        n = yyjson_get_len(k)
        x = yyjson_obj_iter_get_val(k)
        if is_key(name, n, b"code", 4):
            if not known(&seen, 0) or not yyjson_is_str(x):
                return -1
            filtered = is_key(yyjson_get_str(x), yyjson_get_len(x), b"content_filter", 14)
        elif is_key(name, n, b"message", 7):
            if not known(&seen, 1) or not plain_str(x):
                return -1
        elif is_key(name, n, b"status", 6):
            if not known(&seen, 2) or not (
                plain_str(x) or yyjson_is_uint(x) or yyjson_is_sint(x)
            ):
                return -1
        elif is_key(name, n, b"type", 4):
            if not known(&seen, 3) or not plain_str(x):
                return -1
        elif is_key(name, n, b"innererror", 10):
            if not known(&seen, 4) or not yyjson_is_null(x):
                return -1
    if not filtered:
        return -1
    row.sc_n = 0
    row.blocked = 1
    row.stage = 1
    row.provider = 5
    return 0

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
        elif is_key(name, n, b"candidates", 10):
            return -1  # chat-bison's replies: read by the reference
    row.sc_n = o.n_scores - row.sc_off
    row.provider = 3
    return 0
