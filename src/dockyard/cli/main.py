"""The ``dockyard`` command.

The engine's verbs (run, ps, images, build...) arrive with the engine layers; until
then the command reports its version and the runtime it drives, so that an install
can be checked.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dockyard import __version__

_USAGE = """usage: dockyard [--version] COMMAND

commands:
  version    show the dockyard version and the OCI runtime it uses

The OCI runtime itself is the `dockyard-runtime` command (runc's command line).
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dockyard``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--version"], ["-v"]):
        print(f"dockyard version {__version__}")
        return 0
    if args == ["version"]:
        from dockyard.runtime.container import OCI_VERSION

        print(f"dockyard:        {__version__}\nOCI runtime:     dockyard-runtime {__version__}"
              f"\nOCI spec:        {OCI_VERSION}")
        return 0
    if args in ([], ["--help"], ["-h"], ["help"]):
        print(_USAGE, end="")
        return 0
    print(f"dockyard: unknown command {args[0]!r}; see 'dockyard --help'", file=sys.stderr)
    return 125
