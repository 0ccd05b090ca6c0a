# Included by _fastdecode.pyx (one Cython module, split for reading): A Gemini generateContent body (one answer).

# ---------------------------------------------------------------- a Gemini body

cdef inline bint known(uint32_t *seen, int bit) noexcept nogil:
    """Mark a struct field seen; False if it was already (a repeated key: left to Python)."""
    if seen[0] & ((<uint32_t>1) << bit):
        return False
    seen[0] |= (<uint32_t>1) << bit
    return True

cdef double band_score(yyjson_val *v) noexcept nogil:
    """A probability band's lower bound as the reference scores a rating without a score;
    -1 for anything but the band names themselves (the reference's other spellings, enum
    numbers and UNSPECIFIED are left to it)."""
    cdef const char *p = yyjson_get_str(v)
    cdef size_t n = yyjson_get_len(v)
    if is_key(p, n, b"NEGLIGIBLE", 10) or is_key(p, n, b"SAFE", 4):
        return 0.0
    if is_key(p, n, b"LOW", 3):
        return 0.25
    if is_key(p, n, b"MEDIUM", 6):
        return 0.5
    if is_key(p, n, b"HIGH", 4):
        return 0.75
    return -1.0

cdef int read_ratings(yyjson_val *v, Out *o, const char *base) noexcept nogil:
    """Gemini `safetyRatings[]`, every one with a category name and a score in 0..1, or
    without a score but with a probability band (most Gemini API responses)."""
    cdef yyjson_arr_iter it
    cdef yyjson_obj_iter fit
    cdef yyjson_val *r
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef uint32_t seen
    cdef const char *name
    cdef size_t n
    cdef Score sc
    cdef double score, band
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
        band = -1.0
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
                if yyjson_is_str(x):
                    band = band_score(x)
            elif is_key(name, n, b"probabilityScore", 16):
                if not known(&seen, 2) or number_of(x, &score) or score > 1.0:
                    return -1
            elif is_key(name, n, b"blocked", 7):
                if not known(&seen, 3) or not (
                    yyjson_is_true(x) or yyjson_is_false(x) or yyjson_is_null(x)
                ):
                    return -1
        if score < 0.0 and not (seen & 4):
            score = band  # no probabilityScore: the band's lower bound, as the reference
        if sc.key.off < 0 or score < 0.0:
            return -1  # no category, or neither a score nor a band read here: left to Python
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

cdef int read_candidate(yyjson_val *c, Out *o, Row *row, const char *base,
                        int *reasons) noexcept nogil:
    """The primary answer into `row`: citations and text add to what earlier stream chunks
    gave (the first candidate starts the citation count at 0); a finish reason replaces the
    one before and is counted in `reasons`."""
    cdef yyjson_obj_iter it
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef uint32_t seen = 0
    cdef const char *name
    cdef size_t n
    cdef Span reason
    if not yyjson_is_obj(c) or not yyjson_obj_iter_init(c, &it):
        return -1
    if row.d[D_CITATIONS] != row.d[D_CITATIONS]:
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
            if not known(&seen, 2) or span_of(x, base, &reason, True):
                return -1
            if reason.off >= 0:
                row.s[S_FINISH] = reason
                reasons[0] += 1
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
    cdef double counts[5]
    cdef const char *name
    cdef size_t n
    if yyjson_is_null(v):
        return 0
    if not yyjson_is_obj(v) or not yyjson_obj_iter_init(v, &it):
        return -1
    for i in range(5):
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
        elif is_key(name, n, b"toolUsePromptTokenCount", 23):
            i = 4
        else:
            continue
        if not known(&seen, i) or count_of(yyjson_obj_iter_get_val(k), &counts[i]):
            return -1
    # as the reference: a usage block with a prompt or total count reads missing ones as 0
    if counts[0] == counts[0] or counts[3] == counts[3]:
        row.d[D_TIN] = (counts[0] if counts[0] == counts[0] else 0.0) + (
            counts[4] if counts[4] == counts[4] else 0.0
        )
        row.d[D_TOUT] = (counts[1] if counts[1] == counts[1] else 0.0) + (
            counts[2] if counts[2] == counts[2] else 0.0
        )
    return 0

cdef int read_prompt_feedback(yyjson_val *v, Out *o, const char *base, Span *block) noexcept nogil:
    """Gemini `promptFeedback`: its ratings, and its `blockReason` as a span (off -1: none).
    A reason the reference would rewrite (anything but upper-case letters, digits and
    underscores: it upper-cases the name) or give a name to (an enum number) is left to it."""
    cdef yyjson_obj_iter it
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef uint32_t seen = 0
    cdef const char *name
    cdef size_t n, i
    cdef char c
    block.off = -1
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
        x = yyjson_obj_iter_get_val(k)
        if is_key(name, n, b"blockReason", 11):
            if not known(&seen, 0) or span_of(x, base, block, True):
                return -1
            if block.off >= 0:
                if block.len == 0:
                    return -1
                for i in range(<size_t>block.len):
                    c = base[block.off + i]
                    if not ((c >= 65 and c <= 90) or (c >= 48 and c <= 57) or c == 95):
                        return -1
        elif is_key(name, n, b"safetyRatings", 13):
            if not known(&seen, 1) or read_ratings(x, o, base):
                return -1

cdef inline bint other_shape(const char *name, size_t n) noexcept nogil:
    """A key of a PaLM, OpenAI or error body, or a prompt block: not a plain Gemini chunk."""
    return (is_key(name, n, b"predictions", 11) or is_key(name, n, b"metadata", 8)
            or is_key(name, n, b"promptFeedback", 14) or is_key(name, n, b"choices", 7)
            or is_key(name, n, b"usage", 5) or is_key(name, n, b"model", 5)
            or is_key(name, n, b"object", 6) or is_key(name, n, b"prompt_filter_results", 21)
            or is_key(name, n, b"error", 5))

cdef int read_gemini(yyjson_val *body, Out *o, Row *row, const char *base) noexcept nogil:
    """One Gemini `generateContent` response with one answer, or a prompt it blocked (with
    no answer or one), not an error; anything else (PaLM, OpenAI, streams, several answers)
    is left to Python. A blocked prompt was the one shape of the simulated traffic read in
    Python: each poll paid the reference's fixed cost and a merge for about one line in 250."""
    cdef yyjson_obj_iter it
    cdef yyjson_arr_iter ait
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef yyjson_val *candidates = NULL
    cdef yyjson_val *c
    cdef uint32_t seen = 0
    cdef const char *name
    cdef size_t n
    cdef int reasons = 0
    cdef Span version, block
    version.off = -1
    block.off = -1
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
        elif is_key(name, n, b"promptFeedback", 14):
            if not known(&seen, 3) or read_prompt_feedback(x, o, base, &block):
                return -1
        elif other_shape(name, n):
            return -1
    c = NULL
    if candidates != NULL and not yyjson_is_null(candidates):
        if not yyjson_is_arr(candidates) or not yyjson_arr_iter_init(candidates, &ait):
            return -1
        c = yyjson_arr_iter_next(&ait)
        if c != NULL and yyjson_arr_iter_next(&ait) != NULL:
            return -1  # several answers: left to Python
    if c == NULL and block.off < 0:
        return -1  # no answer and no blocked prompt: left to Python
    if c != NULL and read_candidate(c, o, row, base, &reasons):
        return -1
    if row.s[S_MODEL_VERSION].off < 0:
        row.s[S_MODEL_VERSION] = version
    if block.off >= 0:  # the prompt's block wins over the answer's (columns() keeps it)
        row.blocked = 1
        row.stage = 1
        row.s[S_BLOCK_REASON] = block
    row.sc_n = o.n_scores - row.sc_off
    row.provider = 1
    return 0

cdef int read_gemini_stream(yyjson_val *body, Out *o, Row *row, const char *base) noexcept nogil:
    """A Gemini stream (`streamGenerateContent` as a JSON array of chunks) with one answer, as
    the reference folds its chunks: the first model version, the last usage block with a
    prompt or total count, the text and citations of every chunk, the highest score of each
    category. Left to Python: an empty stream, a chunk of another shape (or of none), a prompt
    block, several answers, two finish reasons, an empty model version."""
    cdef yyjson_arr_iter ait, cit
    cdef yyjson_obj_iter it
    cdef yyjson_val *chunk
    cdef yyjson_val *k
    cdef yyjson_val *x
    cdef yyjson_val *candidates
    cdef yyjson_val *c
    cdef uint32_t seen
    cdef const char *name
    cdef size_t n
    cdef int reasons = 0
    cdef bint gemini
    cdef Py_ssize_t chunks = 0
    cdef Span version, v
    version.off = -1
    row.sc_off = o.n_scores
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
        gemini = False
        candidates = NULL
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
                gemini = gemini or not yyjson_is_null(x)
            elif is_key(name, n, b"usageMetadata", 13):
                if not known(&seen, 1) or read_usage(x, row):
                    return -1
                gemini = gemini or not yyjson_is_null(x)
            elif is_key(name, n, b"modelVersion", 12):
                if not known(&seen, 2) or span_of(x, base, &v, True):
                    return -1
                if v.off >= 0:
                    if v.len == 0:
                        return -1  # "" then a name: the reference's `or` chain, left to it
                    if version.off < 0:
                        version = v
                    gemini = True
            elif other_shape(name, n):
                return -1
        if not gemini:
            return -1  # a chunk the reference cannot place
        if candidates == NULL or yyjson_is_null(candidates):
            continue
        if not yyjson_is_arr(candidates) or not yyjson_arr_iter_init(candidates, &cit):
            return -1
        c = yyjson_arr_iter_next(&cit)
        if c == NULL:
            continue
        if yyjson_arr_iter_next(&cit) != NULL:
            return -1  # several answers: left to Python
        if read_candidate(c, o, row, base, &reasons):
            return -1
    if chunks == 0 or reasons > 1:
        return -1
    if row.s[S_MODEL_VERSION].off < 0:
        row.s[S_MODEL_VERSION] = version
    row.sc_n = o.n_scores - row.sc_off
    row.provider = 1
    return 0
