"""Wire formats → canonical columns (see schemas.decode.api)."""

from schemas.decode.api import (
    FORMATS,
    DecodedMessage,
    DecodeLimits,
    decode_message,
    decode_records,
)

__all__ = ["FORMATS", "DecodeLimits", "DecodedMessage", "decode_message", "decode_records"]
