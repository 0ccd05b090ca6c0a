"""Provider safety vocabularies → Lookout's: category names, scores in 0..1, block reasons.

Scores: a numeric probability (`probabilityScore`, PaLM `scores[]`) is used as is. When a
provider sends only a band (Gemini `probability`, Azure `severity`), the band maps to its lower
bound — NEGLIGIBLE/safe 0.0, LOW 0.25, MEDIUM 0.5, HIGH 0.75 — so a HIGH band meets the safety
detector's "high" threshold (≥ 0.75) and nothing below HIGH does: the bound never overstates what
the provider said. Azure's binary classifiers (`jailbreak`, `protected_material_*`) carry
`detected` instead of a severity: detected → 1.0, not detected → 0.0.

Integer enums appear when Vertex AI is called with `enum-encoding=int`; the numbers below are
Vertex AI's (google.cloud.aiplatform v1). A number we do not know is kept as
`<ENUM>_<n>` rather than guessed, so it is visible in reports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

BAND_SCORES: Mapping[str, float] = {
    "NEGLIGIBLE": 0.0,
    "SAFE": 0.0,
    "LOW": 0.25,
    "MEDIUM": 0.5,
    "HIGH": 0.75,
}

VERTEX_HARM_PROBABILITY: Mapping[int, str] = {1: "NEGLIGIBLE", 2: "LOW", 3: "MEDIUM", 4: "HIGH"}
VERTEX_HARM_CATEGORY: Mapping[int, str] = {
    1: "HARM_CATEGORY_HATE_SPEECH",
    2: "HARM_CATEGORY_DANGEROUS_CONTENT",
    3: "HARM_CATEGORY_HARASSMENT",
    4: "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    5: "HARM_CATEGORY_CIVIC_INTEGRITY",
}
VERTEX_FINISH_REASON: Mapping[int, str] = {
    0: "FINISH_REASON_UNSPECIFIED",
    1: "STOP",
    2: "MAX_TOKENS",
    3: "SAFETY",
    4: "RECITATION",
    5: "OTHER",
    6: "BLOCKLIST",
    7: "PROHIBITED_CONTENT",
    8: "SPII",
    9: "MALFORMED_FUNCTION_CALL",
}
VERTEX_BLOCK_REASON: Mapping[int, str] = {
    0: "BLOCKED_REASON_UNSPECIFIED",
    1: "SAFETY",
    2: "OTHER",
    3: "BLOCKLIST",
    4: "PROHIBITED_CONTENT",
}

_PREFIXES = ("HARM_CATEGORY_",)
_NON_WORD = re.compile(r"[^0-9a-zA-Z]+")
#: raw category name → normalised; bounded (see normalise_category), read directly on hot loops
CATEGORY_CACHE: dict[str | int, str] = {}
#: Azure severities as sent, for a lookup without normalising case
SEVERITY_SCORES: Mapping[str, float] = {"safe": 0.0, "low": 0.25, "medium": 0.5, "high": 0.75}


def enum_name(value: str | int, names: Mapping[int, str], kind: str) -> str:
    """A protobuf enum as its name, whichever way it was encoded."""
    if isinstance(value, str):
        return value
    return names.get(value, f"{kind}_{value}")


def normalise_category(raw: str | int) -> str:
    """`HARM_CATEGORY_HATE_SPEECH` → `hate_speech`, `Illicit Drugs` → `illicit_drugs`."""
    cached = CATEGORY_CACHE.get(raw)
    if cached is not None:
        return cached
    name = VERTEX_HARM_CATEGORY.get(raw, f"harm_category_{raw}") if isinstance(raw, int) else raw
    for prefix in _PREFIXES:
        if name.upper().startswith(prefix):
            name = name[len(prefix) :]
    out = _NON_WORD.sub("_", name).strip("_").lower()
    if len(CATEGORY_CACHE) < 4096:  # bounded: category names come from the input
        CATEGORY_CACHE[raw] = out
    return out


def band_score(band: str | int | None) -> float | None:
    """Lower bound of a probability/severity band; None for unknown or unspecified bands."""
    if band is None:
        return None
    if isinstance(band, int):
        band = VERTEX_HARM_PROBABILITY.get(band, "")
    key = band.upper()
    if key.startswith("HARM_SEVERITY_"):
        key = key[len("HARM_SEVERITY_") :]
    return BAND_SCORES.get(key)


def put_max(scores: dict[str, float], category: str, score: float) -> None:
    """Keep the highest score per category (several candidates, chunks or prompt + response)."""
    old = scores.get(category)
    if old is None or score > old:
        scores[category] = score
