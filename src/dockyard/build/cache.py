"""The build cache: which image a build step made, by the step's key.

A key is the sha256 of what decides a step's result, as Docker's classic builder
decides it: the key of the steps before it (at a FROM, the base image's ID), the
instruction with its variables expanded, the build args in scope (for RUN, whose
process sees them), and for COPY and ADD the checksum of the sources' content, modes,
paths and link targets (not their times or owners). The rows live in the state
database (``build_cache``, schema version 5); each names an image recorded like any
other, so its layers and blobs stay while the image does; removing the image (``image
prune`` of untagged images, ``rmi``) drops its rows.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Protocol

__all__ = ["BuildCache", "step_key"]


class _Database(Protocol):
    def query(self, sql: str, params: Any = ()) -> list[Any]: ...

    def transaction(self) -> Any: ...


def step_key(before: str, *parts: object) -> str:
    """The key of a step described by ``parts`` after ``before`` (the key of the steps
    before it, or an image ID)."""
    text = json.dumps([before, *parts], sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class BuildCache:
    """The cache rows of one root's database."""

    def __init__(self, db: _Database) -> None:
        self._db = db

    def lookup(self, key: str) -> str | None:
        """The image the step of ``key`` made, if it is still there."""
        rows = self._db.query("SELECT c.image_id FROM build_cache c JOIN images i "
                              "ON i.id = c.image_id WHERE c.key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def store(self, key: str, image_id: str, parent_id: str) -> None:
        """Remember that the step of ``key``, run on ``parent_id``, made ``image_id``."""
        with self._db.transaction() as conn:
            conn.execute("INSERT INTO build_cache VALUES (?, ?, ?, ?) ON CONFLICT(key) DO "
                         "UPDATE SET image_id = excluded.image_id, parent_id = "
                         "excluded.parent_id, created = excluded.created",
                         (key, image_id, parent_id, time.time()))
