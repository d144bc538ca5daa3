"""Who trains what: a lease per run key, so several drivers can share one study.

    leases = open_leases(tracking_uri, optuna_storage)
    with leases:                                  # heartbeats while it is open
        token = leases.claim(run_key)             # None: another driver holds it (or it is done)
        ... train ...
        if leases.fence(run_key, token):          # still ours: nobody took it over
            ... record the result ...
            leases.complete(run_key, token)

On a shared store (a PostgreSQL database: the tracking URI itself, else the Optuna storage)
the leases are rows of the table `suite_leases` (unique key, owner, fencing token, state,
expiry in the database's clock). A claim is one atomic upsert: it succeeds on a new key, a
released one, or one whose holder stopped heartbeating (its expiry passed; the token goes up,
so the old holder can no longer record). A driver killed with -9 stops heartbeating and its
claims expire after `SUITE_LEASE_SECONDS` (default 60). `mutex(name)` is a PostgreSQL
advisory lock (freed with its connection, so by a kill too).

On a sqlite store one process writes at a time (`tracking.store_lock`), so `Local` leases
are plain bookkeeping: every claim succeeds and only this process's claims are alive.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import uuid
from contextlib import contextmanager, nullcontext

from ..errors import OptionError, SuiteError

TTL_ENV = "SUITE_LEASE_SECONDS"


def ttl() -> float:
    """How long a claim lives without a heartbeat: $SUITE_LEASE_SECONDS, default 60."""
    try:
        value = float(os.environ.get(TTL_ENV, "60"))
    except ValueError:
        value = math.nan
    if not 1 <= value < math.inf:  # (below a second the heartbeat would spin against the database)
        raise OptionError(f"${TTL_ENV}={os.environ[TTL_ENV]!r}: a number of seconds, 1 or more (default 60)")
    return value


def owner_id() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_url(uri: str, storage: str | None) -> str | None:
    """The database that holds the leases: a PostgreSQL tracking URI or Optuna storage; None: a local store."""
    for url in (uri, storage or ""):
        if url.startswith(("postgresql", "postgres://")):
            return url
    return None


@contextmanager
def open_store(uri: str, storage: str | None):
    """(client, leases): the tracking store under its lock, connected first (a store that cannot be opened is one line,
    not after a note on how it is shared), then its leases."""
    from .. import tracking

    with tracking.store_lock(uri):
        client = tracking.connect(uri)
        with open_leases(uri, storage) as leases:
            yield client, leases


def open_leases(uri: str, storage: str | None):
    """Shared leases for a shared tracking store; a sqlite store is one writer's (its lock file) and keeps `Local` ones."""
    if uri.startswith("sqlite:"):
        return Local()
    url = lease_url(uri, storage)
    if url is None:
        import sys

        print(f"note: {uri} may be shared, but there is no PostgreSQL to keep run claims in (set OPTUNA_STORAGE to the "
              "team store's, `make server` prints it); run one driver at a time", file=sys.stderr)
        return Local()
    return Shared(url)


class Local:
    """One writer (sqlite, under the store lock): every claim succeeds; alive = claimed by us and not finished."""

    shared = False
    seconds = 4.0

    def __init__(self):
        self.held: dict[str, int] = {}
        self.lost: set[str] = set()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.held.clear()

    def claim(self, key: str, force_since: float | None = None) -> int | None:
        self.held[key] = self.held.get(key, 0) + 1
        return self.held[key]

    def fence(self, key: str, token: int) -> bool:
        return self.held.get(key) == token

    def complete(self, key: str, token: int) -> bool:
        return self.held.pop(key, None) == token

    def release(self, key: str, token: int | None = None) -> None:
        self.held.pop(key, None)

    def lose(self, key: str) -> None:
        self.held.pop(key, None)
        self.lost.add(key)

    def alive(self, keys) -> set[str]:
        return {k for k in keys if k in self.held}

    def mutex(self, name: str):
        return nullcontext()


class Shared:
    """Leases in a PostgreSQL table, heartbeaten by a thread while the context is open."""

    shared = True

    def __init__(self, url: str):
        try:
            import sqlalchemy as sa

            self.engine = sa.create_engine(_sqlalchemy_url(url), pool_pre_ping=True, pool_size=2, max_overflow=2)
            with self.engine.begin() as conn:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('suite_leases schema'))"))
                conn.execute(sa.text(SCHEMA))
        except SuiteError:
            raise
        except Exception as err:
            from sqlalchemy.exc import OperationalError

            from ..provenance import redact

            why = re.sub(r"^\([\w.]+\) ", "", _line(err)).rsplit("failed: ", 1)[-1]
            unreachable = ("Connection refused", "resolve host", "timeout expired", "No route to host", "Network is unreachable")
            if isinstance(err, OperationalError) and any(s in why for s in unreachable):  # (a team store stopped, as a rule)
                raise SuiteError(f"cannot reach the PostgreSQL database that keeps run claims, {redact(url)} ({why}); start it "
                                 "(`make server` for a team store here) or point the suite at another") from None
            raise SuiteError(f"cannot open the lease table in {redact(url)}: {why}") from None
        self.sa = sa
        self.owner, self.seconds = owner_id(), ttl()
        self.held: dict[str, int] = {}
        self.lost: set[str] = set()  # keys another driver took over while we held them
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self):
        self.thread = threading.Thread(target=self._beat, daemon=True, name="suite-lease-heartbeat")
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        for key, token in list(self.held.items()):  # let the next driver take them now rather than after the expiry
            self.release(key, token)
        self.engine.dispose()

    def _sql(self, query: str, **params):
        with self.engine.begin() as conn:
            return conn.execute(self.sa.text(query), {"owner": self.owner, "ttl": self.seconds, **params}).fetchall()

    def claim(self, key: str, force_since: float | None = None) -> int | None:
        """Take `key` when it is new, released, expired (or, with `force_since`, done before that time): its new token."""
        rows = self._sql(CLAIM, key=key, force=force_since is not None, since=force_since or 0.0)
        if not rows:
            return None
        with self.lock:
            self.held[key] = rows[0][0]
            self.lost.discard(key)
        return rows[0][0]

    def fence(self, key: str, token: int) -> bool:
        """Still ours (nobody took it over): extend it and say yes; else forget it."""
        ok = bool(self._sql(FENCE, key=key, token=token))
        if not ok:
            self._forget(key, lost=True)
        return ok

    def complete(self, key: str, token: int) -> bool:
        ok = bool(self._sql(COMPLETE, key=key, token=token))
        self._forget(key, lost=not ok)
        return ok

    def release(self, key: str, token: int | None = None) -> None:
        token = self.held.get(key) if token is None else token
        try:
            self._sql(RELEASE, key=key, token=token)
        except Exception:  # the store went away: the claim expires by itself
            pass
        self._forget(key)

    def lose(self, key: str) -> None:
        """Found taken over by another driver (its work on `key` showed it): no longer held, nothing of it recorded."""
        self._forget(key, lost=True)

    def alive(self, keys) -> set[str]:
        """Keys some driver (this one included) holds and heartbeats."""
        keys = list(keys)
        if not keys:
            return set()
        return {row[0] for row in self._sql(ALIVE, keys=keys)}

    @contextmanager
    def mutex(self, name: str):
        """An exclusive section across drivers (a PostgreSQL advisory lock, freed by a crash too)."""
        with self.engine.connect() as conn:
            number = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
            conn.execute(self.sa.text("SELECT pg_advisory_lock(:n)"), {"n": number})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(self.sa.text("SELECT pg_advisory_unlock(:n)"), {"n": number})
                conn.commit()

    def _forget(self, key: str, lost: bool = False) -> None:
        with self.lock:
            self.held.pop(key, None)
            if lost:
                self.lost.add(key)

    def _beat(self) -> None:
        """Every quarter of the expiry: extend what we hold; a key whose token moved on is lost."""
        while not self.stopping.wait(self.seconds / 4):
            with self.lock:
                held = dict(self.held)
            if not held:
                continue
            try:
                kept = {row[0]: row[1] for row in self._sql(BEAT)}
            except Exception:  # the store is away for a moment: try again next beat
                continue
            with self.lock:
                for key, token in held.items():
                    if kept.get(key) != token and self.held.get(key) == token:
                        del self.held[key]
                        self.lost.add(key)


def _sqlalchemy_url(url: str) -> str:
    """psycopg 3 is the driver we install (`.[server]`); SQLAlchemy's default for postgresql:// is psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:200]


SCHEMA = """
CREATE TABLE IF NOT EXISTS suite_leases (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    token BIGINT NOT NULL,
    state TEXT NOT NULL,
    expires TIMESTAMPTZ NOT NULL,
    updated TIMESTAMPTZ NOT NULL DEFAULT now()
)"""

CLAIM = """
INSERT INTO suite_leases AS l (key, owner, token, state, expires, updated)
VALUES (:key, :owner, 1, 'running', now() + make_interval(secs => :ttl), now())
ON CONFLICT (key) DO UPDATE SET owner = :owner, token = l.token + 1, state = 'running', expires = EXCLUDED.expires, updated = now()
WHERE l.state = 'released' OR (l.state = 'running' AND l.expires < now())
   OR (:force AND l.state = 'done' AND l.updated < to_timestamp(:since))
RETURNING l.token"""

FENCE = """
UPDATE suite_leases SET expires = now() + make_interval(secs => :ttl)
WHERE key = :key AND owner = :owner AND token = :token AND state = 'running' RETURNING key"""

COMPLETE = """
UPDATE suite_leases SET state = 'done', updated = now()
WHERE key = :key AND owner = :owner AND token = :token AND state = 'running' RETURNING key"""

RELEASE = """
UPDATE suite_leases SET state = 'released', updated = now()
WHERE key = :key AND owner = :owner AND token = :token AND state = 'running'"""

BEAT = """
UPDATE suite_leases SET expires = now() + make_interval(secs => :ttl)
WHERE owner = :owner AND state = 'running' RETURNING key, token"""

ALIVE = """
SELECT key FROM suite_leases WHERE key = ANY(:keys) AND state = 'running' AND expires >= now()"""
