"""``dockyard version`` (and, later, ``info`` and ``system ...``)."""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable

from dockyard import __version__


def _version_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--format", help="format the output with a Go template, or json")


ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "version": _version_args,
}


def version(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """What docker prints for ``docker version``, for a daemonless engine."""
    from dockyard.cli.formatting import render
    from dockyard.runtime.container import OCI_VERSION

    info = {
        "Version": __version__,
        "ApiVersion": "1.45",
        "OciVersion": OCI_VERSION,
        "Runtime": "dockyard-runtime",
        "PythonVersion": platform.python_version(),
        "Os": "linux",
        "Arch": os.uname().machine,
        "Root": options.root,
    }
    if args.format == "json":
        print(json.dumps(info))
    elif args.format:
        print(render(args.format, info))
    else:
        width = max(len(k) for k in info) + 2
        for key, value in info.items():
            print(f" {key + ':':<{width}}{value}")
    return 0
