"""The registry client: distribution API v2 over HTTP(S), its authentication, and the
credentials ``dockyard login`` keeps in Docker's ``config.json``.

Imported only by pull, push and login, so nothing of it loads on the path of ``run``.
"""

from __future__ import annotations

from .client import (
    MANIFEST_MEDIA_TYPES,
    BlobStream,
    Manifest,
    ManifestHead,
    PushResult,
    RegistryClient,
    is_digest,
    login,
)
from .credentials import Credentials, erase_credentials, load_credentials, store_credentials

__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "BlobStream",
    "Credentials",
    "Manifest",
    "ManifestHead",
    "PushResult",
    "RegistryClient",
    "erase_credentials",
    "is_digest",
    "load_credentials",
    "login",
    "store_credentials",
]
