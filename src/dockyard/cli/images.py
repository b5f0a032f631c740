"""The image commands: pull, push, images, tag, rmi, inspect, history, save, load,
import, prune, login, logout and bootstrap, with docker's flags and output."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

from dockyard.cli.formatting import ago, format_rows, human_size
from dockyard.cli.prompting import confirm, parse_filters, registries, write_archive
from dockyard.errors import DockyardError, InvalidArgument, NotFound
from dockyard.images import reference as references


def service(options: argparse.Namespace) -> Any:
    """The image service of the chosen root; it knows which images containers use, so
    that ``rmi`` and ``image prune`` leave those alone."""
    from dockyard.engine.containers import ContainerService

    return ContainerService(options.root, options.runroot,
                            storage_driver=options.storage_driver,
                            registries=registries()).images


def _progress(quiet: bool) -> Callable[[Any], None]:
    from dockyard.cli.progress import ProgressPrinter

    return ProgressPrinter(quiet=quiet)


def _short(image_id: str, no_trunc: bool = False) -> str:
    return image_id if no_trunc else image_id.removeprefix("sha256:")[:12]


# --- pull and push ---------------------------------------------------------------------


def pull(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker pull``."""
    ref = references.parse(args.name)
    images = service(options)
    quiet = args.quiet
    if not quiet:
        if ref.digest is None and ":" not in args.name.rpartition("/")[2]:
            print(f"Using default tag: {ref.tag}")
        print(f"{ref.digest or ref.tag}: Pulling from {ref.path}")
    before = _image_of(images, str(ref))
    info = images.pull(args.name, platform=args.platform, progress=_progress(quiet))
    if not quiet:
        if info.repo_digest:
            print(f"Digest: {info.repo_digest.rpartition('@')[2]}")
        state = "Image is up to date for" if before == info.id else \
            "Downloaded newer image for"
        print(f"Status: {state} {ref.familiar()}")
    print(str(ref))
    return 0


def _image_of(images: Any, ref: str) -> str | None:
    try:
        return str(images.resolve(ref))
    except NotFound:
        return None


def push(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker push``."""
    ref = references.parse(args.name)
    if not args.quiet:
        print(f"The push refers to repository [{ref.name}]")
    images = service(options)
    digest = images.push(args.name, progress=_progress(args.quiet))
    if args.quiet:
        print(str(ref))
    else:
        print(f"{ref.tag}: digest: {digest} size: {images.content.info(digest).size}")
    return 0


# --- listing and inspecting ------------------------------------------------------------


def images(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker images`` / ``docker image ls``."""
    filters = parse_filters(args.filter)
    if args.repository:
        filters.setdefault("reference", []).append(args.repository)
    summaries = service(options).list(all=args.all, filters=filters)
    if args.quiet:
        for image_id in dict.fromkeys(_short(s.id, args.no_trunc) for s in summaries):
            print(image_id)
        return 0
    rows = []
    for s in summaries:
        digests = {d.partition("@")[0]: d.partition("@")[2] for d in s.repo_digests}
        tags = list(s.repo_tags) or ([f"{d.partition('@')[0]}:<none>" for d in s.repo_digests]
                                     or ["<none>:<none>"])
        for tag in tags:
            repo, _, name = tag.rpartition(":")
            rows.append({"Repository": repo, "Tag": name, "Digest": digests.get(repo, "<none>"),
                         "ID": _short(s.id, args.no_trunc), "CreatedSince": ago(s.created),
                         "CreatedAt": s.created, "Size": human_size(s.size),
                         "Containers": "N/A"})
    columns = "{{.Repository}}\t{{.Tag}}\t" + ("{{.Digest}}\t" if args.digests else "") + \
        "{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    print(format_rows(rows, args.format, f"table {columns}",
                      {"ID": "IMAGE ID", "CreatedSince": "CREATED"}))
    return 0


def inspect(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker image inspect``: a JSON array, or ``--format`` per image."""
    from dockyard.cli.formatting import print_inspected

    images = service(options)
    found, failed = [], []
    for name in args.names:
        try:
            found.append(images.inspect(name))
        except NotFound as e:
            failed.append(str(e))
    return print_inspected(found, failed, args.format)


def history(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker history``."""
    entries = service(options).history(args.name)
    if args.quiet:
        print("\n".join(_short(e["Id"], args.no_trunc) if e["Id"] != "<missing>" else e["Id"]
                        for e in entries))
        return 0
    rows = []
    for e in entries:
        created_by = e["CreatedBy"]
        if not args.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        rows.append({"ID": _short(e["Id"], args.no_trunc) if e["Id"] != "<missing>"
                     else e["Id"], "CreatedSince": ago(e["Created"]), "CreatedBy": created_by,
                     "Size": human_size(e["Size"]), "Comment": e["Comment"]})
    print(format_rows(rows, args.format,
                      "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
                      {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedBy": "CREATED BY"}))
    return 0


# --- changing the set of images --------------------------------------------------------


def tag(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker tag``."""
    service(options).tag(args.source, args.target)
    return 0


def rmi(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker rmi``: each image in turn; a failure does not stop the others."""
    images = service(options)
    status = 0
    for name in args.names:
        try:
            for line in images.remove(name, force=args.force):
                print(line)
        except DockyardError as e:
            print(f"Error: {e}", file=sys.stderr)
            status = 1
    return status


def image_prune(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker image prune``."""
    what = "all images without at least one container associated to them" if args.all \
        else "all dangling images"
    if not args.force and not confirm(f"WARNING! This will remove {what}."):
        return 0
    deleted, reclaimed = service(options).prune(all=args.all)
    if deleted:
        print("Deleted Images:")
        print("\n".join(deleted))
        print()
    print(f"Total reclaimed space: {human_size(reclaimed)}")
    return 0


# --- archives and base images ----------------------------------------------------------


def save(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker save``: to ``-o FILE`` or to a redirected stdout."""
    images = service(options)
    write_archive(args.output, lambda out: images.save(args.names, out))
    return 0


def _input(path: str | None) -> BinaryIO:
    if path in (None, "-"):
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as e:
        raise InvalidArgument(f"cannot open {path}: {e.strerror}") from None


def load(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker load``: from ``-i FILE`` or stdin."""
    if args.input is None and sys.stdin.isatty():
        raise InvalidArgument("requested load from stdin, but stdin is empty")
    with _input(args.input) as stream:
        for line in service(options).load(stream):
            if not args.quiet or line.startswith("Loaded"):
                print(line)
    return 0


def import_(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker import FILE|- [REPOSITORY[:TAG]]``: prints the new image's ID."""
    with _input(args.file) as stream:
        info = service(options).import_image(stream, args.reference, changes=args.change,
                                             message=args.message)
    print(info.id)
    return 0


def image_bootstrap(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``dockyard image bootstrap busybox|debian[:SUITE]``: a base image without a
    registry."""
    info = service(options).bootstrap(args.name)
    print(info.id)
    return 0


def system_check(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``dockyard system check``: re-hash every blob, check every image is whole."""
    problems = service(options).check()
    for problem in problems:
        print(problem)
    if not problems:
        print("no problems found")
    return 1 if problems else 0


# --- registries ------------------------------------------------------------------------


def login(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker login``: checks the credentials with the registry, then stores them in
    Docker's config.json."""
    from dockyard.images.registry import login as registry_login

    server = args.server or references.DEFAULT_DOMAIN
    username = args.username or input("Username: ")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif args.password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
              file=sys.stderr)
        password = args.password
    else:
        import getpass

        password = getpass.getpass("Password: ")
    registry_login(references.registry_host(server), username, password)
    print("Login Succeeded")
    return 0


def logout(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker logout``."""
    server = args.server or references.DEFAULT_DOMAIN
    from dockyard.images.registry import erase_credentials

    if erase_credentials(references.registry_host(server)):
        print(f"Removing login credentials for {server}")
    else:
        print(f"Not logged in to {server}")
    return 0


# --- flags -----------------------------------------------------------------------------


def _pull_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image name")
    p.add_argument("--platform", help="os/arch[/variant] of the image to pull")
    p.add_argument("name", metavar="NAME[:TAG|@DIGEST]")


def _push_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("name", metavar="NAME[:TAG]")


def _images_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="show intermediate images too")
    p.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    p.add_argument("--digests", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[],
                   help="dangling=true|false, reference=GLOB, label=KEY[=VALUE], before=, since=")
    p.add_argument("--format", help="a Go template, 'table ...' or json")
    p.add_argument("repository", nargs="?", metavar="REPOSITORY[:TAG]")


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--format")
    p.add_argument("names", nargs="+", metavar="IMAGE")


def _history_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format")
    p.add_argument("name", metavar="IMAGE")


def _tag_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")


def _rmi_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--no-prune", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("names", nargs="+", metavar="IMAGE")


def _prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-f", "--force", action="store_true", help="do not ask")


def _save_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output")
    p.add_argument("names", nargs="+", metavar="IMAGE")


def _load_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input")
    p.add_argument("-q", "--quiet", action="store_true")


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--change", action="append", default=[])
    p.add_argument("-m", "--message")
    p.add_argument("file", metavar="file|-")
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")


def _name_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="busybox|debian[:SUITE]")


def _login_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("server", nargs="?")


def _logout_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("server", nargs="?")


ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "pull": _pull_args, "push": _push_args, "images": _images_args, "inspect": _inspect_args,
    "history": _history_args, "tag": _tag_args, "rmi": _rmi_args,
    "image-prune": _prune_args, "save": _save_args, "load": _load_args,
    "import": _import_args, "image-bootstrap": _name_args, "system-check": lambda p: None,
    "login": _login_args, "logout": _logout_args,
}
