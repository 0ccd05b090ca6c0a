"""Alerts between the sink and the receivers: at-least-once paging across a crash.

A checkpoint stores its alerts, and only once the write landed are they handed to the
receivers' persisted outbox. A process killed between the two left an alert in the `alerts`
table that no receiver ever got, and nothing would send it: the alert state says it was sent,
and the window reads as judged. So the alerts are noted in a journal (the outbox's file) before
the write and struck off once handed on. The evaluator that starts next asks the sink which
noted alerts landed and sends those; the others belonged to a checkpoint that never landed,
whose windows are judged again (and page again) from what the sink holds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from schemas.detection import Alert, AlertChangeKey
from worker.sink import Sink

log = logging.getLogger("lookout.engine")


class HandoffJournal(Protocol):
    """What `Outbox` offers the engine (one SQLite file beside the sink)."""

    def prepare_handoff(self, alerts: Sequence[Alert]) -> None: ...

    def handed_off(self, alerts: Sequence[Alert]) -> None: ...

    def pending_handoffs(self) -> list[Alert]: ...


class AlertHandoff:
    """The engine's side of the journal; a journal that fails costs the guarantee (logged as
    an error), never a checkpoint."""

    def __init__(self, journal: HandoffJournal | None, sink: Sink) -> None:
        self._journal = journal
        self._sink = sink
        #: a previous run's noted alerts not yet checked against the sink (it could not be read)
        self.unchecked = journal is not None
        #: changes the previous run stored, and this one sent at start
        self._recovered: set[AlertChangeKey] = set()

    def prepare(self, alerts: Sequence[Alert]) -> None:
        if self._journal is None or not alerts:
            return
        try:
            self._journal.prepare_handoff(alerts)
        except Exception as error:
            log.error(
                "could not note %d alert(s) before storing them (%s): if this process dies "
                "before they reach the receivers, their pages are lost",
                len(alerts),
                error,
            )

    def handed(self, alerts: Sequence[Alert]) -> None:
        if self._journal is None or not alerts:
            return
        try:
            self._journal.handed_off(alerts)
        except Exception as error:  # harmless: a later start pages for them again
            log.warning("could not strike %d handed-off alert(s): %s", len(alerts), error)

    def recover(self, this_run: Sequence[Alert] = ()) -> list[Alert]:
        """The previous run's alerts that the sink stored and no receiver got (empty when
        there are none, or when the journal or the sink cannot be read yet: `unchecked` says
        which, and the engine asks again after its next checkpoint). `this_run`: alerts this
        process noted itself (a late call finds them in the journal too)."""
        if self._journal is None or not self.unchecked:
            return []
        own = {a.fingerprint for a in this_run}
        try:
            noted = [a for a in self._journal.pending_handoffs() if a.fingerprint not in own]
            stored = self._sink.stored_alerts(noted) if noted else frozenset()
        except Exception as error:
            log.warning("cannot yet tell which unsent alerts were stored: %s", error)
            return []
        self.unchecked = False
        landed = [a for a in noted if a.change_key in stored]
        never_stored = [a for a in noted if a.change_key not in stored]
        if never_stored:
            log.info(
                "%d alert(s) of a checkpoint that never landed are dropped: their windows "
                "are judged again",
                len(never_stored),
            )
            self.handed(never_stored)
        if landed:
            shown = ", ".join(f"{a.dedup_key} {a.status}" for a in landed[:5])
            more = f" and {len(landed) - 5} more" if len(landed) > 5 else ""
            log.warning(
                "sending %d alert change(s) the previous run stored but stopped before "
                "handing to its notifiers: %s%s",
                len(landed),
                shown,
                more,
            )
        self._recovered.update(a.change_key for a in landed)
        return landed

    def not_recovered(self, alerts: Sequence[Alert]) -> list[Alert]:
        """`alerts` without the changes recovered at start. A sink that writes a checkpoint
        table by table (BigQuery) can hold a window's alert without its detections: the window
        is judged again and makes the same change, which is stored and was sent already."""
        if not self._recovered:
            return list(alerts)
        kept = [a for a in alerts if a.change_key not in self._recovered]
        if len(kept) < len(alerts):
            log.info(
                "%d alert(s) of a window judged again were stored and sent already",
                len(alerts) - len(kept),
            )
        return kept
