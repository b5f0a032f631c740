"""The builder: a parsed Dockerfile and a context in, an image out, step by step.

Each instruction of the stages the target needs is a step, run on what the step before
made. Every step extends a cache key (``dockyard.build.cache``) that stands for all the
steps so far:

    config steps   ENV CMD ENTRYPOINT LABEL EXPOSE VOLUME USER STOPSIGNAL HEALTHCHECK
                   SHELL ONBUILD MAINTAINER: a new config in memory, no layer (history
                   ``empty_layer``); ARG only changes what later steps see
    file steps     RUN COPY ADD WORKDIR: looked up by their key first; else a snapshot
                   over the parent's layers (``steps.Workspace``), changed by a
                   container run in process (RUN) or by the builder itself (COPY, ADD,
                   WORKDIR's mkdir); what changed becomes a layer (none when nothing
                   did) and the result an image of the root, remembered under the key

The stages the target needs are built by ``schedule.build_stages``: those that do not
depend on each other at the same time, in threads. What their steps share is set
before the stages start, or only added to (``results`` by stage, ``consumed``: single
dict and set operations, atomic), or under a lock (pulls, the running containers);
each stage prints to its own stream.

A stage's end is stored as an image too (under the key of all its steps), so a fully
cached rebuild gives the same image ID. Storing an image per config step, as Docker's
classic builder does, would cost a recorded image each for nothing the cache needs.

The engine below is reached through ``Backend``: the image service (images, content,
snapshots, the database), how to render a RUN's OCI spec and how to read a user of a
rootfs; the CLI (and the API server) wire the engine's own in.

Variables are expanded where Docker expands them (``dockyard.build.shell``) with the
stage's ENV over its ARGs in scope. Global ARGs (before the first FROM) are seen by FROM
only, unless a stage declares them again. With ``SOURCE_DATE_EPOCH`` the layers' file
times are clamped to it and the configs' and history's ``created`` are it, so a
context built twice gives the same image ID.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import msgspec

from dockyard.build.cache import BuildCache, step_key
from dockyard.build.dockerfile import (
    Dockerfile,
    DockerfileError,
    Heredoc,
    Instruction,
    Stage,
    parse_instruction,
)
from dockyard.build.files import (
    Ownership,
    Source,
    copy_into,
    download,
    extract_into,
    glob_in_root,
    is_archive,
    make_dir,
    resolve_in_root,
)
from dockyard.build.schedule import build_stages
from dockyard.build.steps import Layer, Workspace, chain_of, kill, owned, run_process, sweep
from dockyard.errors import DockyardError, InvalidArgument, NotFound
from dockyard.images.building import store_image
from dockyard.images.platform import format_platform, host_platform, matches, parse_platform
from dockyard.oci.image import (
    ContainerConfig,
    Descriptor,
    HealthConfig,
    History,
    ImageConfig,
    RootFS,
    load_config,
    load_manifest,
)
from dockyard.oci.runtime import Mount

if TYPE_CHECKING:
    from dockyard.build.context import BuildContext
    from dockyard.oci.runtime import Spec
    from dockyard.storage.content import ContentStore
    from dockyard.storage.snapshots import Snapshotter

__all__ = ["Backend", "BuildOptions", "BuildResult", "Builder", "ProcessRequest",
           "StepFailed"]

DEFAULT_SHELL = ("/bin/sh", "-c")
#: Args every build knows without an ARG, passed to RUN but kept out of the cache key
#: and the history (Docker's predefined proxy args).
PROXY_ARGS = frozenset({"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
                        "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY",
                        "all_proxy"})
# Where a RUN heredoc that names its interpreter is put to be run (/dev is a tmpfs of
# the container's own: nothing is left in the rootfs).
_SCRIPTS = "/dev/pipes"
_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)")
_DURATION_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                "m": 60_000_000_000, "h": 3_600_000_000_000}


class StepFailed(DockyardError):
    """A RUN's command exited with another status than 0 (``docker build`` exits 1)."""


class _Cancelled(DockyardError):
    """A stage stopped because another failed: that one's error is the build's."""


# --- what the builder needs from the engine ------------------------------------------


class Images(Protocol):
    """The image service of the root (``dockyard.engine.images.ImageService``)."""

    root: str
    db: Any
    content: ContentStore
    snapshots: Snapshotter

    def resolve(self, ref_or_id: str) -> str: ...

    def pull(self, ref: str, *, platform: str | None = None, progress: Any = None) -> Any: ...

    def add_image(self, manifest_data: bytes, config_data: bytes, tags: Sequence[str] = (),
                  *, media_type: str | None = None) -> Any: ...

    def tag(self, source: str, target: str) -> None: ...


@dataclass(frozen=True)
class ProcessRequest:
    """A RUN's container, for the engine to render as an OCI spec: ``args`` run as
    ``user`` in ``working_dir`` with ``env`` (the image's and the args in scope), in
    the rootfs mounted at ``rootfs``; ``network`` host, or the namespace ``netns``
    joins; ``mounts`` are those of ``RUN --mount``."""

    args: list[str]
    env: list[str]
    user: str
    working_dir: str
    rootfs: str
    container_id: str
    network: str
    netns: str | None
    mounts: list[Mount]


@dataclass(frozen=True)
class Backend:
    """The engine's parts the builder uses: ``images``; ``runroot`` for the run-time
    state (``runroot/build`` for rootfs mounts and bundles, ``runroot/runtime`` for
    the runtime's own); ``render`` a RUN's OCI spec; ``resolve_user`` (rootfs,
    ``user[:group]``) -> (uid, gid) as the image's passwd and group files say (a user
    without a group: its primary group); ``network`` (the RUN's network:
    default, none or host; a path to bind a namespace on) -> a context in which the
    namespace to join is there (None: the host's)."""

    images: Images
    runroot: str
    render: Callable[[ProcessRequest], Spec]
    resolve_user: Callable[[str, str], tuple[int, int]]
    network: Callable[[str, str], AbstractContextManager[str | None]]


@dataclass
class BuildOptions:
    """``docker build``'s options (see ``docs/build.md``)."""

    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str | None] = field(default_factory=dict)
    target: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    network: str = "default"
    no_cache: bool = False
    pull: bool = False
    cache_from: list[str] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)
    platform: str | None = None
    source_date_epoch: int | None = None
    quiet: bool = False


@dataclass(frozen=True)
class BuildResult:
    """The image built, and the tags it got."""

    image_id: str
    tags: tuple[str, ...]


# --- an image while it is built ------------------------------------------------------


@dataclass
class _Image:
    """A step's result: its config and layer blobs, and its ID once stored ("" for
    scratch, None while only config steps made it)."""

    id: str | None
    config: ImageConfig
    layers: list[Descriptor]
    chain: str | None

    @property
    def run(self) -> ContainerConfig:
        return self.config.config or ContainerConfig()


def _now(epoch: int | None) -> str:
    if epoch is not None:
        return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _go_list(words: Sequence[str]) -> str:
    """A list as Go's ``%q`` of a slice prints it, as Docker's history shows commands."""
    return "[" + " ".join(json.dumps(w) for w in words) + "]"


def _duration(text: str, what: str) -> int:
    """A Go duration (``30s``, ``1m30s``, ``500ms``) in nanoseconds."""
    total, pos = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match[1]) * _DURATION_NS[match[2]]
        pos = match.end()
    if pos != len(text) or not text:
        raise InvalidArgument(f"HEALTHCHECK --{what}={text}: not a duration (use 30s, 1m30s)")
    return int(total)


def _octal(text: str) -> int:
    if not re.fullmatch(r"[0-7]{1,4}", text):
        raise InvalidArgument(f"--chmod={text}: expected an octal mode such as 755")
    return int(text, 8)


def _parse_mount(text: str) -> dict[str, str]:
    """``type=cache,target=/x,ro`` as a dict; a bare word is ``word=true``."""
    fields: dict[str, str] = {}
    for part in filter(None, text.split(",")):
        key, eq, value = part.partition("=")
        fields[key.strip().lower()] = value if eq else "true"
    if "dst" in fields or "destination" in fields:
        fields.setdefault("target", fields.get("dst") or fields.get("destination", ""))
    if "src" in fields:
        fields.setdefault("source", fields["src"])
    return fields


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1", "")


# --- the builder ---------------------------------------------------------------------


class _StageState:
    """What one stage has while its steps run."""

    def __init__(self, stage: Stage, image: _Image, out: TextIO, step: int) -> None:
        self.stage = stage
        self.image = image
        self.out = out    # where the stage's output goes (see ``schedule``)
        self.step = step  # the number of its last step shown
        # The cache key of the steps so far: a config step changes it but stores no
        # image; the next file step (or the stage's end) stores one under the key.
        self.ref = image.id or "scratch"
        self.parent_id = image.id or ""  # the last image stored
        self.args: dict[str, str] = {}   # ARGs declared in the stage, with a value
        self.cmd_set = False             # a CMD of this stage (ENTRYPOINT resets an inherited one)


class Builder:
    """Builds Dockerfiles into images of the backend's root."""

    def __init__(self, backend: Backend, out: TextIO) -> None:
        self.backend = backend
        self.images = backend.images
        self.cache = BuildCache(self.images.db)
        self.out = out
        self.work_dir = os.path.join(backend.runroot, "build")
        self.runtime_root = os.path.join(backend.runroot, "runtime")
        self._steps = 0
        self._cache_images: list[_Image] = []
        self._pulled: dict[str, str] = {}
        # Stages build in threads (``schedule``): a pull is made once, and a failure
        # stops the containers of the others (``_cancel``).
        self._lock = threading.Lock()
        self._pull_lock = threading.Lock()
        self._cancelled = False
        self._running: set[str] = set()

    # --- output ------------------------------------------------------------------------

    def _say(self, text: str, out: TextIO | None = None) -> None:
        if not self.options.quiet:
            (out or self.out).write(text + "\n")

    # --- entry point -------------------------------------------------------------------

    def build(self, dockerfile: Dockerfile, context: BuildContext,
              options: BuildOptions) -> BuildResult:
        """Build ``options.target`` (default: the last stage) of ``dockerfile``."""
        self.options = options
        self.dockerfile = dockerfile
        self.context = context
        self.escape = dockerfile.escape
        if not dockerfile.stages:
            raise DockerfileError("the Dockerfile has no FROM: a build starts with FROM "
                                  "IMAGE (or FROM scratch)", filename=dockerfile.filename)
        if options.platform:
            want = parse_platform(options.platform)
            if not matches(want, host_platform()):
                raise InvalidArgument(f"--platform {options.platform}: only this host's "
                                      f"platform ({format_platform(host_platform())}) "
                                      "can be built")
        self.consumed: set[str] = set()
        self._cancelled = False
        self.meta = self._meta_args()
        target = self._target()
        deps = self._needed(target)
        needed = [s for s in dockerfile.stages if s.index in deps]
        # Numbered in file order, whichever stage runs first; the global ARGs first, as
        # Docker's classic builder counts them.
        first_steps: dict[int, int] = {}
        count = len(dockerfile.meta_args)
        for stage in needed:
            first_steps[stage.index] = count + 1
            count += 1 + len(stage.instructions)
            if stage is target and options.labels:
                count += 1  # the LABEL step of --label
        self._steps = count
        self.results: dict[int, _Image] = {}
        self._cache_images = self._cache_sources()
        sweep(self.work_dir, self.runtime_root, self.images.snapshots)
        os.makedirs(self.work_dir, exist_ok=True)
        for number, instruction in enumerate(dockerfile.meta_args, 1):
            self._say(f"Step {number}/{count} : {_shown(instruction)}")

        def build_stage(index: int, out: TextIO) -> None:
            stage = self.dockerfile.stages[index]
            self.results[index] = self._build_stage(stage, stage is target, out,
                                                    first_steps[index])

        build_stages([s.index for s in needed], deps, build_stage, self.out,
                     cancel=self._cancel, spool_dir=self.work_dir)
        final = self.results[target.index]
        if not final.id:
            raise DockerfileError("the build made no image: FROM scratch needs a step that "
                                  "adds files", filename=dockerfile.filename)
        unused = sorted(set(options.build_args) - self.consumed - PROXY_ARGS)
        if unused:
            self._say(f"[Warning] One or more build-args [{' '.join(unused)}] were not "
                      "consumed")
        self._say(f"Successfully built {_short(final.id)}")
        for tag in options.tags:
            self.images.tag(final.id, tag)
            self._say(f"Successfully tagged {_familiar(tag)}")
        return BuildResult(str(final.id), tuple(options.tags))

    # --- stages ------------------------------------------------------------------------

    def _meta_args(self) -> dict[str, str]:
        """The global ARGs (and the platform args BuildKit predefines) with values."""
        platform = format_platform(host_platform())
        plat = host_platform()
        values = {"TARGETPLATFORM": platform, "TARGETOS": plat.os,
                  "TARGETARCH": plat.architecture, "TARGETVARIANT": plat.variant or "",
                  "BUILDPLATFORM": platform, "BUILDOS": plat.os,
                  "BUILDARCH": plat.architecture, "BUILDVARIANT": plat.variant or ""}
        for instruction in self.dockerfile.meta_args:
            for word in instruction.args:
                name, value = self._declare(word, values, instruction)
                if value is not None:
                    values[name] = value
        return values

    def _declare(self, word: str, env: Mapping[str, str],
                 instruction: Instruction) -> tuple[str, str | None]:
        """An ARG word: its name, and its value (the --build-arg, else the default)."""
        name, eq, default = word.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise self._error(instruction, f"ARG {word}: {name!r} is not a valid name")
        self.consumed.add(name)
        given = self.options.build_args.get(name)
        if name in self.options.build_args:
            if given is None:
                given = os.environ.get(name)
            if given is not None:
                return name, given
        if eq:
            return name, self._expand(default, env, instruction)
        return name, None

    def _target(self) -> Stage:
        target = self.options.target
        if target is None:
            return self.dockerfile.stages[-1]
        for stage in self.dockerfile.stages:
            if stage.name == target.lower():
                return stage
        raise InvalidArgument(f"failed to reach build target {target} in Dockerfile: "
                              "no stage has that name")

    def _stage_named(self, ref: str) -> Stage | None:
        """The stage an ``AS`` name or an index names, None for an image reference."""
        for stage in self.dockerfile.stages:
            if stage.name is not None and stage.name == ref.lower():
                return stage
        if ref.isdigit():
            index = int(ref)
            if index < len(self.dockerfile.stages):
                return self.dockerfile.stages[index]
        return None

    def _needed(self, target: Stage) -> dict[int, set[int]]:
        """The stages ``target`` needs, itself included (the others are not built), each
        with those it names (its base, ``COPY --from``, ``RUN --mount from``)."""
        needed: dict[int, set[int]] = {}
        todo = [target]
        while todo:
            stage = todo.pop()
            if stage.index in needed:
                continue
            deps = needed[stage.index] = set()
            refs = [self._expand(stage.base, self.meta, None)]
            for instruction in stage.instructions:
                refs += [self._expand(r, self.meta, instruction)
                         for r in instruction.flag_values("from")]
                refs += [_parse_mount(m).get("from", "") for m in instruction.flag_values("mount")]
            for ref in filter(None, refs):
                found = self._stage_named(ref)
                if found is not None and found.index < stage.index:
                    todo.append(found)
                    deps.add(found.index)
                elif found is not None and found.index >= stage.index:
                    raise DockerfileError(f"stage {stage.name or stage.index} refers to "
                                          f"{ref}, which is not an earlier stage",
                                          filename=self.dockerfile.filename, line=stage.line)
        return needed

    def _build_stage(self, stage: Stage, is_target: bool, out: TextIO,
                     first_step: int) -> _Image:
        base = self._expand(stage.base, self.meta, None)
        self._say(f"Step {first_step}/{self._steps} : FROM {base}"
                  + (f" AS {stage.name}" if stage.name else ""), out)
        if stage.platform:
            platform = self._expand(stage.platform, self.meta, None)
            if not matches(parse_platform(platform), host_platform()):
                raise DockerfileError(f"FROM --platform={platform}: only this host's platform "
                                      f"({format_platform(host_platform())}) can be built",
                                      filename=self.dockerfile.filename, line=stage.line)
        image = self._base_image(base, stage)
        self._say(f" ---> {_short(image.id) if image.id else 'scratch'}", out)
        state = _StageState(stage, image, out, first_step)
        triggers = list(image.run.on_build or [])
        if triggers:
            # The triggers of the base run first, once: the new image does not keep them.
            state.image = _Image(None, msgspec.structs.replace(
                image.config, config=replace_config(image.run, on_build=None)),
                image.layers, image.chain)
            state.ref = step_key(state.ref, "onbuild")
            self._say(f"# Executing {len(triggers)} build trigger"
                      f"{'s' if len(triggers) > 1 else ''}", out)
            for text in triggers:
                trigger = parse_instruction(text, escape=self.escape,
                                            filename=self.dockerfile.filename, line=stage.line)
                self._run_step(state, trigger, counted=False)
        for instruction in stage.instructions:
            self._run_step(state, instruction)
        if is_target and self.options.labels:
            # --label: one more LABEL step, its values taken as given (not expanded).
            labels = self.options.labels
            shown = " ".join(f"{k}={v}" for k, v in sorted(labels.items()))
            self._count(state, f"LABEL {shown}")
            self._set(state, Instruction("LABEL", ()), shown,
                      labels={**(state.image.run.labels or {}), **labels})
        if state.image.id is None:
            self._store_step(state, state.ref, state.image)
            self._say(f" ---> {_short(str(state.image.id))}", out)
        return state.image

    def _base_image(self, base: str, stage: Stage) -> _Image:
        if base == "scratch":
            plat = host_platform()
            return _Image("", ImageConfig(architecture=plat.architecture, os=plat.os,
                                          variant=plat.variant, rootfs=RootFS(),
                                          config=ContainerConfig()), [], None)
        found = self._stage_named(base)
        if found is not None and found.index < stage.index:
            return self.results[found.index]
        try:
            return self._load_image(base, pull=self.options.pull)
        except DockyardError as e:
            raise DockerfileError(f"FROM {base}: {e}", filename=self.dockerfile.filename,
                                  line=stage.line) from None

    def _load_image(self, ref: str, *, pull: bool = False) -> _Image:
        """An image by reference or ID: pulled when asked (once a build) or missing."""
        image_id = self._pulled.get(ref)
        if image_id is None and not pull:
            with contextlib.suppress(NotFound):
                image_id = self.images.resolve(ref)
        if image_id is None:
            with self._pull_lock:  # once, whichever stage asks first
                image_id = self._pulled.get(ref)
                if image_id is None:
                    image_id = self._pulled[ref] = self.images.pull(
                        ref, platform=self.options.platform).id
        return self._image(image_id)

    def _image(self, image_id: str) -> _Image:
        row = self.images.db.query("SELECT manifest_digest, chain_id FROM images WHERE id = ?",
                                   (image_id,))[0]
        with self.images.content.open(image_id) as blob:
            config = load_config(blob.read())
        with self.images.content.open(row["manifest_digest"]) as blob:
            manifest = load_manifest(blob.read())
        return _Image(image_id, config, list(manifest.layers), row["chain_id"])

    # --- steps -------------------------------------------------------------------------

    def _count(self, state: _StageState, text: str) -> None:
        state.step += 1
        self._say(f"Step {state.step}/{self._steps} : {text}", state.out)

    def _error(self, instruction: Instruction | None, message: str) -> DockerfileError:
        return DockerfileError(message, filename=self.dockerfile.filename,
                               line=instruction.line if instruction else None)

    def _env(self, state: _StageState) -> dict[str, str]:
        """What variables expand to in the stage: its ARGs, overridden by its ENV."""
        env = dict(state.args)
        for entry in state.image.run.env or ():
            name, _, value = entry.partition("=")
            env[name] = value
        return env

    def _expand(self, word: str, env: Mapping[str, str], instruction: Instruction | None) -> str:
        from dockyard.build import shell

        try:
            return shell.expand_word(word, env, escape=self.escape)
        except DockerfileError:
            raise
        except DockyardError as e:
            raise self._error(instruction, str(e)) from None

    def _run_step(self, state: _StageState, instruction: Instruction, *,
                  counted: bool = True) -> None:
        text = _shown(instruction)
        with self._lock:
            if self._cancelled:
                raise _Cancelled("another stage failed")
        if counted:
            self._count(state, text)
        else:
            self._say(f"Trigger : {text}", state.out)
        handler = getattr(self, f"_do_{instruction.keyword.lower()}", None)
        if handler is None:
            raise self._error(instruction, f"unknown instruction: {instruction.keyword}")
        try:
            handler(state, instruction)
        except (DockerfileError, StepFailed, _Cancelled):
            raise
        except DockyardError as e:
            error = self._error(instruction, f"{instruction.keyword}: {e}")
            raise error from None
        if state.image.id:
            self._say(f" ---> {_short(state.image.id)}", state.out)

    # --- committing --------------------------------------------------------------------

    def _extend(self, parent: _Image, config: ContainerConfig, created_by: str,
                layer: Layer | None, *, author: str | None = None) -> _Image:
        """``parent`` with ``config``, one more history entry and, unless None, one more
        layer; not stored yet."""
        created = _now(self.options.source_date_epoch)
        diff_ids = list(parent.config.rootfs.diff_ids)
        layers = list(parent.layers)
        if layer is not None:
            diff_ids.append(layer.diff_id)
            layers.append(layer.descriptor)
        history = [*(parent.config.history or []),
                   History(created=created, created_by=created_by,
                           empty_layer=None if layer is not None else True)]
        image_config = msgspec.structs.replace(
            parent.config, created=created, config=config, rootfs=RootFS(diff_ids=diff_ids),
            history=history, author=author if author is not None else parent.config.author)
        return _Image(None, image_config, layers,
                      layer.chain_id if layer is not None else parent.chain)

    def _store_step(self, state: _StageState, key: str, image: _Image) -> None:
        """Make ``image`` the stage's, stored as an image (unless the cache has the one
        of ``key``) and remembered under ``key``."""
        cached = None if self.options.no_cache else self.cache.lookup(key)
        if cached is not None:
            image = self._image(cached)
        else:
            descriptor, config_digest = store_image(self.images.content, image.config,
                                                    image.layers)
            with self.images.content.open(descriptor.digest) as blob:
                manifest_data = blob.read()
            with self.images.content.open(config_digest) as blob:
                config_data = blob.read()
            self.images.add_image(manifest_data, config_data)
            image = _Image(str(config_digest), image.config, image.layers, image.chain)
            self.cache.store(key, str(config_digest), state.parent_id)
        state.image = image
        state.ref = key
        state.parent_id = str(image.id)

    def _cached(self, state: _StageState, key: str, created_by: str,
                config: ContainerConfig) -> bool:
        """Take a file step's result from the cache when it is there (and allowed): the
        image the same step made before, or the layer a ``--cache-from`` image has
        for it."""
        if self.options.no_cache:
            return False
        image_id = self.cache.lookup(key)
        if image_id is not None:
            state.image = self._image(image_id)
            state.ref = key
            state.parent_id = image_id
        else:
            found = self._cache_from(state.image, created_by)
            if found is None:
                return False
            self._store_step(state, key, self._extend(state.image, config, created_by,
                                                      found[0]))
        self._say(" ---> Using cache", state.out)
        return True

    def _cache_from(self, parent: _Image, created_by: str) -> tuple[Layer | None] | None:
        """The layer (None: an empty one) of the step ``created_by`` on ``parent`` in a
        ``--cache-from`` image: one whose history and layers start with ``parent``'s and
        go on with this step (Docker's classic rule)."""
        history = parent.config.history or []
        diff_ids = parent.config.rootfs.diff_ids
        for image in self._cache_images:
            theirs = image.config.history or []
            if (len(theirs) <= len(history) or theirs[len(history)].created_by != created_by
                    or [h.created_by for h in theirs[:len(history)]]
                    != [h.created_by for h in history]
                    or image.config.rootfs.diff_ids[:len(diff_ids)] != diff_ids):
                continue
            if theirs[len(history)].empty_layer:
                return (None,)
            position = len(diff_ids)
            diff_id = image.config.rootfs.diff_ids[position]
            return (Layer(image.layers[position], diff_id, chain_of(parent.chain, diff_id)),)
        return None

    def _cache_sources(self) -> list[_Image]:
        """The ``--cache-from`` images there are (a missing one is no error, as Docker)."""
        found = []
        for ref in self.options.cache_from:
            with contextlib.suppress(NotFound):
                found.append(self._image(self.images.resolve(ref)))
        return found

    def _file_step(self, state: _StageState, key: str, config: ContainerConfig,
                   created_by: str, layer: Layer | None) -> None:
        self._store_step(state, key, self._extend(state.image, config, created_by, layer))

    def _set(self, state: _StageState, instruction: Instruction, shown: str, *,
             author: str | None = None, **changes: Any) -> None:
        """A config step: the image's config changed, in memory."""
        config = replace_config(state.image.run, **changes)
        text = f"{instruction.keyword} {shown}"
        state.image = self._extend(state.image, config, f"/bin/sh -c #(nop)  {text}", None,
                                   author=author)
        state.ref = step_key(state.ref, "config", text, author)

    # --- config instructions -----------------------------------------------------------

    def _pairs(self, state: _StageState, instruction: Instruction) -> list[tuple[str, str]]:
        env = self._env(state)
        pairs = []
        for word in instruction.args:
            expanded = self._expand(word, env, instruction)
            key, eq, value = expanded.partition("=")
            if not eq or not key:
                raise self._error(instruction, f"{instruction.keyword} {word}: expected "
                                               "KEY=VALUE")
            pairs.append((key, value))
        return pairs

    def _do_env(self, state: _StageState, instruction: Instruction) -> None:
        env = list(state.image.run.env or [])
        pairs = self._pairs(state, instruction)
        for key, value in pairs:
            env = [e for e in env if e.partition("=")[0] != key] + [f"{key}={value}"]
        self._set(state, instruction, " ".join(f"{k}={v}" for k, v in pairs), env=env)

    def _do_label(self, state: _StageState, instruction: Instruction) -> None:
        pairs = self._pairs(state, instruction)
        labels = {**(state.image.run.labels or {}), **dict(pairs)}
        self._set(state, instruction, " ".join(f"{k}={v}" for k, v in pairs), labels=labels)

    def _do_maintainer(self, state: _StageState, instruction: Instruction) -> None:
        author = instruction.args[0] if instruction.args else ""
        self._set(state, instruction, author, author=author)

    def _command(self, state: _StageState, instruction: Instruction) -> list[str]:
        if instruction.json:
            return list(instruction.args)
        shell = state.image.run.shell or list(DEFAULT_SHELL)
        return [*shell, instruction.args[0] if instruction.args else ""]

    def _do_cmd(self, state: _StageState, instruction: Instruction) -> None:
        cmd = self._command(state, instruction)
        state.cmd_set = True
        self._set(state, instruction, _go_list(cmd), cmd=cmd)

    def _do_entrypoint(self, state: _StageState, instruction: Instruction) -> None:
        entrypoint = self._command(state, instruction)
        changes: dict[str, Any] = {"entrypoint": entrypoint}
        if not state.cmd_set:
            changes["cmd"] = None  # an inherited CMD does not go with a new ENTRYPOINT
        self._set(state, instruction, _go_list(entrypoint), **changes)

    def _do_shell(self, state: _StageState, instruction: Instruction) -> None:
        if not instruction.json or not instruction.args:
            raise self._error(instruction, 'SHELL requires the JSON form: SHELL ["sh", "-c"]')
        self._set(state, instruction, _go_list(instruction.args), shell=list(instruction.args))

    def _words(self, state: _StageState, instruction: Instruction) -> list[str]:
        env = self._env(state)
        return [w for w in (self._expand(w, env, instruction) for w in instruction.args) if w]

    def _do_expose(self, state: _StageState, instruction: Instruction) -> None:
        from dockyard.images.rootfs_tar import apply_changes

        words = self._words(state, instruction)
        if not words:
            raise self._error(instruction, "EXPOSE requires at least one argument")
        config = apply_changes(state.image.run, ["EXPOSE " + " ".join(words)])
        self._set(state, instruction, " ".join(words), exposed_ports=config.exposed_ports)

    def _do_volume(self, state: _StageState, instruction: Instruction) -> None:
        words = self._words(state, instruction)
        if not words:
            raise self._error(instruction, "VOLUME requires at least one argument")
        volumes = {**(state.image.run.volumes or {}), **{w: {} for w in words}}
        self._set(state, instruction, _go_list(words), volumes=volumes)

    def _one(self, state: _StageState, instruction: Instruction) -> str:
        value = self._expand(instruction.args[0] if instruction.args else "",
                             self._env(state), instruction).strip()
        if not value:
            raise self._error(instruction, f"{instruction.keyword} requires an argument")
        return value

    def _do_user(self, state: _StageState, instruction: Instruction) -> None:
        user = self._one(state, instruction)
        self._set(state, instruction, user, user=user)

    def _do_stopsignal(self, state: _StageState, instruction: Instruction) -> None:
        signal = self._one(state, instruction)
        if not re.fullmatch(r"(SIG)?[A-Z0-9+]+|\d+", signal):
            raise self._error(instruction, f"STOPSIGNAL {signal}: not a signal name or number")
        self._set(state, instruction, signal, stop_signal=signal)

    def _do_healthcheck(self, state: _StageState, instruction: Instruction) -> None:
        args = list(instruction.args)
        if not args or args[0].upper() == "NONE":
            health = HealthConfig(test=["NONE"])
        else:
            rest = args[1:]
            test = ["CMD", *rest] if instruction.json else ["CMD-SHELL", " ".join(rest)]
            health = HealthConfig(test=test)
            for name in ("interval", "timeout", "start-period", "start-interval"):
                value = instruction.flag(name)
                if value is not None:
                    setattr(health, name.replace("-", "_"), _duration(value, name))
            retries = instruction.flag("retries")
            if retries is not None:
                if not retries.isdigit():
                    raise self._error(instruction, f"HEALTHCHECK --retries={retries}: "
                                                   "expected a number")
                health.retries = int(retries)
        self._set(state, instruction, _go_list(health.test or []), healthcheck=health)

    def _do_onbuild(self, state: _StageState, instruction: Instruction) -> None:
        text = instruction.args[0] if instruction.args else ""
        trigger = parse_instruction(text, escape=self.escape,
                                    filename=self.dockerfile.filename, line=instruction.line)
        if trigger.keyword in ("ONBUILD", "FROM", "MAINTAINER"):
            raise self._error(instruction, f"{trigger.keyword} is not allowed as an ONBUILD "
                                           "trigger")
        on_build = [*(state.image.run.on_build or []), text]
        self._set(state, instruction, text, on_build=on_build)

    def _do_arg(self, state: _StageState, instruction: Instruction) -> None:
        env = self._env(state)
        for word in instruction.args:
            name, value = self._declare(word, env, instruction)
            if value is None and name in self.meta:
                value = self.meta[name]  # a global ARG declared again takes its value
            if value is not None:
                state.args[name] = value
                env[name] = value

    # --- file instructions -------------------------------------------------------------

    def _run_args(self, state: _StageState) -> list[str]:
        """The args in scope as RUN sees them (those ENV does not override)."""
        env_names = {e.partition("=")[0] for e in state.image.run.env or ()}
        return [f"{k}={v}" for k, v in sorted(state.args.items()) if k not in env_names]

    def _workdir_of(self, state: _StageState) -> str:
        return state.image.run.working_dir or "/"

    def _do_workdir(self, state: _StageState, instruction: Instruction) -> None:
        path = posixpath.normpath(posixpath.join(self._workdir_of(state),
                                                 self._one(state, instruction)))
        config = replace_config(state.image.run, working_dir=path)
        key = step_key(state.ref, "workdir", path)
        created_by = f"/bin/sh -c #(nop) WORKDIR {path}"
        if self._cached(state, key, created_by, config):
            return
        with self._workspace(state) as ws:
            owner = Ownership()
            if state.image.run.user:  # BuildKit makes them the USER's (uid, primary gid)
                owner = Ownership(*self.backend.resolve_user(ws.rootfs, state.image.run.user))
            os.close(make_dir(ws.root_fd, path, owner))
            layer = ws.commit(self.options.source_date_epoch)
        self._file_step(state, key, config, created_by, layer)

    def _workspace(self, state: _StageState) -> Workspace:
        return Workspace(self.images, self.work_dir, state.image.chain)

    def _do_run(self, state: _StageState, instruction: Instruction) -> None:
        args = self._run_command(state, instruction)
        network = (instruction.flag("network") or self.options.network or "default").lower()
        if network not in ("default", "none", "host"):
            raise self._error(instruction, f"--network={network}: use default, none or host")
        build_args = self._run_args(state)
        shown = " ".join(args) if not instruction.json else _go_list(args)
        created_by = (f"|{len(build_args)} {' '.join(build_args)} {shown}" if build_args
                      else shown)
        with contextlib.ExitStack() as stack:
            mounts, mount_keys = self._run_mounts(state, instruction, stack)
            if args[0].startswith(_SCRIPTS + "/"):
                script = stack.enter_context(_scratch_dir(self.work_dir)) + "/script"
                with open(script, "w") as f:
                    f.write(instruction.heredocs[0].content)
                os.chmod(script, 0o755)
                mounts.append(Mount(destination=args[0], type="bind", source=script,
                                    options=["rbind", "ro"]))
                mount_keys.append(["script", instruction.heredocs[0].content])
            key = step_key(state.ref, "run", created_by, network, mount_keys)
            if self._cached(state, key, created_by, state.image.run):
                return
            cid = os.urandom(32).hex()
            mounts += self._network_files(stack, network, cid[:12])
            ws = stack.enter_context(self._workspace(state))
            self._say(f" ---> Running in {cid[:12]}", state.out)
            workdir = self._workdir_of(state)
            os.close(make_dir(ws.root_fd, workdir, Ownership()))
            proxies = [f"{k}={v}" for k, v in sorted(self.options.build_args.items())
                       if k in PROXY_ARGS and v is not None]
            env = [*(state.image.run.env or []), *build_args, *proxies]
            netns = stack.enter_context(self.backend.network(
                network, os.path.join(self.work_dir, owned("netns") + cid)))
            request = ProcessRequest(args, env, state.image.run.user or "", workdir,
                                     ws.rootfs, cid, "host" if network == "host" else "none",
                                     netns, mounts)
            spec = self.backend.render(request)
            stubs = ws.stubs([m.destination for m in spec.mounts or ()]
                             + [p for m in mounts for p in _parents(m.destination)])
            status = self._run_container(spec, cid, state.out)
            stubs.remove()
            self._say(f"Removing intermediate container {cid[:12]}", state.out)
            if status != 0:
                raise StepFailed(f"The command '{shown}' returned a non-zero code: {status}")
            layer = ws.commit(self.options.source_date_epoch)
        self._file_step(state, key, state.image.run, created_by, layer)

    def _network_files(self, stack: contextlib.ExitStack, network: str,
                       hostname: str) -> list[Mount]:
        """A RUN's ``/etc/resolv.conf`` (the host's), ``/etc/hosts`` (on the host's
        network the host's; else localhost and the container's ``hostname``, as
        BuildKit's) and ``/etc/hostname``, as Docker gives every RUN: read-only copies,
        bound over the image's for the step only (they are not in its layer)."""
        scratch = stack.enter_context(_scratch_dir(self.work_dir))
        files: dict[str, str | None] = {"resolv.conf": None, "hosts": None}
        if network != "host":
            files["hosts"] = (f"127.0.0.1\tlocalhost {hostname}\n"
                              "::1\tlocalhost ip6-localhost ip6-loopback\n")
            files["hostname"] = hostname + "\n"
        mounts = []
        for name, text in files.items():
            copy = os.path.join(scratch, name)
            try:
                if text is None:
                    shutil.copyfile(os.path.join("/etc", name), copy)
                else:
                    with open(copy, "w") as f:
                        f.write(text)
            except FileNotFoundError:
                continue
            os.chmod(copy, 0o644)
            mounts.append(Mount(destination=f"/etc/{name}", type="bind", source=copy,
                                options=["rbind", "ro"]))
        return mounts

    def _run_command(self, state: _StageState, instruction: Instruction) -> list[str]:
        if instruction.json:
            if not instruction.args:
                raise self._error(instruction, "RUN [] has no command")
            return list(instruction.args)
        text = instruction.args[0] if instruction.args else ""
        shell = list(state.image.run.shell or DEFAULT_SHELL)
        if instruction.heredocs:
            only = text.strip()
            first = instruction.heredocs[0]
            if len(instruction.heredocs) == 1 and re.fullmatch(r"<<-?[\"']?\w+[\"']?", only):
                # The heredoc is the whole command: its body is the script, run by the
                # shell, or as a file of its own when it names its interpreter (#!).
                if first.content.startswith("#!"):
                    return [f"{_SCRIPTS}/{first.name}"]
                return [*shell, first.content]
            # The shell reads the heredocs itself, from the text after the command.
            text = text + "\n" + "".join(f"{h.content}{h.name}\n" for h in instruction.heredocs)
        return [*shell, text]

    def _run_container(self, spec: Spec, cid: str, out: TextIO) -> int:
        bundle = os.path.join(self.work_dir, owned("bundle") + cid)
        try:
            with contextlib.ExitStack() as stack:
                if self.options.quiet:
                    fd = stack.enter_context(open(os.devnull, "wb")).fileno()
                else:
                    out.flush()
                    fd = out.fileno()
                return run_process(spec, self.runtime_root, bundle, cid, fd,
                                   admit=self._admit)
        finally:
            with self._lock:
                self._running.discard(cid)

    def _admit(self, cid: str) -> None:
        """Let the created container ``cid`` start, unless the build is cancelled."""
        with self._lock:
            if self._cancelled:
                raise _Cancelled("another stage failed")
            self._running.add(cid)

    def _cancel(self) -> None:
        """Stop the stages still building: no step or container starts any more, and
        the running containers are killed (their steps then fail and unwind)."""
        with self._lock:
            self._cancelled = True
            for cid in self._running:
                kill(self.runtime_root, cid)

    def _run_mounts(self, state: _StageState, instruction: Instruction,
                    stack: contextlib.ExitStack) -> tuple[list[Mount], list[Any]]:
        """The mounts of ``RUN --mount=...``, and what of them goes in the cache key."""
        mounts: list[Mount] = []
        keys: list[Any] = []
        for text in instruction.flag_values("mount"):
            fields = _parse_mount(text)
            kind = fields.get("type", "bind")
            target = fields.get("target", "")
            if kind == "secret":
                target = target or f"/run/secrets/{fields.get('id') or ''}"
            if not target:
                raise self._error(instruction, f"--mount={text}: a target is required")
            target = posixpath.normpath(posixpath.join(self._workdir_of(state), target))
            read_only = ["ro"] if _truthy(fields.get("ro") or fields.get("readonly")) else []
            if kind == "cache":
                source = self._cache_dir(fields, target)
                mounts.append(Mount(destination=target, type="bind", source=source,
                                    options=["rbind", *read_only]))
                keys.append(["cache", target])  # its content is not the step's input
            elif kind == "tmpfs":
                size = fields.get("size")
                mounts.append(Mount(destination=target, type="tmpfs", source="tmpfs",
                                    options=["nosuid", "nodev", *([f"size={size}"]
                                                                  if size else [])]))
                keys.append(["tmpfs", target])
            elif kind == "secret":
                ident = fields.get("id") or posixpath.basename(target)
                path = self.options.secrets.get(ident)
                if path is None:
                    if _truthy(fields.get("required", "false")):
                        raise self._error(instruction, f"secret {ident} not found: give it "
                                                       f"with --secret id={ident},src=FILE")
                    continue
                mounts.append(Mount(destination=target, type="bind", source=path,
                                    options=["rbind", "ro"]))
                keys.append(["secret", ident, target])  # never its content
            elif kind == "bind":
                writable = _truthy(fields.get("rw") or fields.get("readwrite"))
                source, key = self._bind_source(state, instruction, fields, stack)
                if writable and not fields.get("from"):
                    # Writes must not reach the context: the RUN gets a copy of it.
                    copy = os.path.join(stack.enter_context(_scratch_dir(self.work_dir)),
                                        "source")
                    if os.path.isdir(source):
                        shutil.copytree(source, copy, symlinks=True)
                    else:
                        shutil.copy2(source, copy)
                    source = copy
                options = ["rbind", "rw" if writable else "ro"]
                mounts.append(Mount(destination=target, type="bind", source=source,
                                    options=options))
                keys.append(["bind", target, key, options])
            else:
                raise self._error(instruction, f"--mount type={kind} is not supported: use "
                                               "bind, cache, tmpfs or secret")
        return mounts, keys

    def _cache_dir(self, fields: dict[str, str], target: str) -> str:
        """The persistent directory of a cache mount: by its ``id`` (default: the target),
        under the root (``ROOT/build-mounts``), kept across builds."""
        ident = fields.get("id") or target
        path = os.path.join(self.images.root, "build-mounts",
                            step_key("", ident).removeprefix("sha256:")[:32])
        if not os.path.isdir(path):
            ids = [fields.get(name, "0") for name in ("uid", "gid")]
            if not all(i.isdigit() for i in ids):
                raise InvalidArgument(f"--mount type=cache: uid and gid are numbers, not "
                                      f"{'/'.join(ids)}")
            os.makedirs(path, mode=0o755, exist_ok=True)
            mode = fields.get("mode")
            if mode:
                os.chmod(path, _octal(mode))
            os.chown(path, int(ids[0]), int(ids[1]))
        return path

    def _bind_source(self, state: _StageState, instruction: Instruction,
                     fields: dict[str, str], stack: contextlib.ExitStack) -> tuple[str, Any]:
        """The host path of a bind mount's source and what identifies its content."""
        source = fields.get("source", "/")
        ref = fields.get("from")
        if ref:
            image = self._from_image(ref, instruction)
            ws = stack.enter_context(Workspace(self.images, self.work_dir, image.chain))
            return resolve_in_root(ws.rootfs, source), [image.id, source]
        sources = self.context.sources([source], allow_wildcards=False, instruction="RUN",
                                       line=instruction.line)
        if sources[0].kind == "symlink":
            # The link itself leaves the context: a mount would follow it there.
            raise self._error(instruction, f"--mount source={source} is a symlink that "
                                           "leaves the build context")
        return sources[0].host_path, self.context.checksum(sources)

    def _from_image(self, ref: str, instruction: Instruction) -> _Image:
        """What ``--from=`` names: an earlier stage, else an image."""
        stage = self._stage_named(ref)
        if stage is not None:
            return self.results[stage.index]
        try:
            return self._load_image(ref)
        except DockyardError as e:
            raise self._error(instruction, f"--from={ref}: no stage or image of that name "
                                           f"({e})") from None

    def _do_copy(self, state: _StageState, instruction: Instruction) -> None:
        self._copy(state, instruction, add=False)

    def _do_add(self, state: _StageState, instruction: Instruction) -> None:
        self._copy(state, instruction, add=True)

    def _copy(self, state: _StageState, instruction: Instruction, *, add: bool) -> None:
        env = self._env(state)
        words = []
        for word in instruction.args:
            doc = _heredoc_of(word, instruction.heredocs)
            words.append(word if doc is not None else self._expand(word, env, instruction))
        if len(words) < 2:
            raise self._error(instruction, f"{instruction.keyword} requires at least two "
                                           "arguments: a source and a destination")
        *patterns, dest_word = words
        dest = posixpath.join(self._workdir_of(state), dest_word)
        if dest_word.endswith("/") or dest_word in (".", "./"):
            dest = dest.rstrip("/") + "/"
        if len(patterns) > 1 and not dest.endswith("/"):
            raise self._error(instruction, f"When using {instruction.keyword} with more than "
                                           "one source file, the destination must be a "
                                           "directory and end with a /")
        # Expanded before the cache key is made: an ARG in them changes the step.
        chmod, chown, ref = (None if (v := instruction.flag(name)) is None
                             else self._expand(v, env, instruction)
                             for name in ("chmod", "chown", "from"))
        with contextlib.ExitStack() as stack:
            scratch = stack.enter_context(_scratch_dir(self.work_dir))
            plan = self._copy_plan(state, instruction, patterns, ref, add, env, scratch, stack)
            key = step_key(state.ref, "copy", instruction.keyword, dest, chmod, chown,
                           ref is not None, plan.checksum)
            created_by = (f"/bin/sh -c #(nop) {instruction.keyword} "
                          f"{plan.kind}:{plan.checksum.removeprefix('sha256:')} in {dest} ")
            if self._cached(state, key, created_by, state.image.run):
                return
            ws = stack.enter_context(self._workspace(state))
            owner = Ownership(mode=_octal(chmod) if chmod else None,
                              epoch=self.options.source_date_epoch)
            if chown:
                uid, gid = self.backend.resolve_user(ws.rootfs, chown)
                if ":" not in chown:
                    gid = uid  # --chown=USER: its uid as gid too, as Docker's
                owner = Ownership(uid, gid, owner.mode, owner.epoch)
            if plan.copies:
                copy_into(ws.root_fd, plan.copies, dest, owner, work_dir=scratch)
            for archive in plan.archives:
                extract_into(ws.root_fd, archive, dest if dest.endswith("/") else dest + "/",
                             owner, work_dir=scratch)
            layer = ws.commit(self.options.source_date_epoch)
        self._file_step(state, key, state.image.run, created_by, layer)

    def _copy_plan(self, state: _StageState, instruction: Instruction, patterns: list[str],
                   ref: str | None, add: bool, env: Mapping[str, str], scratch: str,
                   stack: contextlib.ExitStack) -> _CopyPlan:
        """Where each source is on the host (downloaded, written from a heredoc, in
        another image's rootfs or in the context), and a checksum of them all."""
        import hashlib

        digest = hashlib.sha256()
        copies: list[Source] = []
        archives: list[str] = []
        context_patterns: list[str] = []
        from_root = None
        if ref is not None:
            image = self._from_image(ref, instruction)
            from_root = stack.enter_context(Workspace(self.images, self.work_dir,
                                                      image.chain)).rootfs
            # What is copied counts, not the image's ID: a stage made again the same
            # way (other times in its history) keeps the steps after it cached.
            digest.update(b"from another image\n")
        for pattern in patterns:
            doc = _heredoc_of(pattern, instruction.heredocs)
            if doc is not None:
                body = self._expand_heredoc(doc, env, instruction)
                path = os.path.join(scratch, doc.name)
                with open(path, "w") as f:
                    f.write(body)
                os.chmod(path, 0o644)
                copies.append(Source(path, doc.name, pattern))
                digest.update(f"heredoc {doc.name}\n{body}\n".encode())
            elif add and re.match(r"https?://", pattern):
                path, name = download(pattern, scratch)
                named = os.path.join(scratch, name)
                os.rename(path, named)
                copies.append(Source(named, name, pattern))
                with open(named, "rb") as f:
                    content = "sha256:" + hashlib.sha256(f.read()).hexdigest()
                expected = instruction.flag("checksum")
                if expected is not None and expected != content:
                    raise self._error(instruction, f"ADD {pattern}: the content's digest is "
                                                   f"{content}, not {expected} (--checksum)")
                digest.update(f"url {pattern} {content}\n".encode())
            elif add and re.match(r"(git@|git://|[a-z]+://)", pattern):
                raise self._error(instruction, f"ADD {pattern}: only http and https URLs "
                                               "can be added")
            elif from_root is not None:
                found = glob_in_root(from_root, pattern)
                if not found:
                    raise self._error(instruction, f"{instruction.keyword} --from={ref}: "
                                                   f"{pattern}: not found")
                for path in found:
                    copies.append(Source(path, posixpath.basename(path), pattern))
                    digest.update(f"{pattern} {_tree_digest(path)}\n".encode())
            else:
                context_patterns.append(pattern)
        if context_patterns and instruction.flag("checksum") is not None:
            raise self._error(instruction, "ADD --checksum is for URL sources only")
        if context_patterns:
            sources = self.context.sources(context_patterns, instruction=instruction.keyword,
                                           line=instruction.line)
            digest.update(self.context.checksum(sources).encode())
            for source in sources:
                if add and source.kind == "file" and is_archive(source.host_path):
                    archives.append(source.host_path)
                else:
                    copies.append(Source(source.host_path, posixpath.basename(source.path),
                                         source.path, tuple(e.path for e in source.entries)
                                         if source.kind == "dir" else None))
        return _CopyPlan(copies, archives, "sha256:" + digest.hexdigest())

    def _expand_heredoc(self, doc: Heredoc, env: Mapping[str, str],
                        instruction: Instruction) -> str:
        if not doc.expand:
            return doc.content

        # Only variables are expanded in a heredoc body, not quotes (as a shell would).
        def one(match: re.Match[str]) -> str:
            return self._expand(match[0], env, instruction)

        return re.sub(r"\$(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)", one, doc.content)


@dataclass(frozen=True)
class _CopyPlan:
    copies: list[Source]
    archives: list[str]
    checksum: str

    @property
    def kind(self) -> str:
        """What Docker's history says was copied: ``file``, ``dir`` or ``multi``."""
        paths = [c.path for c in self.copies] + self.archives
        if len(paths) > 1:
            return "multi"
        return "dir" if os.path.isdir(paths[0]) and not os.path.islink(paths[0]) else "file"


def replace_config(config: ContainerConfig, **changes: Any) -> ContainerConfig:
    """A copy of ``config`` with ``changes``."""
    return msgspec.structs.replace(config, **changes)


def _familiar(tag: str) -> str:
    from dockyard.images import reference

    return reference.parse(tag).familiar()


def _parents(path: str) -> list[str]:
    """``/a/b/c`` -> ``/a``, ``/a/b``: the directories a mount target needs."""
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


def _shown(instruction: Instruction) -> str:
    """An instruction as the output's ``Step`` line shows it: as written."""
    text = instruction.original or f"{instruction.keyword} {' '.join(instruction.args)}"
    return text.strip()


def _heredoc_of(word: str, heredocs: Sequence[Heredoc]) -> Heredoc | None:
    match = re.fullmatch(r"<<-?([\"']?)(\w+)\1", word)
    if match is None:
        return None
    return next((h for h in heredocs if h.name == match[2]), None)


def _tree_digest(path: str) -> str:
    """A digest of a file or tree of another image (its names, modes, content)."""
    import hashlib

    digest = hashlib.sha256()
    entries: Iterator[tuple[str, str]] = iter([(path, "")])
    if os.path.isdir(path) and not os.path.islink(path):
        entries = ((os.path.join(d, n), os.path.relpath(os.path.join(d, n), path))
                   for d, dirs, files in os.walk(path) for n in sorted(dirs + files))
    for full, rel in entries:
        st = os.lstat(full)
        digest.update(f"{rel}\0{st.st_mode}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            digest.update(os.readlink(full).encode())
        elif stat.S_ISREG(st.st_mode):
            with open(full, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _scratch_dir(work_dir: str) -> Iterator[str]:
    """A temporary directory for a step's downloads, heredocs and tars, removed after."""
    os.makedirs(work_dir, exist_ok=True)
    path = tempfile.mkdtemp(prefix=owned("step"), dir=work_dir)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
