"""The embedded Celery broker: a kombu transport on a SQLite file (``sqlite:///abs/path/broker.sqlite3``).

For ``make run`` and small installs with no broker server; production uses Redis. What it guarantees:

- **Atomic:** a message is one row, written in one transaction; a reader never sees half a message (the
  filesystem transport it replaces did, and the worker crashed on the JSON it half read).
- **Nothing lost:** a worker *claims* a message (a conditional UPDATE) and deletes it only when the task is
  acknowledged. Each worker keeps a heartbeat row while it runs; the claims of a worker whose heartbeat stopped
  (killed, crashed) become free again and another worker, or the same one restarted, runs them.
- **At least once:** a task that finished in the instant between running and its acknowledgement runs again
  after a kill. The control plane's tasks are idempotent (per-cluster leases, "already there" is success).

Exchanges and bindings live in each process's memory, as with kombu's other virtual transports: direct and
topic routing work, fanout (Celery's remote control, mingle, gossip) does not; start workers with
``--without-mingle --without-gossip``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from queue import Empty
from typing import Any

from kombu.transport import virtual

STALE_AFTER_S = 10.0  # a worker whose heartbeat is older than this is gone; its claims are free again
HEARTBEAT_EVERY_S = 1.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    tag TEXT,
    payload TEXT NOT NULL,
    claimed_by TEXT,
    claimed_at REAL,
    deliveries INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_queue ON messages (queue, claimed_by, id);
CREATE INDEX IF NOT EXISTS messages_tag ON messages (tag);
CREATE TABLE IF NOT EXISTS consumers (id TEXT PRIMARY KEY, pid INTEGER, seen REAL NOT NULL);
"""


class Store:
    """One SQLite file, one connection per thread (acks come from the worker's pool threads)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.local = threading.local()
        self.consumer_id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.last_heartbeat = 0.0
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with self.connect() as db:
            db.executescript(SCHEMA)

    def connect(self) -> sqlite3.Connection:
        db = getattr(self.local, "db", None)
        if db is None or getattr(self.local, "pid", None) != os.getpid():
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self.local.db, self.local.pid = db, os.getpid()
        return db

    def put(self, queue: str, message: dict) -> None:
        tag = (message.get("properties") or {}).get("delivery_tag")
        self.connect().execute(
            "INSERT INTO messages (queue, tag, payload) VALUES (?, ?, ?)", (queue, tag, json.dumps(message))
        )

    def heartbeat(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self.last_heartbeat >= HEARTBEAT_EVERY_S:
            self.connect().execute(
                "INSERT INTO consumers (id, pid, seen) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET seen = ?",
                (self.consumer_id, os.getpid(), now, now),
            )
            self.last_heartbeat = now

    def claim(self, queue: str) -> dict | None:
        """Claim the oldest free message of the queue (free: unclaimed, or claimed by a worker that is gone).

        Between polls, SQLite's ``data_version`` says whether anyone else committed: when nobody did, there is
        nothing new to read (so an idle worker costs one pragma per poll); a full look runs at least once a second
        anyway, for the claims of workers that died.
        """
        self.heartbeat()
        db = self.connect()
        now = time.time()
        version = db.execute("PRAGMA data_version").fetchone()[0]
        seen = self.local.__dict__.setdefault("seen", {})
        if not self.local.__dict__.get("more") and seen.get(queue) == version and now - seen.get("at", 0) < 1.0:
            return None
        seen[queue], seen["at"] = version, now
        stale = now - STALE_AFTER_S
        while True:
            row = db.execute(
                "SELECT m.id, m.payload, m.claimed_by FROM messages m LEFT JOIN consumers c ON c.id = m.claimed_by "
                "WHERE m.queue = ? AND (m.claimed_by IS NULL OR c.id IS NULL OR c.seen < ?) ORDER BY m.id LIMIT 1",
                (queue, stale),
            ).fetchone()
            if row is None:
                self.local.more = False
                return None
            row_id, payload, previous = row
            taken = db.execute(
                "UPDATE messages SET claimed_by = ?, claimed_at = ?, deliveries = deliveries + 1 "
                "WHERE id = ? AND claimed_by IS ?",
                (self.consumer_id, time.time(), row_id, previous),
            ).rowcount
            if taken:  # the conditional UPDATE lost to no one
                self.local.more = True  # there may be more: look again at the next poll
                message = json.loads(payload)
                if previous is not None:
                    message["redelivered"] = True
                return message

    def ack(self, tag: str) -> None:
        self.connect().execute("DELETE FROM messages WHERE tag = ? AND claimed_by = ?", (tag, self.consumer_id))

    def release(self, tag: str) -> None:
        self.connect().execute(
            "UPDATE messages SET claimed_by = NULL, claimed_at = NULL WHERE tag = ? AND claimed_by = ?",
            (tag, self.consumer_id),
        )

    def release_all(self) -> None:
        db = self.connect()
        db.execute("UPDATE messages SET claimed_by = NULL, claimed_at = NULL WHERE claimed_by = ?", (self.consumer_id,))
        db.execute("DELETE FROM consumers WHERE id = ?", (self.consumer_id,))

    def size(self, queue: str) -> int:
        return self.connect().execute("SELECT COUNT(*) FROM messages WHERE queue = ?", (queue,)).fetchone()[0]

    def purge(self, queue: str) -> int:
        return self.connect().execute("DELETE FROM messages WHERE queue = ?", (queue,)).rowcount


_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


def store_for(path: str) -> Store:
    with _stores_lock:
        store = _stores.get(path)
        if store is None or store.consumer_id.split("-")[0] != str(os.getpid()):
            store = _stores[path] = Store(path)
        return store


class QoS(virtual.QoS):
    """Acknowledgement deletes the row; rejection with requeue (and a graceful shutdown) frees the claim."""

    def ack(self, delivery_tag: Any) -> None:
        self.channel.store.ack(delivery_tag)
        super().ack(delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if requeue:
            self.channel.store.release(delivery_tag)
        else:
            self.channel.store.ack(delivery_tag)
        self._quick_ack(delivery_tag)

    def restore_unacked(self) -> list:
        self._flush()
        for tag in list(self._delivered):
            self.channel.store.release(tag)
        self._delivered.clear()
        return []


class Channel(virtual.Channel):
    QoS = QoS
    do_restore = True

    @property
    def store(self) -> Store:
        path = self.connection.client.virtual_host or "broker.sqlite3"
        return store_for(path if path.startswith("/") else "/" + path)

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        pass  # a queue is the set of rows that name it

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return True

    def _put(self, queue: str, message: dict, **kwargs: Any) -> None:
        self.store.put(queue, message)

    def _get(self, queue: str, timeout: float | None = None) -> dict:
        message = self.store.claim(queue)
        if message is None:
            raise Empty()
        return message

    def _restore(self, message: Any) -> None:
        self.store.release(message.delivery_tag)

    def _size(self, queue: str) -> int:
        return self.store.size(queue)

    def _purge(self, queue: str) -> int:
        return self.store.purge(queue)

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self.store.purge(queue)

    def close(self) -> None:
        if not self.closed and self._consumers:
            try:
                self.qos.restore_unacked_once()
                self.store.release_all()
            except sqlite3.Error:  # the file went away: nothing left to release
                pass
        super().close()


class Transport(virtual.Transport):
    Channel = Channel
    polling_interval = 0.01  # a write reaches the worker within ~10 ms; an idle poll is one pragma
    default_port = None
    driver_type = "sqlite"
    driver_name = "sqlite3"
    implements = virtual.Transport.implements.extend(asynchronous=False, exchange_type=frozenset(["direct", "topic"]))

    def driver_version(self) -> str:
        return sqlite3.sqlite_version


def register() -> None:
    """Make ``sqlite://`` broker URLs mean this transport."""
    from kombu.transport import TRANSPORT_ALIASES

    TRANSPORT_ALIASES["sqlite"] = "controlplane.broker:Transport"
