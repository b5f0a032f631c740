"""The state database: SQLite in WAL mode at ``ROOT/dockyard.db``.

Every service keeps its metadata here, so that one transaction can change several
tables at once and a kill -9 at any point leaves either all of a change or none of it.
WAL lets readers (``dockyard images``) run while a writer (a pull) commits, and
``busy_timeout`` makes a second writer wait for the first instead of failing.

The schema is written down below as a list of migrations: ``MIGRATIONS[n]`` takes the
database from version ``n`` to ``n + 1`` and runs inside one transaction together with
the update of ``schema_version``, so a crash mid-migration leaves the old version.
A database newer than this dockyard is refused rather than misread.

Schema version 1::

    schema_version(version)                      one row: the schema's version
    images(id PK, manifest_digest, manifest_media_type, platform, created, size,
           chain_id, added)
        id               the image ID: the digest of its config blob
        manifest_digest  the single-platform manifest (the one ``push`` sends)
        platform         os/arch[/variant]
        created          the config's RFC 3339 ``created`` (may be empty)
        size             the unpacked size of all its layers, in bytes
        chain_id         the ChainID of its top layer (NULL for an image of no layer)
        added            unix time it was recorded (Docker's LastTagTime)
    tags(name PK, image_id, manifest_digest, added)
        name             a full reference: docker.io/library/busybox:latest, or
                         repo@sha256:... for a repo digest (the digest it was pulled by)
    image_blobs(image_id, digest)                every blob an image needs: its
                                                 manifest, config and layer blobs
    image_layers(image_id, position, chain_id)   its layer stack, bottom first
    layers(chain_id PK, diff_id, parent_chain_id, snapshot_key, size)
                                                 committed snapshots, shared by images
    blob_sources(digest, registry, repository)   where a blob was pulled from or pushed
                                                 to: ``push`` mounts it from there
    leases(id PK, pid, created)                  an operation in progress (a pull) that
    lease_resources(lease_id, kind, ref)         holds blobs and snapshots not yet
                                                 referenced by an image: GC keeps them
                                                 while the pid lives

Schema version 2 adds::

    containers(id PK, name UNIQUE, image_id, image, config, host_config, created,
               created_unix, state, pid, started_at, finished_at, exit_code,
               oom_killed, error, restart_count)
        id               64 hex digits; also the key of its writable snapshot
        name             without the leading "/"
        image_id         the image it was created from (``in_use`` of the images)
        image            the image as the user named it (Docker's Config.Image)
        config           Docker's Config, JSON, as given (the image's not merged in)
        host_config      Docker's HostConfig, JSON
        created          RFC 3339 (nanoseconds); created_unix the same as unix time
        state            creating | created | running | exited (what the engine last
                         saw; the monitor's files are the truth for a running one)
        pid              running: the container init's host pid; creating: the pid
                         of the process creating it (a dead one means an interrupted
                         create, which the next command cleans up)
        started_at, finished_at   RFC 3339 ("" when never)
        exit_code, oom_killed, error, restart_count   of the last run

Schema version 3 adds::

    volumes(name PK, driver, options, labels, created)
        name             Docker's volume name (64 hex digits for an anonymous one)
        driver           "local"
        options, labels  JSON objects of strings: the driver's options as given
        created          RFC 3339, in seconds (Docker's CreatedAt)
    volume_refs(volume, ref)                     who has the volume mounted (a container
                                                 ID): the last to release it unmounts it

Schema version 4 adds networking::

    networks(id PK, name UNIQUE, driver, bridge, ipam, internal, ipv6, options, labels,
             created)
        id               64 hex digits
        driver           "bridge", or "host" and "null" for the networks "host" and
                         "none" (recorded, as the network "bridge", on first use)
        bridge           the Linux bridge's name ("" for host and none)
        ipam             JSON list of {"Subnet", "Gateway", "IPRange", "Auto"}: the
                         IPv4 one first, then the IPv6 one with ``ipv6``; "Auto" when
                         dockyard chose the subnet (it may choose again while the
                         network has no bridge, if the host took it meanwhile)
        internal, ipv6   0 or 1
        options, labels  JSON objects of strings, as given
        created          RFC 3339 (nanoseconds)
    endpoints(container_id, network_id, ip, ipv6, mac, aliases, requested_ip,
              requested_ipv6, requested_mac, host_ifname, ifname, active,
              position)
        container_id     the container (removed with it); network_id the network
        ip, ipv6         the address it had on its last start, kept for the next start
                         unless someone took it meanwhile ("" when never started)
        aliases          JSON list: --network-alias and connect --alias
        requested_*      --ip, --ip6, --mac-address: "" when not asked
        host_ifname      the host end of its veth pair; ifname its end in the container
        position         the order it was connected in (the first is the primary)
        active           1 while its veth is plumbed (its addresses are then taken)
    port_mappings(container_id, proto, host_ip, host_port, container_port)
                         the host ports a running container's ports are published on,
                         free ones already chosen; removed at the end of the run

Schema version 5 adds the build cache::

    build_cache(key PK, image_id, parent_id, created)
        key              sha256 of a build step: the steps before it, its instruction
                         as expanded, the build args it sees, its sources' checksum
        image_id         the image the step made (an untagged image is intermediate,
                         hidden by ``images`` without ``-a``, when it is a parent_id)
        parent_id        the image stored before it in its stage ("" for scratch)
        created          unix time
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from dockyard.errors import Unavailable

#: The file name of the database under the root.
DB_NAME = "dockyard.db"
# A writer holds the lock for milliseconds; a pull commits once at its end. Waiting
# this long means another process is stuck, which is worth an error.
_BUSY_TIMEOUT_MS = 30_000

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: images, tags, layers, and what garbage collection needs.
    """
    CREATE TABLE images (
        id TEXT PRIMARY KEY,
        manifest_digest TEXT NOT NULL,
        manifest_media_type TEXT NOT NULL,
        platform TEXT NOT NULL,
        created TEXT NOT NULL,
        size INTEGER NOT NULL,
        chain_id TEXT,
        added REAL NOT NULL
    );
    CREATE TABLE tags (
        name TEXT PRIMARY KEY,
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        manifest_digest TEXT NOT NULL,
        added REAL NOT NULL
    );
    CREATE INDEX tags_by_image ON tags(image_id);
    CREATE TABLE image_blobs (
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        digest TEXT NOT NULL,
        PRIMARY KEY (image_id, digest)
    );
    CREATE INDEX image_blobs_by_digest ON image_blobs(digest);
    CREATE TABLE layers (
        chain_id TEXT PRIMARY KEY,
        diff_id TEXT NOT NULL,
        parent_chain_id TEXT,
        snapshot_key TEXT NOT NULL,
        size INTEGER NOT NULL
    );
    CREATE TABLE image_layers (
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        chain_id TEXT NOT NULL REFERENCES layers(chain_id),
        PRIMARY KEY (image_id, position)
    );
    CREATE INDEX image_layers_by_chain ON image_layers(chain_id);
    CREATE TABLE blob_sources (
        digest TEXT NOT NULL,
        registry TEXT NOT NULL,
        repository TEXT NOT NULL,
        PRIMARY KEY (digest, registry, repository)
    );
    CREATE TABLE leases (
        id TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE lease_resources (
        lease_id TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('blob', 'snapshot')),
        ref TEXT NOT NULL,
        PRIMARY KEY (lease_id, kind, ref)
    );
    """,
    # 1 -> 2: containers.
    """
    CREATE TABLE containers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        image_id TEXT NOT NULL,
        image TEXT NOT NULL,
        config TEXT NOT NULL,
        host_config TEXT NOT NULL,
        created TEXT NOT NULL,
        created_unix REAL NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('creating', 'created', 'running', 'exited')),
        pid INTEGER NOT NULL DEFAULT 0,
        started_at TEXT NOT NULL DEFAULT '',
        finished_at TEXT NOT NULL DEFAULT '',
        exit_code INTEGER NOT NULL DEFAULT 0,
        oom_killed INTEGER NOT NULL DEFAULT 0,
        error TEXT NOT NULL DEFAULT '',
        restart_count INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX containers_by_image ON containers(image_id)
    """,
    # 2 -> 3: volumes.
    """
    CREATE TABLE volumes (
        name TEXT PRIMARY KEY,
        driver TEXT NOT NULL,
        options TEXT NOT NULL,
        labels TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE TABLE volume_refs (
        volume TEXT NOT NULL REFERENCES volumes(name) ON DELETE CASCADE,
        ref TEXT NOT NULL,
        PRIMARY KEY (volume, ref)
    )
    """,
    # 3 -> 4: networks, the containers' endpoints on them, published ports.
    """
    CREATE TABLE networks (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        driver TEXT NOT NULL,
        bridge TEXT NOT NULL,
        ipam TEXT NOT NULL,
        internal INTEGER NOT NULL DEFAULT 0,
        ipv6 INTEGER NOT NULL DEFAULT 0,
        options TEXT NOT NULL,
        labels TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE TABLE endpoints (
        container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
        network_id TEXT NOT NULL REFERENCES networks(id),
        ip TEXT NOT NULL DEFAULT '',
        ipv6 TEXT NOT NULL DEFAULT '',
        mac TEXT NOT NULL DEFAULT '',
        aliases TEXT NOT NULL DEFAULT '[]',
        requested_ip TEXT NOT NULL DEFAULT '',
        requested_ipv6 TEXT NOT NULL DEFAULT '',
        requested_mac TEXT NOT NULL DEFAULT '',
        host_ifname TEXT NOT NULL DEFAULT '',
        ifname TEXT NOT NULL DEFAULT '',
        active INTEGER NOT NULL DEFAULT 0,
        position INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (container_id, network_id)
    );
    CREATE INDEX endpoints_by_network ON endpoints(network_id);
    CREATE TABLE port_mappings (
        container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
        proto TEXT NOT NULL,
        host_ip TEXT NOT NULL,
        host_port INTEGER NOT NULL,
        container_port INTEGER NOT NULL,
        PRIMARY KEY (proto, host_ip, host_port)
    )
    """,
    # 4 -> 5: the build cache.
    """
    CREATE TABLE build_cache (
        key TEXT PRIMARY KEY,
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        parent_id TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE INDEX build_cache_by_parent ON build_cache(parent_id)
    """,
)

#: The schema version this dockyard writes.
SCHEMA_VERSION = len(MIGRATIONS)


class Database:
    """The state database of one root.

    Each thread (and each process, after a fork) gets its own connection: a sqlite3
    connection must not be shared between threads, nor cross a fork. ``transaction()``
    is the only way to write.
    """

    def __init__(self, root: str) -> None:
        os.makedirs(root, exist_ok=True)
        self.path = os.path.join(os.path.abspath(root), DB_NAME)
        self._local = threading.local()
        self._migrate()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = self._open()
            self._local.conn, self._local.pid, self._local.depth = conn, os.getpid(), 0
        return conn

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: the module must not open transactions behind our back;
        # transaction() says BEGIN IMMEDIATE itself, taking the write lock up front so
        # that two writers wait on busy_timeout instead of deadlocking on an upgrade.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True,
                               timeout=_BUSY_TIMEOUT_MS / 1000)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL, in WAL mode: a commit is in the WAL when it returns, so it survives a
        # kill of any process; the WAL is fsynced at each checkpoint, so a power cut may
        # lose the last commits but never corrupts the database (FULL's fsync at every
        # commit cost `run --rm` a dozen of them).
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises.

        Nested blocks join the outer transaction.
        """
        conn = self.connection()
        if self._local.depth:
            self._local.depth += 1
            try:
                yield conn
            finally:
                self._local.depth -= 1
            return
        conn.execute("BEGIN IMMEDIATE")
        self._local.depth = 1
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
        finally:
            self._local.depth = 0

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """The rows of a read (outside a transaction it sees the last commit)."""
        return self.connection().execute(sql, params).fetchall()

    def _migrate(self) -> None:
        # Read first: every command opens the database, and the write lock that a
        # migration takes would queue commands run at once behind each other.
        with contextlib.suppress(sqlite3.OperationalError):  # no table yet
            rows = self.query("SELECT version FROM schema_version")
            if rows and rows[0][0] == SCHEMA_VERSION:
                return
        with self.transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise Unavailable(f"{self.path} has schema version {version}, this dockyard "
                                  f"knows up to {SCHEMA_VERSION}: upgrade dockyard")
            for script in MIGRATIONS[version:]:
                # executescript() would COMMIT first; run the statements one by one so
                # the whole migration stays in this transaction (hence no ";" inside a
                # literal of a migration).
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            if row is None:
                conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            else:
                conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
