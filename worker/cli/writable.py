"""Whether a file the configuration names can be written where it is asked for.

`config check` said ok for a DuckDB sink in a folder nobody may write to (`/sys`, a read-only
mount, a folder of another user) and for a sink path naming a file that is not a DuckDB
database (`logs.ndjson`): `lookout run` then stopped on DuckDB's "IO Error: Cannot open file
... Permission denied" or on the sink's refusal, after the check had passed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cannot_write(path: Path) -> str | None:
    """Why a file cannot be written at `path` (its folder exists), or None. Tried, not
    inferred from permission bits: root passes every `access` check, and a read-only mount or
    a pseudo file system refuses writes whatever the bits say. The folder is tried too for an
    existing file: DuckDB creates its write-ahead log (`<file>.wal`) beside it. Nothing is
    changed but the folder's modification time: an existing file is opened for appending and
    closed, the probe file is removed at once."""
    try:
        if path.is_file():
            with path.open("ab"):
                pass
        handle, probe = tempfile.mkstemp(dir=path.parent, prefix=".lookout-check-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        return error.strerror or str(error)
    return None


def foreign_sink_file(path: Path) -> str | None:
    """The sink's own refusal of an existing file that is not a DuckDB database, or None."""
    from worker.errors import SetupError
    from worker.sinks.duckdb_sink import refuse_foreign_file

    try:
        refuse_foreign_file(path)
    except SetupError as error:
        return str(error)
    return None
