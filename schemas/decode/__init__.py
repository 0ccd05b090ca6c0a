"""Wire formats → canonical columns (see schemas.decode.api)."""
