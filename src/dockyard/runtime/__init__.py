"""The OCI runtime: an OCI bundle in, an isolated running process out.

``Runtime`` is the API the engine calls in process; ``dockyard-runtime`` (``cli``) is
runc's command line over it.
"""

from dockyard.runtime.container import DEFAULT_ROOT, Runtime, Stdio
from dockyard.runtime.state import Status

__all__ = ["DEFAULT_ROOT", "Runtime", "Status", "Stdio"]
