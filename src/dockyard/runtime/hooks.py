"""OCI lifecycle hooks: programs run with the container's state on their stdin."""

from __future__ import annotations

from collections.abc import Sequence

from dockyard.errors import SystemFailure, Timeout
from dockyard.oci.runtime import Hook


def run_hooks(kind: str, hooks: Sequence[Hook] | None, state: bytes) -> None:
    """Run each hook in order; the first that fails or times out stops the lifecycle.

    A hook's stdout and stderr go to the runtime's own, where containerd and the
    user see them. ``kind`` names the hook point in the error.
    """
    import subprocess  # only when there are hooks: it costs a few ms to import

    for hook in hooks or ():
        args = hook.args or [hook.path]
        try:
            proc = subprocess.run(args, executable=hook.path, input=state, env=_env(hook.env),
                                  timeout=hook.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise Timeout(f"{kind} hook {hook.path} did not finish within "
                          f"{hook.timeout}s") from None
        except OSError as e:
            raise SystemFailure(f"{kind} hook {hook.path}: {e.strerror}") from None
        if proc.returncode != 0:
            raise SystemFailure(f"{kind} hook {hook.path} failed with exit status "
                                f"{proc.returncode}")


def _env(pairs: Sequence[str] | None) -> dict[str, str]:
    return dict(p.split("=", 1) for p in pairs or () if "=" in p)
