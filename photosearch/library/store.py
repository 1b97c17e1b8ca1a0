"""The library's SQLite store: folders, photos, per-model vectors. The source of truth the HNSW indexes derive from.

WAL journal, a schema version in ``PRAGMA user_version`` and step-by-step migrations. Every vector lives here
too (float32 shared-space embedding, float16 visual vector), so an index file lost or damaged in a crash is
rebuilt or reconciled from the store without re-encoding a single photo.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)

DB_FILE = "library.sqlite3"


class StoreError(Exception):
    """The library database cannot be opened or is from a newer photosearch."""


def _script(db: sqlite3.Connection, sql: str) -> None:
    """Run several statements inside the caller's transaction (executescript would commit it)."""
    for stmt in sql.split(";"):
        if stmt.strip():
            db.execute(stmt)


def _v1(db: sqlite3.Connection) -> None:
    _script(
        db,
        """
        CREATE TABLE folders (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            excludes TEXT NOT NULL DEFAULT '[]',
            added_at REAL NOT NULL,
            last_scan REAL,
            online INTEGER NOT NULL DEFAULT 1
        );
        CREATE TABLE photos (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            folder_id INTEGER REFERENCES folders(id) ON DELETE CASCADE,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            content_hash TEXT,
            width INTEGER,
            height INTEGER,
            taken_at REAL,
            camera TEXT,
            added_at REAL NOT NULL,
            error TEXT
        );
        CREATE INDEX photos_hash ON photos(content_hash);
        CREATE INDEX photos_folder ON photos(folder_id);
        CREATE TABLE models (
            model_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            source TEXT NOT NULL,
            dim INTEGER NOT NULL,
            visual_dim INTEGER NOT NULL,
            added_at REAL NOT NULL
        );
        CREATE TABLE vectors (
            photo_id INTEGER NOT NULL REFERENCES photos(id) ON DELETE CASCADE,
            model_id TEXT NOT NULL,
            embedding BLOB NOT NULL,
            visual BLOB,
            PRIMARY KEY (photo_id, model_id)
        ) WITHOUT ROWID;
        CREATE INDEX vectors_model ON vectors(model_id, photo_id);
        CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        """
    )


def _v2(db: sqlite3.Connection) -> None:
    db.execute("CREATE INDEX photos_taken ON photos(taken_at)")


def _v3(db: sqlite3.Connection) -> None:
    """Auto-tags: the user's tags, which photos carry them (per model), and which photos were scored against
    the current tag set (emptied when a tag is added or changed)."""
    _script(db, """
        CREATE TABLE tags (name TEXT PRIMARY KEY, prompts TEXT NOT NULL, threshold REAL NOT NULL);
        CREATE TABLE photo_tags (
            photo_id INTEGER NOT NULL REFERENCES photos(id) ON DELETE CASCADE,
            model_id TEXT NOT NULL,
            tag TEXT NOT NULL REFERENCES tags(name) ON DELETE CASCADE,
            score REAL NOT NULL,
            PRIMARY KEY (model_id, tag, photo_id)
        );
        CREATE INDEX photo_tags_photo ON photo_tags(photo_id);
        CREATE TABLE tag_scored (
            model_id TEXT NOT NULL,
            photo_id INTEGER NOT NULL REFERENCES photos(id) ON DELETE CASCADE,
            PRIMARY KEY (model_id, photo_id)
        ) WITHOUT ROWID;
    """)


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, _v3]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class Photo:
    id: int
    path: str
    folder_id: int | None
    size: int
    mtime_ns: int
    content_hash: str | None
    width: int | None
    height: int | None
    taken_at: float | None
    camera: str | None
    error: str | None


_PHOTO_COLS = "id, path, folder_id, size, mtime_ns, content_hash, width, height, taken_at, camera, error"


@dataclass(frozen=True)
class Folder:
    id: int
    path: str
    excludes: tuple[str, ...]
    online: bool
    last_scan: float | None


class Store:
    """Thread-safe access to one library database (one connection, serialised by a lock)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / DB_FILE
        self._lock = threading.RLock()
        try:
            self.db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path} is not a readable photosearch library ({e}); move it away to start anew") from e

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer photosearch (schema {version} > {SCHEMA_VERSION}); upgrade photosearch"
            )
        for step in range(version, SCHEMA_VERSION):
            with self.transaction():
                MIGRATIONS[step](self.db)
                self.db.execute(f"PRAGMA user_version={step + 1}")
            log.info("library schema migrated to version %d", step + 1)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    # -- transactions ----------------------------------------------------------------------------------------
    class _Tx:
        def __init__(self, store: Store):
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            self.store.db.execute("BEGIN IMMEDIATE")
            return self.store.db

        def __exit__(self, exc_type, exc, tb) -> None:
            try:
                self.store.db.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.store._lock.release()

    def transaction(self) -> Store._Tx:
        return Store._Tx(self)

    def query(self, sql: str, args: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    # -- settings --------------------------------------------------------------------------------------------
    def get_setting(self, key: str, default: str | None = None) -> str | None:
        row = self.query("SELECT value FROM settings WHERE key=?", (key,))
        return row[0][0] if row else default

    def set_setting(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO settings(key, value) VALUES (?, ?)", (key, value))

    # -- folders ---------------------------------------------------------------------------------------------
    def add_folder(self, path: str, excludes: Iterable[str] = ()) -> Folder:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO folders(path, excludes, added_at) VALUES (?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
                "excludes=excluded.excludes",
                (path, json.dumps(sorted(set(excludes))), time.time()),
            )
        return next(f for f in self.folders() if f.path == path)

    def remove_folder(self, folder_id: int) -> list[int]:
        """Forget a folder and its photos; returns the removed photo ids (for the indexes)."""
        with self.transaction() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM photos WHERE folder_id=?", (folder_id,))]
            db.execute("DELETE FROM folders WHERE id=?", (folder_id,))
        return ids

    def folders(self) -> list[Folder]:
        rows = self.query("SELECT id, path, excludes, online, last_scan FROM folders ORDER BY path")
        return [Folder(r[0], r[1], tuple(json.loads(r[2])), bool(r[3]), r[4]) for r in rows]

    def set_folder_state(self, folder_id: int, *, online: bool, scanned: bool = False) -> None:
        with self.transaction() as db:
            if scanned:
                db.execute("UPDATE folders SET online=?, last_scan=? WHERE id=?", (int(online), time.time(), folder_id))
            else:
                db.execute("UPDATE folders SET online=? WHERE id=?", (int(online), folder_id))

    # -- photos ----------------------------------------------------------------------------------------------
    def photo_stats(self, folder_id: int) -> dict[str, tuple[int, int, int]]:
        """path → (id, size, mtime_ns) for every photo of a folder: what change detection compares against."""
        rows = self.query("SELECT path, id, size, mtime_ns FROM photos WHERE folder_id=?", (folder_id,))
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def photos_by_hash(self, content_hash: str) -> list[Photo]:
        rows = self.query(f"SELECT {_PHOTO_COLS} FROM photos WHERE content_hash=?", (content_hash,))
        return [Photo(*r) for r in rows]

    def get_photos(self, ids: Sequence[int]) -> dict[int, Photo]:
        out: dict[int, Photo] = {}
        ids = [int(i) for i in ids]
        for i in range(0, len(ids), 900):
            chunk = ids[i : i + 900]
            marks = ",".join("?" * len(chunk))
            for r in self.query(f"SELECT {_PHOTO_COLS} FROM photos WHERE id IN ({marks})", chunk):
                out[r[0]] = Photo(*r)
        return out

    def photo_by_path(self, path: str) -> Photo | None:
        rows = self.query(f"SELECT {_PHOTO_COLS} FROM photos WHERE path=?", (path,))
        return Photo(*rows[0]) if rows else None

    def iter_photos(self, where: str = "1", args: Sequence = ()) -> Iterator[Photo]:
        for r in self.query(f"SELECT {_PHOTO_COLS} FROM photos WHERE {where} ORDER BY id", args):
            yield Photo(*r)

    def upsert_photo(self, db: sqlite3.Connection, path: str, folder_id: int, size: int, mtime_ns: int,
                     content_hash: str | None, meta: dict, error: str | None) -> int:
        """Insert or update one photo row inside an open transaction; returns its id."""
        row = db.execute("SELECT id FROM photos WHERE path=?", (path,)).fetchone()
        values = (size, mtime_ns, content_hash, meta.get("width"), meta.get("height"), meta.get("taken_at"),
                  meta.get("camera"), error)
        if row:
            db.execute(
                "UPDATE photos SET size=?, mtime_ns=?, content_hash=?, width=?, height=?, taken_at=?, camera=?, "
                "error=? WHERE id=?", values + (row[0],),
            )
            return row[0]
        cur = db.execute(
            "INSERT INTO photos(size, mtime_ns, content_hash, width, height, taken_at, camera, error, path, folder_id,"
            " added_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)", values + (path, folder_id, time.time()),
        )
        return int(cur.lastrowid)

    @staticmethod
    def photo_by_path_in(db: sqlite3.Connection, path: str) -> int:
        return int(db.execute("SELECT id FROM photos WHERE path=?", (path,)).fetchone()[0])

    def move_photo(self, db: sqlite3.Connection, photo_id: int, new_path: str, folder_id: int, mtime_ns: int) -> None:
        db.execute("UPDATE photos SET path=?, folder_id=?, mtime_ns=? WHERE id=?", (new_path, folder_id, mtime_ns, photo_id))

    def delete_photos(self, ids: Sequence[int]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM photos WHERE id=?", [(int(i),) for i in ids])

    def counts(self, model_id: str | None = None) -> dict[str, int]:
        photos, failed = self.query("SELECT COUNT(*), COUNT(error) FROM photos")[0]
        indexed = self.query("SELECT COUNT(*) FROM vectors WHERE model_id=?", (model_id,))[0][0] if model_id else 0
        return {"photos": photos, "indexed": indexed, "failed": failed}

    def failures(self, limit: int = 1000) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.query(
            "SELECT path, error FROM photos WHERE error IS NOT NULL ORDER BY path LIMIT ?", (limit,))]

    # -- models and vectors ----------------------------------------------------------------------------------
    def register_model(self, model_id: str, name: str, source: str, dim: int, visual_dim: int) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO models(model_id, name, source, dim, visual_dim, added_at) VALUES (?,?,?,?,?,?)",
                (model_id, name, source, dim, visual_dim, time.time()),
            )

    def put_vectors(self, db: sqlite3.Connection, model_id: str, photo_id: int, embedding: np.ndarray,
                    visual: np.ndarray | None) -> None:
        db.execute(
            "INSERT OR REPLACE INTO vectors(photo_id, model_id, embedding, visual) VALUES (?,?,?,?)",
            (photo_id, model_id, np.asarray(embedding, np.float32).tobytes(),
             None if visual is None else np.asarray(visual, np.float16).tobytes()),
        )

    def copy_vectors(self, db: sqlite3.Connection, src_photo: int, dst_photo: int) -> int:
        """Give ``dst_photo`` every vector ``src_photo`` has (an identical copy needs no encoding)."""
        cur = db.execute(
            "INSERT OR REPLACE INTO vectors(photo_id, model_id, embedding, visual) "
            "SELECT ?, model_id, embedding, visual FROM vectors WHERE photo_id=?", (dst_photo, src_photo),
        )
        return cur.rowcount

    def vector_ids(self, model_id: str) -> np.ndarray:
        rows = self.query("SELECT photo_id FROM vectors WHERE model_id=? ORDER BY photo_id", (model_id,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def has_vector(self, model_id: str, photo_id: int) -> bool:
        return bool(self.query("SELECT 1 FROM vectors WHERE model_id=? AND photo_id=?", (model_id, photo_id)))

    def embeddings(self, model_id: str, ids: Sequence[int] | None = None, visual: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(ids (N,), vectors (N, D)) for a model; all of them when ``ids`` is None."""
        col = "visual" if visual else "embedding"
        dtype = np.float16 if visual else np.float32
        if ids is None:
            rows = self.query(f"SELECT photo_id, {col} FROM vectors WHERE model_id=? AND {col} IS NOT NULL "
                              "ORDER BY photo_id", (model_id,))
        else:
            rows = []
            ids = [int(i) for i in ids]
            for i in range(0, len(ids), 900):
                chunk = ids[i : i + 900]
                rows += self.query(
                    f"SELECT photo_id, {col} FROM vectors WHERE model_id=? AND {col} IS NOT NULL AND photo_id IN "
                    f"({','.join('?' * len(chunk))})", [model_id, *chunk])
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        out_ids = np.array([r[0] for r in rows], np.int64)
        vecs = np.stack([np.frombuffer(r[1], dtype=dtype) for r in rows]).astype(np.float32)
        return out_ids, vecs

    def photos_missing_vectors(self, model_id: str, limit: int | None = None) -> list[Photo]:
        sql = (f"SELECT {_PHOTO_COLS} FROM photos p WHERE error IS NULL AND NOT EXISTS "
               "(SELECT 1 FROM vectors v WHERE v.photo_id=p.id AND v.model_id=?) ORDER BY id")
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [Photo(*r) for r in self.query(sql, (model_id,))]
