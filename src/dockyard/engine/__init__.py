"""The engine: the services behind every CLI verb and API route.

    db          ``Database``: the state database (SQLite, WAL) under the root, migrated
    images      ``ImageService``: pull, push, tag, remove, list, inspect, history,
                prune, check and the garbage collection of blobs and snapshots
    progress    ``Event`` / ``Progress``: per-layer progress of a pull or a push

The engine imports ``images`` and ``storage`` below it, never the CLI or the API.
"""
