"""Stage 4 of a run (suite -> plan -> cells -> **store** -> report), with ``provenance`` (where a result came from)
and ``lock`` (one run per results folder).

Results in SQLite (WAL): a cell's record is committed in one transaction when it finishes.

Tables: ``runs`` (one per invocation, with provenance), ``plan`` (the cells a run asked for, with their
configuration hashes), ``cells`` (one per finished or failed cell), ``metrics``, ``confusion``, ``roc``,
``curves`` (per epoch) and ``predictions``. The report reads this file alone.

Schema versions: 2 stores each cell's scores as float32 logits (``score_kind`` 'logits') and the settings a cell
ran with (precision, memory layout, how many cells it was stacked with); 1 stored float32 probabilities in a
``probs`` column and no settings. A run into a version-1 store migrates it (renaming the column, existing rows
keeping kind 'probs'); reading never migrates and reads either.
"""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from octbench.cell.execute import CellResult, CellTask
from octbench.errors import OctbenchError

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, started TEXT NOT NULL, finished TEXT, suite_name TEXT NOT NULL,
    suite_hash TEXT NOT NULL, suite_text TEXT NOT NULL, suite_json TEXT NOT NULL, quick INTEGER NOT NULL,
    dataset_json TEXT NOT NULL, provenance TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'running'
);
CREATE TABLE IF NOT EXISTS plan (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, position INTEGER NOT NULL,
    variant TEXT NOT NULL, seed INTEGER NOT NULL, fold INTEGER NOT NULL, config_hash TEXT NOT NULL,
    role TEXT NOT NULL, variant_json TEXT NOT NULL, PRIMARY KEY (run_id, variant, seed, fold)
);
CREATE TABLE IF NOT EXISTS cells (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), variant TEXT NOT NULL,
    seed INTEGER NOT NULL, fold INTEGER NOT NULL, config_hash TEXT NOT NULL, status TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '', timings TEXT NOT NULL DEFAULT '{}',
    counts TEXT NOT NULL DEFAULT '{}', device TEXT NOT NULL DEFAULT '', finished TEXT NOT NULL,
    settings TEXT NOT NULL DEFAULT '{}', UNIQUE (variant, seed, fold)
);
CREATE TABLE IF NOT EXISTS metrics (
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE, split TEXT NOT NULL, name TEXT NOT NULL,
    value REAL, PRIMARY KEY (cell_id, split, name)
);
CREATE TABLE IF NOT EXISTS confusion (
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE, split TEXT NOT NULL, matrix TEXT NOT NULL,
    PRIMARY KEY (cell_id, split)
);
CREATE TABLE IF NOT EXISTS roc (
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE, split TEXT NOT NULL, class INTEGER NOT NULL,
    fpr TEXT NOT NULL, tpr TEXT NOT NULL, auc REAL, PRIMARY KEY (cell_id, split, class)
);
CREATE TABLE IF NOT EXISTS curves (
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE, epoch INTEGER NOT NULL,
    train_loss REAL, train_acc REAL, val_loss REAL, val_acc REAL, lr REAL, seconds REAL,
    PRIMARY KEY (cell_id, epoch)
);
CREATE TABLE IF NOT EXISTS predictions (
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE, split TEXT NOT NULL,
    indices BLOB NOT NULL, y_true BLOB NOT NULL, scores BLOB NOT NULL, score_kind TEXT NOT NULL,
    PRIMARY KEY (cell_id, split)
);
CREATE TABLE IF NOT EXISTS attributions (
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE, split TEXT NOT NULL,
    indices BLOB NOT NULL, maps BLOB NOT NULL, PRIMARY KEY (cell_id, split)
);
"""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def to_blob(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def from_blob(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)


TABLES = ("meta", "runs", "plan", "cells", "metrics", "confusion", "roc", "curves", "predictions")


class Store:
    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        """``create``: open for a run (creating or migrating the schema). Otherwise open an existing store read-only
        (``mode=ro``; ``immutable`` on a read-only file system), whatever its readable version, and never change it.
        Either way a damaged or foreign database is a one-line error, found by ``PRAGMA quick_check`` at open."""
        self.path = Path(path)
        if not create and not self.path.exists():
            raise OctbenchError(f"no results at {self.path}: run `octbench run SUITE --out {self.path.parent}` first.")
        try:
            self.conn = self._connect(create)
            problem = self.conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {problem}")
            if create:
                self._create()
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            missing = [t for t in TABLES if t not in tables]
            if missing:
                raise sqlite3.DatabaseError(f"it lacks the tables {', '.join(missing)}")
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            fix = "use another --out, or --fresh to start over" if create else "point the report at a results folder"
            raise OctbenchError(f"{self.path} is not a usable octbench results database ({exc}); {fix}.") from None
        self.version = int(row[0]) if row and str(row[0]).isdigit() else None
        if self.version not in READABLE_VERSIONS:
            self._close_quietly()
            raise OctbenchError(
                f"{self.path} has schema version {row[0] if row else 'none'}, this octbench reads "
                f"{', '.join(map(str, READABLE_VERSIONS))}: use the octbench that wrote it, or another --out."
            )
        if create and self.version < SCHEMA_VERSION:
            self._migrate()

    def _connect(self, create: bool) -> sqlite3.Connection:
        if create:
            conn = sqlite3.connect(self.path, timeout=30)
        else:
            uri = self.path.resolve().as_uri()
            try:
                conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30)
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.OperationalError:
                # a WAL database on a read-only file system: nothing can be writing it, so read it as it is
                conn = sqlite3.connect(f"{uri}?immutable=1", uri=True)
        conn.row_factory = sqlite3.Row
        return conn

    def _create(self) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        fresh = "meta" not in tables
        if fresh and tables:  # someone else's database: leave it exactly as it is
            raise sqlite3.DatabaseError(f"it holds other tables ({', '.join(sorted(tables)[:5])})")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        with self.conn:
            self.conn.executescript(SCHEMA)
            if fresh:
                self.conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _close_quietly(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()

    def _migrate(self) -> None:
        """Version 1 to 2: probabilities kept, marked as such; new cells store logits."""
        with self.conn:
            self.conn.execute("ALTER TABLE predictions RENAME COLUMN probs TO scores")
            self.conn.execute("ALTER TABLE predictions ADD COLUMN score_kind TEXT NOT NULL DEFAULT 'probs'")
            self.conn.execute("ALTER TABLE cells ADD COLUMN settings TEXT NOT NULL DEFAULT '{}'")
            self.conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
        self.version = SCHEMA_VERSION

    def close(self) -> None:
        self.conn.close()

    # --- writing -----------------------------------------------------------------------------------------------

    def start_run(
        self,
        *,
        suite_name: str,
        suite_hash: str,
        suite_text: str,
        suite_json: str,
        quick: bool,
        dataset: dict[str, Any],
        provenance: dict[str, Any],
    ) -> int:
        with self.conn:
            cursor = self.conn.execute(
                "INSERT INTO runs (started, suite_name, suite_hash, suite_text, suite_json, quick, dataset_json,"
                " provenance) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    now(),
                    suite_name,
                    suite_hash,
                    suite_text,
                    suite_json,
                    int(quick),
                    json.dumps(dataset),
                    json.dumps(provenance),
                ),
            )
        return int(cursor.lastrowid)

    def record_plan(self, run_id: int, tasks: Iterable[CellTask]) -> None:
        rows = [
            (run_id, i, t.variant.name, t.seed, t.fold, t.config_hash, t.variant.role, t.variant.model_dump_json())
            for i, t in enumerate(tasks)
        ]
        with self.conn:
            self.conn.executemany("INSERT INTO plan VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def finish_run(self, run_id: int, status: str) -> None:
        with self.conn:
            self.conn.execute("UPDATE runs SET finished=?, status=? WHERE id=?", (now(), status, run_id))

    def has_full_results(self) -> bool:
        """Whether any finished cell came from a run made without --quick."""
        row = self.conn.execute(
            "SELECT 1 FROM cells c JOIN runs r ON r.id = c.run_id WHERE r.quick = 0 AND c.status = 'done' LIMIT 1"
        ).fetchone()
        return row is not None

    def finished(self) -> set[tuple[str, int, int, str]]:
        """(variant, seed, fold, config_hash) of every cell that finished successfully."""
        rows = self.conn.execute("SELECT variant, seed, fold, config_hash FROM cells WHERE status='done'")
        return {tuple(r) for r in rows}

    def commit(self, run_id: int, result: CellResult) -> None:
        """Replace any earlier record of this cell with ``result``, all in one transaction."""
        with self.conn:
            self.conn.execute(
                "DELETE FROM cells WHERE variant=? AND seed=? AND fold=?", (result.variant, result.seed, result.fold)
            )
            cell_id = self.conn.execute(
                "INSERT INTO cells (run_id, variant, seed, fold, config_hash, status, error, detail, timings,"
                " counts, device, finished, settings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    result.variant,
                    result.seed,
                    result.fold,
                    result.config_hash,
                    result.status,
                    result.error,
                    result.detail,
                    json.dumps(result.timings),
                    json.dumps(result.counts),
                    result.device,
                    now(),
                    json.dumps(result.settings),
                ),
            ).lastrowid
            for split, evaluation in result.evaluations.items():
                self.conn.executemany(
                    "INSERT INTO metrics VALUES (?, ?, ?, ?)",
                    [(cell_id, split, k, _real(v)) for k, v in evaluation["scalars"].items()],
                )
                self.conn.execute(
                    "INSERT INTO confusion VALUES (?, ?, ?)", (cell_id, split, json.dumps(evaluation["confusion"]))
                )
                self.conn.executemany(
                    "INSERT INTO roc VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (cell_id, split, c["class"], json.dumps(c["fpr"]), json.dumps(c["tpr"]), c["auc"])
                        for c in evaluation["roc"]
                    ],
                )
            self.conn.executemany(
                "INSERT INTO metrics VALUES (?, 'cell', ?, ?)",
                [(cell_id, name, _real(value)) for name, value in result.values.items()],
            )
            self.conn.executemany(
                "INSERT INTO curves VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        cell_id,
                        h["epoch"],
                        h["train_loss"],
                        h["train_acc"],
                        h["val_loss"],
                        h["val_acc"],
                        h["lr"],
                        h["seconds"],
                    )
                    for h in result.history
                ],
            )
            for split, p in result.predictions.items():
                self.conn.execute(
                    "INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?)",
                    (cell_id, split, to_blob(p["indices"]), to_blob(p["y_true"]), to_blob(p["logits"]), "logits"),
                )
            for split, a in result.attributions.items():
                self.conn.execute(
                    "INSERT INTO attributions VALUES (?, ?, ?, ?)",
                    (cell_id, split, to_blob(a["indices"]), to_blob(a["maps"])),
                )

    # --- reading -----------------------------------------------------------------------------------------------

    def latest_run(self) -> sqlite3.Row:
        row = self.conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            raise OctbenchError(f"{self.path} holds no runs yet.")
        return row

    def runs(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM runs ORDER BY id").fetchall()

    def planned_cells(self, run_id: int) -> list[sqlite3.Row]:
        """The run's plan joined with the matching stored cell (None columns where it has none yet)."""
        settings = "c.settings" if self.version >= 2 else "'{}'"
        return self.conn.execute(
            "SELECT p.position, p.variant, p.seed, p.fold, p.role, p.variant_json, c.id AS cell_id, c.status,"
            f" c.error, c.timings, c.counts, c.device, c.run_id AS cell_run, {settings} AS settings"
            " FROM plan p LEFT JOIN cells c ON c.variant=p.variant AND c.seed=p.seed AND c.fold=p.fold"
            " AND c.config_hash=p.config_hash WHERE p.run_id=? ORDER BY p.position",
            (run_id,),
        ).fetchall()

    def metrics(self, cell_ids: list[int]) -> list[sqlite3.Row]:
        return self._for_cells("SELECT * FROM metrics", cell_ids)

    def confusion(self, cell_ids: list[int]) -> list[sqlite3.Row]:
        return self._for_cells("SELECT * FROM confusion", cell_ids)

    def roc(self, cell_ids: list[int]) -> list[sqlite3.Row]:
        return self._for_cells("SELECT * FROM roc", cell_ids)

    def curves(self, cell_ids: list[int]) -> list[sqlite3.Row]:
        return self._for_cells("SELECT * FROM curves", cell_ids, order=" ORDER BY cell_id, epoch")

    def predictions(self, cell_id: int, split: str) -> dict[str, Any] | None:
        """``indices``, ``y_true`` and ``scores`` arrays, and ``kind``: 'logits', or 'probs' from a version-1 store."""
        row = self.conn.execute("SELECT * FROM predictions WHERE cell_id=? AND split=?", (cell_id, split)).fetchone()
        if row is None:
            return None
        scores, kind = (row["probs"], "probs") if self.version == 1 else (row["scores"], row["score_kind"])
        return {
            "indices": from_blob(row["indices"]),
            "y_true": from_blob(row["y_true"]),
            "scores": from_blob(scores),
            "kind": kind,
        }

    def attributions(self, cell_id: int) -> dict[str, dict[str, np.ndarray]]:
        """Per split, the explained images' ``indices`` and their activation ``maps`` (none in a store written before
        octbench kept them: the table was added to schema 2 without a migration, as nothing else changed)."""
        try:
            rows = self.conn.execute("SELECT * FROM attributions WHERE cell_id=?", (cell_id,)).fetchall()
        except sqlite3.OperationalError:  # no such table: a store read-only, written by an earlier version
            return {}
        return {r["split"]: {"indices": from_blob(r["indices"]), "maps": from_blob(r["maps"])} for r in rows}

    def _for_cells(self, query: str, cell_ids: list[int], order: str = "") -> list[sqlite3.Row]:
        if not cell_ids:
            return []
        marks = ",".join("?" * len(cell_ids))
        return self.conn.execute(f"{query} WHERE cell_id IN ({marks}){order}", cell_ids).fetchall()


def _real(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)
