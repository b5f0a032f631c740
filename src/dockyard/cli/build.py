"""``dockyard build``: docker build's flags and its classic builder's output; the
builder (``dockyard.build.builder``) runs on the engine's parts of
``dockyard.engine.builds``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

from dockyard.errors import InvalidArgument

_PROGRESS = ("auto", "plain", "tty", "quiet")


def _declare_build(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH | URL | -", help="the build context")
    p.add_argument("-t", "--tag", action="append", default=[],
                   help="name and optionally a tag in the name:tag format")
    p.add_argument("-f", "--file", help="name of the Dockerfile (default: PATH/Dockerfile)")
    p.add_argument("--build-arg", action="append", default=[], help="set build-time variables")
    p.add_argument("--target", help="set the target build stage to build")
    p.add_argument("--label", action="append", default=[], help="set metadata for an image")
    p.add_argument("--network", default="default",
                   help="networking mode for RUN: default, none or host")
    p.add_argument("--progress", default="auto",
                   help="type of progress output: auto, plain, tty or quiet")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="suppress the build output and print image ID on success")
    p.add_argument("--iidfile", help="write the image ID to the file")
    p.add_argument("--secret", action="append", default=[],
                   help="secret to expose to the build: id=mysecret[,src=/local/secret]")
    p.add_argument("--no-cache", action="store_true",
                   help="do not use cache when building the image")
    p.add_argument("--pull", action="store_true",
                   help="always attempt to pull a newer version of the image")
    p.add_argument("--cache-from", action="append", default=[],
                   help="images to consider as cache sources")
    p.add_argument("--platform", help="set platform (only this host's)")
    # Accepted as docker does; intermediate containers are always removed.
    p.add_argument("--rm", action="store_true", default=True, help=argparse.SUPPRESS)
    p.add_argument("--force-rm", action="store_true", help=argparse.SUPPRESS)


ARGUMENTS = {"build": _declare_build}


def _pairs(values: list[str], flag: str) -> dict[str, str | None]:
    """``KEY=VALUE`` flags; a bare ``KEY`` (build args) takes its value from the
    environment, later."""
    result: dict[str, str | None] = {}
    for value in values:
        key, eq, rest = value.partition("=")
        if not key:
            raise InvalidArgument(f"invalid {flag} {value!r}: expected KEY=VALUE")
        result[key] = rest if eq else None
    return result


def _labels(values: list[str]) -> dict[str, str]:
    return {key: value or "" for key, value in _pairs(values, "--label").items()}


@contextlib.contextmanager
def _secrets(values: list[str], scratch: str) -> Iterator[dict[str, str]]:
    """``--secret id=x,src=FILE`` (or ``env=VAR``): secret ids and the files that hold
    them; a secret from the environment is written to a file of ``scratch`` for the
    build's length only."""
    from dockyard.build.steps import owned

    found: dict[str, str] = {}
    written: list[str] = []
    try:
        for value in values:
            fields = dict(part.partition("=")[::2] for part in value.split(",") if part)
            ident = fields.get("id")
            if not ident:
                raise InvalidArgument(f"invalid --secret {value!r}: expected id=NAME,src=FILE")
            source = fields.get("src") or fields.get("source")
            variable = fields.get("env")
            if source is None and variable is None:
                source = ident if os.path.exists(ident) else None
                variable = None if source else ident
            if source is not None:
                if not os.path.isfile(source):
                    raise InvalidArgument(f"--secret {ident}: {source} is not a file")
                found[ident] = os.path.abspath(source)
                continue
            assert variable is not None
            if variable not in os.environ:
                raise InvalidArgument(f"--secret {ident}: environment variable {variable} "
                                      "is not set")
            os.makedirs(scratch, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix=owned("secret"), dir=scratch)
            written.append(path)
            with os.fdopen(fd, "w") as f:
                f.write(os.environ[variable])
            found[ident] = path
        yield found
    finally:
        for path in written:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _epoch(build_args: dict[str, str | None]) -> int | None:
    text = build_args.get("SOURCE_DATE_EPOCH") or os.environ.get("SOURCE_DATE_EPOCH")
    if not text:
        return None
    if not text.isdigit():
        raise InvalidArgument(f"SOURCE_DATE_EPOCH={text}: expected seconds since 1970")
    return int(text)


def build(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker build``."""
    from dockyard.build.builder import Builder, BuildOptions
    from dockyard.build.context import open_context
    from dockyard.build.dockerfile import parse
    from dockyard.cli.images import registries
    from dockyard.engine.builds import backend as engine_backend
    from dockyard.engine.images import ImageService
    from dockyard.images import reference as references

    if args.progress not in _PROGRESS:
        raise InvalidArgument(f"invalid --progress {args.progress!r}: use one of "
                              f"{', '.join(_PROGRESS)}")
    quiet = args.quiet or args.progress == "quiet"
    build_args = _pairs(args.build_arg, "--build-arg")
    for tag in args.tag:
        references.parse(tag)  # a bad name is refused before anything is built
    images = ImageService(options.root, storage_driver=options.storage_driver,
                          registries=registries())
    backend = engine_backend(images, options.runroot)
    scratch = os.path.join(backend.runroot, "build")
    with _secrets(args.secret, scratch) as secrets, \
            open_context(args.path, dockerfile=args.file, stdin=sys.stdin.buffer) as context:
        dockerfile = parse(context.dockerfile_text, context.dockerfile_name)
        build_options = BuildOptions(
            tags=args.tag, build_args=build_args, target=args.target,
            labels=_labels(args.label), network=args.network, no_cache=args.no_cache,
            pull=args.pull, cache_from=args.cache_from, secrets=secrets,
            platform=args.platform, source_date_epoch=_epoch(build_args), quiet=quiet)
        result = Builder(backend, sys.stdout).build(dockerfile, context, build_options)
    if args.iidfile:
        with open(args.iidfile, "w") as f:
            f.write(result.image_id)
    if quiet:
        print(result.image_id)
    return 0
