"""Progress of a pull or a push, one event per change of one layer (or of the image).

The service calls a ``Progress`` callback with an ``Event`` each time a blob changes
state or has moved some bytes; the CLI renders them as Docker's bars and the API
server as Docker's JSON message stream. The statuses are Docker's own words, so that a
renderer can print them as they are. Events come from several download threads; the
service serialises the calls, so a callback need not be thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """What is happening to one blob (or, for ``RESOLVING`` and ``DIGEST``, the image)."""

    RESOLVING = "Resolving"
    WAITING = "Waiting"
    DOWNLOADING = "Downloading"
    VERIFYING = "Verifying Checksum"
    DOWNLOAD_COMPLETE = "Download complete"
    EXTRACTING = "Extracting"
    PULL_COMPLETE = "Pull complete"
    ALREADY_EXISTS = "Already exists"
    PREPARING = "Preparing"
    PUSHING = "Pushing"
    PUSHED = "Pushed"
    LAYER_EXISTS = "Layer already exists"
    MOUNTED = "Mounted"
    DIGEST = "Digest"


@dataclass(frozen=True)
class Event:
    """One step of one blob: ``id`` is the blob's short ID (12 hex digits, as Docker
    shows it) or the reference for image-wide events; ``current``/``total`` are bytes
    while downloading, uploading or extracting; ``detail`` is free text (the digest,
    the repository a blob was mounted from)."""

    id: str
    status: Status
    current: int | None = None
    total: int | None = None
    detail: str | None = None


#: The callback a caller passes to ``pull`` or ``push``.
Progress = Callable[[Event], None]


def short_id(digest: str) -> str:
    """The 12 hex digits Docker names a layer or an image by."""
    return digest.partition(":")[2][:12]
