"""Provider finish reasons → one canonical lowercase vocabulary, and which ones are blocks.

A model whose calls arrive in several wire formats (a Gemini envelope, the same call as an OTLP
span, an OpenAI-compatible gateway) must not show finish-reason drift just because each format
spells "the answer ended normally" differently. So every decoder writes `finish_reason` in
these words, matching the provider's word case-insensitively:

| provider word(s)                                                       | `finish_reason`  |
|------------------------------------------------------------------------|------------------|
| Gemini `STOP`, OpenAI `stop`                                           | `stop`           |
| Gemini `MAX_TOKENS`, OpenAI `length`                                   | `length`         |
| Gemini `SAFETY`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII`,            | `safety`         |
| `IMAGE_SAFETY`, `IMAGE_PROHIBITED_CONTENT`, `MODEL_ARMOR`;             |                  |
| OpenAI/Azure `content_filter`                                          |                  |
| Gemini `RECITATION`, `IMAGE_RECITATION`                                | `recitation`     |
| OpenAI `tool_calls`, `function_call` (the deprecated name)             | `tool_calls`     |
| anything else (`OTHER`, `MALFORMED_FUNCTION_CALL`, `FINISH_REASON_12`) | its lowercase    |

OTLP `gen_ai.response.finish_reasons` carry the provider's own words, so the same table
applies. The canonical words map to themselves, so normalising twice changes nothing and a
native record already in these words passes unchanged.

A finish reason whose canonical word is `safety` or `recitation` means the service withheld
the response: the call is blocked at the `response` stage, and `block_reason` keeps the
provider's word upper-cased (`SAFETY`, `PROHIBITED_CONTENT`, `CONTENT_FILTER`, `RECITATION`)
so the specific cause is not lost in the coarse finish reason. RECITATION counts as a block:
the answer was stopped for reproducing protected material, so the user got no (or a cut)
answer, exactly as with a harm block; `block_reason` tells the two apart.
"""

from __future__ import annotations

from collections.abc import Mapping

#: provider word, upper-cased → canonical word (see the module docstring)
CANONICAL_FINISH: Mapping[str, str] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "LENGTH": "length",
    "SAFETY": "safety",
    "BLOCKLIST": "safety",
    "PROHIBITED_CONTENT": "safety",
    "SPII": "safety",
    "IMAGE_SAFETY": "safety",
    "IMAGE_PROHIBITED_CONTENT": "safety",
    "MODEL_ARMOR": "safety",
    "CONTENT_FILTER": "safety",
    "RECITATION": "recitation",
    "IMAGE_RECITATION": "recitation",
    "TOOL_CALLS": "tool_calls",
    "FUNCTION_CALL": "tool_calls",
}

#: canonical words meaning the service withheld the response
BLOCKING_FINISH: frozenset[str] = frozenset({"safety", "recitation"})

#: raw word → canonical; bounded (the words come from the input), read on hot loops
_CACHE: dict[str, str] = {}


def canonical_finish_reason(raw: str) -> str:
    """The canonical word for a provider's finish reason (unknown words: their lowercase)."""
    cached = _CACHE.get(raw)
    if cached is not None:
        return cached
    upper = raw.strip().upper()
    out = CANONICAL_FINISH.get(upper, upper.lower())
    if len(_CACHE) < 1024:
        _CACHE[raw] = out
    return out


def response_block_reason(raw: str) -> str | None:
    """The `block_reason` a finish reason implies (the provider's word upper-cased), or None."""
    if canonical_finish_reason(raw) in BLOCKING_FINISH:
        return raw.strip().upper()
    return None


#: raw word → (canonical word, block reason or None); bounded like `_CACHE`
_FACTS: dict[str, tuple[str, str | None]] = {}


def finish_facts(raw: str) -> tuple[str, str | None]:
    """`canonical_finish_reason` and `response_block_reason` of one word in one cached lookup.

    Every Gemini and OpenAI record needs both; one dict hit instead of two calls.
    """
    facts = _FACTS.get(raw)
    if facts is None:
        facts = (canonical_finish_reason(raw), response_block_reason(raw))
        if len(_FACTS) < 1024:
            _FACTS[raw] = facts
    return facts
