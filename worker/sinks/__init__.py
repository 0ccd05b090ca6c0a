"""Where window states land: the DuckDB (embedded) and BigQuery sinks (the I/O shell)."""
