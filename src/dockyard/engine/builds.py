"""The engine's side of a build: the parts of the engine that ``dockyard.build``'s
builder runs on, handed to it as a ``Backend`` (the builder imports no engine module):
the image service of the root, the OCI spec of a RUN's container rendered as a
container's is (``ocispec.render`` with the step's config and a host config of its
network), the network namespace a RUN runs in, and the reading of a user in a rootfs
(``COPY --chown``, ``WORKDIR`` after ``USER``). The CLI and the API server both build
through ``backend``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from dockyard.build.builder import Backend

if TYPE_CHECKING:
    from dockyard.build.builder import ProcessRequest
    from dockyard.engine.images import ImageService
    from dockyard.oci.runtime import Spec

__all__ = ["backend"]


def backend(images: ImageService, runroot: str) -> Backend:
    return Backend(images, os.path.abspath(runroot), _render_step, _resolve_owner,
                   _run_network)


def _render_step(request: ProcessRequest) -> Spec:
    from dockyard.engine import ocispec
    from dockyard.engine.config import ContainerConfig, HostConfig

    config = ContainerConfig(cmd=request.args, env=request.env, user=request.user or None,
                             working_dir=request.working_dir)
    spec = ocispec.render(config, HostConfig(network_mode=request.network), None,
                          rootfs=request.rootfs, container_id=request.container_id,
                          netns_path=request.netns)
    spec.mounts = [*(spec.mounts or []), *request.mounts]
    return spec


@contextlib.contextmanager
def _run_network(network: str, path: str) -> Iterator[str | None]:
    """The network namespace of a RUN on ``network``: None (the host's) for host; else
    one of its own with ``lo`` up, as a container's on Docker's ``none`` network,
    bound on ``path`` while the step runs. (Docker puts the ``default`` one on its
    bridge too; here it has no route out yet.)"""
    from dockyard.engine.containers import new_netns
    from dockyard.storage.snapshots import unmount

    if network == "host":
        yield None
        return
    try:
        new_netns(path)
        yield path
    finally:
        with contextlib.suppress(OSError):
            unmount(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _resolve_owner(rootfs: str, user: str) -> tuple[int, int]:
    """The ids of ``user[:group]`` in the rootfs, as a container's process gets them."""
    from dockyard.engine import ocispec

    resolved = ocispec.resolve_user(rootfs, user)
    return resolved.uid, resolved.gid
