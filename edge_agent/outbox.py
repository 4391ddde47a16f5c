"""The agent's on-disk event outbox: smart-park events wait here, numbered, until the broker has acknowledged them.

SQLite in WAL mode with `synchronous=FULL`: an event the pipeline has handed over survives a crash, a power cut
and a reboot, and commits are one per batch of events (a few per second at most), so syncing each costs nothing
noticeable. Events leave in `seq` order and are deleted once acknowledged (`mark_sent`).
"""

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

import msgspec

import fleet_protocol as fp

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(fp.EventBody)


class EventOutbox:
    """Durable, ordered queue of `fp.EventBody` on one SQLite file; safe to share between threads.

    `seq` comes from a counter kept in the same file (not from the table, whose rows are pruned), so it keeps
    increasing by one per event across restarts.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._added = threading.Condition(self._lock)
        # One connection guarded by a lock: SQLite serializes writers anyway, and the outbox is not hot.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def add(self, events: Iterable[dict | fp.EventBody]) -> list[fp.EventBody]:
        """Number and persist a batch of events in one transaction; returns them as sent on the wire.

        Each event is an `fp.EventBody` or a dict of its fields without `seq`; an invalid one raises
        ValueError before anything is written.
        """
        bodies = []
        for event in events:
            fields = msgspec.structs.asdict(event) if isinstance(event, fp.EventBody) else dict(event)
            fields["seq"] = 0
            try:
                bodies.append(msgspec.convert(fields, fp.EventBody))
            except msgspec.ValidationError as exc:
                raise ValueError(f"not a valid event: {exc}") from None
        if not bodies:
            return []
        with self._added:
            cursor = self._db.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                row = cursor.execute("SELECT value FROM counters WHERE name = 'next_seq'").fetchone()
                first = row[0] if row else 1
                numbered = [msgspec.structs.replace(body, seq=first + i) for i, body in enumerate(bodies)]
                cursor.executemany(
                    "INSERT INTO events (seq, body) VALUES (?, ?)", [(b.seq, _encoder.encode(b)) for b in numbered]
                )
                cursor.execute(
                    "INSERT INTO counters (name, value) VALUES ('next_seq', ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (first + len(numbered),),
                )
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            self._added.notify_all()
        return numbered

    def pending(self, limit: int = 100, after_seq: int = 0) -> list[fp.EventBody]:
        """The oldest unsent events (after `after_seq`, if given), in seq order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
            ).fetchall()
        return [_decoder.decode(body) for (body,) in rows]

    def mark_sent(self, up_to_seq: int) -> int:
        """Forget every event up to and including `up_to_seq` (the broker has them); returns how many."""
        with self._lock:
            return self._db.execute("DELETE FROM events WHERE seq <= ?", (up_to_seq,)).rowcount

    def depth(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def wait_for_events(self, timeout: float, after_seq: int = 0) -> bool:
        """Block until an event after `after_seq` is waiting (True) or `timeout` passes (False)."""
        with self._added:
            return (
                self._added.wait_for(
                    lambda: self._db.execute("SELECT 1 FROM events WHERE seq > ? LIMIT 1", (after_seq,)).fetchone(),
                    timeout,
                )
                is not None
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "EventOutbox":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
