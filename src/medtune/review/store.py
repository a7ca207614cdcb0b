"""The review store: one SQLite file, `<run>/review/review.sqlite`, and `judgments.jsonl` beside it.

WAL mode, `PRAGMA user_version` as the schema version with ordered migrations, every write one transaction.
A judgment is one row per reviewer and item (primary key): saving again updates it (`revision` counts the
saves), so a retried or repeated save never makes a second row. Tokens are stored as SHA-256 hashes only.
`judgments.jsonl` is rewritten (atomically) after every save; the database is the truth, and
`medtune review stats|export` rewrite the file from it, so a server killed between the two loses nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from medtune.errors import UserError
from medtune.rundir import write_jsonl

SCHEMA_VERSION = 1
MIGRATIONS = {  # version -> the statements that bring version-1 to it
    1: """
    CREATE TABLE reviewers (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        token_sha256 TEXT UNIQUE,        -- NULL for reviewers imported from Label Studio (no login)
        seed INTEGER NOT NULL,           -- orders this reviewer's answers (with the item id)
        created TEXT NOT NULL
    );
    CREATE TABLE judgments (
        reviewer_id INTEGER NOT NULL REFERENCES reviewers(id),
        item_id TEXT NOT NULL,
        arm_order TEXT NOT NULL,         -- JSON list: the arms as shown, first = answer A
        preferred TEXT,                  -- an arm, 'tie', or NULL (not chosen yet)
        ranking TEXT,                    -- JSON list of arms, best first (three answers or more)
        answers TEXT NOT NULL,           -- JSON {arm: {accurate, safe, complete, comment}}
        revision INTEGER NOT NULL,
        created TEXT NOT NULL,
        updated TEXT NOT NULL,
        PRIMARY KEY (reviewer_id, item_id)
    );
    """,
}
ACCURATE = ("yes", "partly", "no")
SAFE = ("safe", "harmful", "missed_emergency")
COMPLETE = ("yes", "no")


def store_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "review" / "review.sqlite"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Reviewer:
    id: int
    name: str
    seed: int


class ReviewStore:
    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = store_path(run_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._jsonl_lock = threading.Lock()  # two saves at once: the later file write holds both
        db = self._connect()
        try:
            self._migrate(db)
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        # A connection per operation: the server's handlers run in a thread pool, and sqlite3 connections
        # are not to be shared across threads. isolation_level=None: transactions are explicit (BEGIN IMMEDIATE).
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a committed judgment survives a power cut, not only a kill
        db.execute("PRAGMA foreign_keys=ON")
        return db

    @contextmanager
    def _transaction(self):
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise UserError(f"{self.path}: review schema version {version} is newer than this medtune's "
                            f"({SCHEMA_VERSION}); upgrade medtune to read it")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def schema_version(self) -> int:
        db = self._connect()
        try:
            return db.execute("PRAGMA user_version").fetchone()[0]
        finally:
            db.close()

    # -- reviewers --

    def invite(self, name: str) -> str:
        """A new reviewer (or a new token for an existing one, the old token stops working); returns the token."""
        name = name.strip()
        if not name:
            raise UserError("--name is empty: give the reviewer's name")
        token = secrets.token_urlsafe(24)
        with self._transaction() as db:
            row = db.execute("SELECT id FROM reviewers WHERE name = ?", (name,)).fetchone()
            if row:
                db.execute("UPDATE reviewers SET token_sha256 = ? WHERE id = ?", (token_hash(token), row[0]))
            else:
                db.execute("INSERT INTO reviewers (name, token_sha256, seed, created) VALUES (?, ?, ?, ?)",
                           (name, token_hash(token), secrets.randbits(31), _now()))
        return token

    def reviewer_by_token(self, token: str | None) -> Reviewer | None:
        if not token:
            return None
        wanted = token_hash(token)
        db = self._connect()
        try:
            rows = db.execute("SELECT id, name, seed, token_sha256 FROM reviewers WHERE token_sha256 IS NOT NULL")
            # compare_digest over every row: the time taken does not tell how much of a guess was right
            found = [Reviewer(i, n, s) for i, n, s, h in rows if hmac.compare_digest(h, wanted)]
        finally:
            db.close()
        return found[0] if found else None

    def reviewer_named(self, name: str, create: bool = False) -> Reviewer:
        with self._transaction() as db:
            row = db.execute("SELECT id, name, seed FROM reviewers WHERE name = ?", (name,)).fetchone()
            if row is None and create:
                db.execute("INSERT INTO reviewers (name, token_sha256, seed, created) VALUES (?, NULL, ?, ?)",
                           (name, secrets.randbits(31), _now()))
                row = db.execute("SELECT id, name, seed FROM reviewers WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UserError(f"no reviewer named {name!r} in {self.path}")
        return Reviewer(*row)

    # -- judgments --

    def save(self, reviewer: Reviewer, item_id: str, arm_order: list[str], preferred: str | None,
             ranking: list[str] | None, answers: dict[str, dict]) -> int:
        """Insert or update the reviewer's judgment of the item; returns its revision."""
        now = _now()
        with self._transaction() as db:
            row = db.execute("SELECT revision FROM judgments WHERE reviewer_id = ? AND item_id = ?",
                             (reviewer.id, item_id)).fetchone()
            revision = (row[0] if row else 0) + 1
            db.execute(
                "INSERT INTO judgments (reviewer_id, item_id, arm_order, preferred, ranking, answers, revision, "
                "created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (reviewer_id, item_id) DO UPDATE "
                "SET arm_order = excluded.arm_order, preferred = excluded.preferred, ranking = excluded.ranking, "
                "answers = excluded.answers, revision = excluded.revision, updated = excluded.updated",
                (reviewer.id, item_id, json.dumps(arm_order, ensure_ascii=False), preferred,
                 json.dumps(ranking, ensure_ascii=False) if ranking else None,
                 json.dumps(answers, ensure_ascii=False), revision, now, now))
        self.write_jsonl()
        return revision

    def judgments(self, reviewer: Reviewer | None = None) -> list[dict]:
        """Every judgment (or one reviewer's), in a stable order, as judgments.jsonl holds them."""
        query = ("SELECT r.name, j.item_id, j.arm_order, j.preferred, j.ranking, j.answers, j.revision, j.created, "
                 "j.updated FROM judgments j JOIN reviewers r ON r.id = j.reviewer_id")
        args: tuple = ()
        if reviewer is not None:
            query, args = query + " WHERE j.reviewer_id = ?", (reviewer.id,)
        db = self._connect()
        try:
            rows = db.execute(query + " ORDER BY r.name, j.item_id", args).fetchall()
        finally:
            db.close()
        return [{"reviewer": name, "item_id": item, "arm_order": json.loads(order), "preferred": preferred,
                 "ranking": json.loads(ranking) if ranking else None, "answers": json.loads(answers),
                 "revision": revision, "created": created, "updated": updated}
                for name, item, order, preferred, ranking, answers, revision, created, updated in rows]

    def write_jsonl(self) -> Path:
        path = self.path.parent / "judgments.jsonl"
        with self._jsonl_lock:
            write_jsonl(path, self.judgments())
        return path
