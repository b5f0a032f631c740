"""``dockyard build`` as a user runs it: the Dockerfiles of ``tests/data/build`` built,
then run with ``dockyard run`` to check what each image does; the cache rules; the
options; bad input (clear errors naming the line, no half-made image, nothing left).

Each test copies the corpus directory it needs into its own temporary directory and
uses the roots, the busybox image and the leftovers check of ``test_cli_containers``
(its ``user`` fixture); ``_nothing_left`` also checks the builder's own traces.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from interop.registry_fixtures import run_registry
from interop.test_cli_containers import User, user

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root"),
]

__all__ = ["user"]  # the fixture, imported for the tests below

DATA = Path(__file__).resolve().parent.parent / "data" / "build"


def _context(user: User, name: str) -> Path:
    """A copy of the corpus directory ``name``, for this test to change."""
    target = user.home / "contexts" / name
    shutil.copytree(DATA / name, target, symlinks=True)
    return target


def _build(user: User, context: Path, *args: str, ok: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*user.base, "build", *args, str(context)], capture_output=True,
                            text=True, timeout=120, check=False,
                            env={**os.environ, **(env or {})})
    if ok:
        assert result.returncode == 0, f"build {args}:\n{result.stdout}\n{result.stderr}"
    return result


def _config(user: User, image: str) -> dict[str, object]:
    config: dict[str, object] = json.loads(user("image", "inspect", image).stdout)[0]["Config"]
    return config


def _sh(user: User, image: str, script: str) -> str:
    return user("run", "--rm", "--entrypoint", "sh", "-u", "0", image, "-c", script).stdout


def _cached_steps(output: str) -> list[str]:
    """The steps of a build's output that came from the cache."""
    steps, current = [], ""
    for line in output.splitlines():
        if line.startswith("Step "):
            current = line.split(" : ", 1)[1]
        elif line == " ---> Using cache":
            steps.append(current)
    return steps


def _nothing_left(user: User) -> None:
    """No rootfs, bundle or scratch directory of a step, no container of the runtime,
    no active snapshot: what a build leaves when it ends, well or not."""
    build_dir = user.home / "run" / "build"
    assert not build_dir.exists() or sorted(p.name for p in build_dir.iterdir()) == []
    runtime = user.home / "run" / "runtime"
    assert not runtime.exists() or [p.name for p in runtime.iterdir()
                                    if not p.name.startswith(".")] == []
    for meta in (user.home / "root" / "snapshots").glob("*/metadata.json"):
        snapshots = json.loads(meta.read_text())["snapshots"]
        assert [k for k, v in snapshots.items() if v["kind"] != "committed"] == []


def test_basic_corpus_every_config_instruction(user: User) -> None:
    context = _context(user, "basic")
    packed = context / "packed"
    (packed / "dir").mkdir(parents=True)
    (packed / "dir" / "inside.txt").write_text("packed\n")
    with tarfile.open(context / "archive.tar.gz", "w:gz") as tf:
        tf.add(packed / "dir", "dir")
    shutil.rmtree(packed)
    result = _build(user, context, "-t", "corpus/basic:1")
    assert "Step 1/23 : FROM busybox" in result.stdout
    assert result.stdout.rstrip().endswith("Successfully tagged corpus/basic:1")
    assert user("run", "--rm", "corpus/basic:1").stdout == \
        "hello world from 1000:1000 with default-arg\n"
    config = _config(user, "corpus/basic:1")
    assert "MESSAGE=hello world" in config["Env"] and "APP_HOME=/srv/app" in config["Env"]
    assert config["WorkingDir"] == "/srv/app" and config["User"] == "1000:1000"
    assert config["ExposedPorts"] == {"8080/tcp": {}, "9090/udp": {}}
    assert config["Volumes"] == {"/var/lib/app": {}}
    assert config["Labels"] == {"org.example.title": "corpus basic", "version": "1"}
    assert config["StopSignal"] == "SIGQUIT"
    assert config["Healthcheck"] == {"Test": ["CMD-SHELL", "test -f /srv/app/message.txt"],
                                     "Interval": 30_000_000_000, "Timeout": 5_000_000_000,
                                     "Retries": 2}
    assert config["Entrypoint"] == ["/srv/app/bin/script.sh"]
    assert config["Cmd"] == ["default-arg"] and config["Shell"] == ["/bin/sh", "-e", "-c"]
    inspect = json.loads(user("image", "inspect", "corpus/basic:1").stdout)[0]
    assert inspect["Author"] == "corpus@example.com"
    files = _sh(user, "corpus/basic:1",
                "stat -c '%n %a %u:%g' bin/script.sh data/file data/sub/deep; "
                "cat notes/one.txt notes/two.txt single-file unpacked/dir/inside.txt "
                "config.ini message.txt exec.txt shell.txt; test -d /var/lib/app")
    assert files == ("bin/script.sh 755 0:0\ndata/file 644 1000:1000\n"
                     "data/sub/deep 644 1000:1000\nfirst note\nsecond note\nfirst note\n"
                     "packed\n[app]\nmessage=hello world\nhello world\nexec-form\n"
                     "shell=/bin/sh\n")
    history = user("history", "--no-trunc", "corpus/basic:1").stdout.splitlines()
    assert '/bin/sh -c #(nop)  CMD ["default-arg"]' in history[1]
    entries = [line for line in history if line.startswith(("<missing>", "sha256:"))]
    assert len(entries) == 21 + 3  # the steps but FROM and ARG, and busybox's 3
    _nothing_left(user)


def test_multistage_builds_only_the_stages_needed(user: User) -> None:
    context = _context(user, "multistage")
    result = _build(user, context, "-t", "multi")
    assert "must not be built" not in result.stdout
    assert user("run", "--rm", "multi").stdout == "built by builder\n"
    assert _sh(user, "multi", "cat /app/tested.txt /app/all/artifact.txt /app/via-mount.txt; "
               "test -x /app/from-an-image && test ! -e /mnt/tester && echo ok") == \
        "built by builder\nbuilt by builder\nbuilt by builder\nok\n"
    failed = _build(user, context, "--target", "unused", ok=False)
    assert failed.returncode == 1
    assert "returned a non-zero code: 1" in failed.stderr
    _build(user, context, "--target", "builder", "-t", "multi:builder")
    assert _sh(user, "multi:builder", "cat /build/artifact.txt") == "built by builder\n"
    missing = _build(user, context, "--target", "nosuch", ok=False)
    assert missing.returncode == 1 and "nosuch" in missing.stderr
    _nothing_left(user)


def test_independent_stages_build_at_once_output_kept_together(user: User) -> None:
    context = _context(user, "parallel")
    result = _build(user, context, "-t", "parallel")
    assert user("run", "--rm", "parallel").stdout == "left met right\nright met left\n"
    # Numbered in file order; each stage's lines together, whichever ran first.
    numbers = [line.split()[1] for line in result.stdout.splitlines()
               if line.startswith("Step ")]
    assert numbers[:4] in (["1/8", "2/8", "3/8", "4/8"], ["3/8", "4/8", "1/8", "2/8"])
    assert numbers[4:] == ["5/8", "6/8", "7/8", "8/8"]
    again = _build(user, context, "-t", "parallel")
    assert len(_cached_steps(again.stdout)) == 4
    _nothing_left(user)


def test_a_failing_stage_stops_the_others(user: User) -> None:
    context = user.home / "failing"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox AS slow\nRUN echo slow started; sleep 4343\n"
        "FROM busybox AS failing\nRUN sleep 1; echo failing; exit 3\n"
        "FROM busybox\nCOPY --from=slow /etc/hostname /a\n"
        "COPY --from=failing /etc/hostname /b\n")
    started = time.monotonic()
    result = _build(user, context, ok=False)
    assert time.monotonic() - started < 30  # the slow RUN was killed, not waited for
    assert result.returncode == 1
    assert result.stderr.strip().endswith("returned a non-zero code: 3")
    assert "slow started" in result.stdout and "failing" in result.stdout
    assert [p for p in Path("/proc").iterdir() if p.name.isdigit()
            and _cmdline(p) == b"sleep\x004343\x00"] == []
    _nothing_left(user)


def test_what_a_docker_user_relies_on(user: User) -> None:
    result = _build(user, _context(user, "compat"), "-t", "compat", "--build-arg",
                    "TAG=latest")
    assert "Step 1/20 : ARG TAG=latest\nStep 2/20 : FROM busybox:latest AS stage0" in \
        result.stdout
    assert user("run", "--rm", "compat").stdout == "a=1 b= c=1 d=b-is-empty\n"
    config = _config(user, "compat")
    assert config["Cmd"] == ["/bin/sh", "-c", 'echo "a=$a b=$b c=$c d=$d"']
    assert config["ExposedPorts"] == {"80/udp": {}, "443/tcp": {}}
    assert config["Labels"] == {"with spaces": "a b", "other": "x y z"}
    assert config["User"] == "root"
    assert _sh(user, "compat", "cat /from-index /tmp/id; ls /made; stat -c '%n %u:%g' "
               "/tmp/owned /home/app/written-by-user /dst /dst/made /dst/made/sub; "
               "find /dst ! -path '/dst/made*' | sort") == (
        "/w/rel/dir\nuid=1234 gid=4321\nmade-a.txt\nmade-b.txt\n/tmp/owned 1234:4321\n"
        "/home/app/written-by-user 1234:4321\n"
        "/dst 0:0\n/dst/made 1234:4321\n/dst/made/sub 1234:4321\n"
        "/dst\n/dst/a.txt\n/dst/b.txt\n/dst/sub\n/dst/sub/d.txt\n/dst/sub/e.txt\n")
    history = user("history", "--no-trunc", "--format", "{{.CreatedBy}}", "compat").stdout
    copies = [line.split()[4].split(":")[0] for line in history.splitlines()
              if "#(nop) COPY" in line]
    assert copies == ["dir", "dir", "dir", "multi", "file"]  # newest first, as Docker's
    _nothing_left(user)


def test_onbuild_triggers_run_in_the_child_build(user: User) -> None:
    _build(user, _context(user, "onbuild") / "parent", "-t", "onbuild-parent")
    assert _config(user, "onbuild-parent")["OnBuild"] == [
        "COPY hello.txt /from-child/", 'RUN echo "trigger ran" > /from-child/trigger.txt']
    result = _build(user, user.home / "contexts" / "onbuild" / "child", "-t", "child")
    assert "Executing 2 build triggers" in result.stdout
    assert user("run", "--rm", "child").stdout == "hello from the child context\ntrigger ran\n"
    assert not _config(user, "child").get("OnBuild")


def test_heredocs(user: User) -> None:
    _build(user, _context(user, "heredocs"), "-t", "heredocs")
    assert user("run", "--rm", "heredocs").stdout == (
        "script run by sh: world\nshebang: /dev/pipes/EOF\nfirst world\n"
        "second, tab stripped\nnot expanded: $WHO\nexpanded: world\n")


def test_arg_scoping_and_unconsumed_build_args(user: User) -> None:
    context = _context(user, "args")
    result = _build(user, context, "-t", "args", "--build-arg", "LOCAL=given",
                    "--build-arg", "http_proxy=http://proxy.invalid:3128",
                    "--build-arg", "NOPE=1")
    assert "[Warning] One or more build-args [NOPE] were not consumed" in result.stdout
    assert user("run", "--rm", "args").stdout == (
        "before=unset\nafter=1.0 local=given proxy=http://proxy.invalid:3128\n"
        "env-wins=from-env\n")
    history = user("history", "--no-trunc", "args").stdout
    assert "proxy.invalid" not in history  # proxy args stay out of the image
    overridden = _build(user, context, "-t", "args2", "--build-arg", "VERSION=2.0")
    assert "after=2.0 local=local-default" in user("run", "--rm", "args2").stdout
    assert "not consumed" not in overridden.stdout


def test_dockerignore_with_exceptions(user: User) -> None:
    context = _context(user, "ignore")
    _build(user, context, "-t", "ignored")
    found = sorted(user("run", "--rm", "ignored").stdout.split())
    assert found == ["/ctx", "/ctx/.dockerignore", "/ctx/a.txt", "/ctx/keep.log", "/ctx/src",
                     "/ctx/src/main.c"]
    _build(user, context, "-t", "other", "-f", str(context / "other.Dockerfile"))
    found = sorted(user("run", "--rm", "other").stdout.split())
    assert found == ["/ctx", "/ctx/debug.log", "/ctx/keep.log", "/ctx/secret", "/ctx/secret/key",
                     "/ctx/src", "/ctx/src/main.c", "/ctx/src/tmp", "/ctx/src/tmp/x"]


def test_run_mounts_cache_reused_secret_never_stored(user: User) -> None:
    context = _context(user, "mounts")
    secret = user.home / "token"
    secret.write_text("s3cret")
    for count in (1, 2):
        _build(user, context, "--no-cache", "-t", "mounts", "--secret",
               f"id=token,src={secret}")
        assert _sh(user, "mounts", "cat /count.txt") == f"run {count}\n"
    assert _sh(user, "mounts", "cat /secret-size /copied-input.txt; for p in /run /cache /ctx "
               "/scratch /mnt; do test -e $p && echo $p left; done; true") == \
        "6\nbound from the context\n"
    user("save", "-o", str(user.home / "mounts.tar"), "mounts")
    with tarfile.open(user.home / "mounts.tar") as archive:
        for member in archive:  # every layer, config and manifest
            blob = archive.extractfile(member) if member.isfile() else None
            if blob is not None:
                data = blob.read()
                assert b"s3cret" not in (gzip.decompress(data) if data[:2] == b"\x1f\x8b"
                                         else data), member.name
    assert (context / "input.txt").read_text() == "bound from the context\n"  # rw: a copy
    # The last RUN changed nothing: no layer; the one before it, only its file.
    assert _top_layer(user, "mounts") == ["copied-input.txt"]
    missing = _build(user, context, "--no-cache", ok=False)
    assert missing.returncode == 1 and "returned a non-zero code" in missing.stderr
    _nothing_left(user)


def test_cache_rebuilds_only_from_what_changed(user: User) -> None:
    context = _context(user, "app")
    first = _build(user, context, "-t", "app")
    assert _cached_steps(first.stdout) == []
    image = user("image", "inspect", "--format", "{{.Id}}", "app").stdout
    again = _build(user, context, "-t", "app")
    assert len(_cached_steps(again.stdout)) == 7  # every file step
    assert user("image", "inspect", "--format", "{{.Id}}", "app").stdout == image
    os.utime(context / "config.txt", (1, 1))  # a new mtime alone changes nothing
    assert len(_cached_steps(_build(user, context).stdout)) == 7
    (context / "main.sh").write_text("#!/bin/sh\necho changed\n")
    changed = _cached_steps(_build(user, context, "-t", "app").stdout)
    assert changed == ["WORKDIR /src", "COPY config.txt .", "RUN wc -c config.txt > size.txt",
                       'RUN echo "mode=$MODE" > mode.txt']
    assert user("run", "--rm", "app").stdout == "changed\n"
    debug = _cached_steps(_build(user, context, "--build-arg", "MODE=debug").stdout)
    assert debug == ["WORKDIR /src", "COPY config.txt .", "RUN wc -c config.txt > size.txt"]
    assert len(_cached_steps(_build(user, context, "--no-cache").stdout)) == 0


def test_source_date_epoch_gives_the_same_digest(user: User) -> None:
    context = _context(user, "app")
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    _build(user, context, "--iidfile", str(user.home / "first"), env=env)
    for path in context.iterdir():
        os.utime(path)  # the same content, touched later
    _build(user, context, "--no-cache", "--iidfile", str(user.home / "second"), env=env)
    first = (user.home / "first").read_text()
    assert first.startswith("sha256:") and first == (user.home / "second").read_text()
    created = json.loads(user("image", "inspect", first).stdout)[0]["Created"]
    assert created == "2023-11-14T22:13:20Z"


def test_options_quiet_label_stdin(user: User) -> None:
    context = _context(user, "app")
    quiet = _build(user, context, "-q", "--label", "team=build", "--label", "price=$5 \"net\"",
                   "-t", "a:1", "-t", "a:2")
    assert quiet.stdout.startswith("sha256:") and len(quiet.stdout.split()) == 1
    assert _config(user, "a:2")["Labels"] == {"team": "build", "price": '$5 "net"'}
    dockerfile = "FROM busybox\nCOPY config.txt /\nCMD [\"cat\", \"/config.txt\"]\n"
    piped = subprocess.run([*user.base, "build", "-t", "piped", "-f", "-", str(context)],
                           input=dockerfile, capture_output=True, text=True, check=False)
    assert piped.returncode == 0, piped.stderr
    assert user("run", "--rm", "piped").stdout == "setting=1\n"
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tf:
        tf.add(context, ".")
    streamed = subprocess.run([*user.base, "build", "-t", "streamed", "-"],
                              input=archive.getvalue(), capture_output=True, check=False)
    assert streamed.returncode == 0, streamed.stderr
    assert user("run", "--rm", "streamed").stdout == "mode=release\n10 config.txt\n"
    # A Dockerfile alone on stdin; its ENTRYPOINT drops busybox's CMD ["sh"].
    alone = subprocess.run([*user.base, "build", "-t", "alone", "-"],
                           input=b'FROM busybox\nRUN echo made > /made\n'
                                 b'ENTRYPOINT ["cat", "/made"]\n',
                           capture_output=True, check=False)
    assert alone.returncode == 0, alone.stderr
    assert user("run", "--rm", "alone").stdout == "made\n"
    assert _config(user, "alone")["Cmd"] is None
    platform = _build(user, context, "--platform", "linux/s390x", ok=False)
    assert platform.returncode == 1 and "only this host's platform" in platform.stderr


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A small HTTP server on 127.0.0.1 serving a directory: (its URL, the directory)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_add_url_is_downloaded_not_extracted(user: User, http_files: tuple[str, Path]) -> None:
    url, served = http_files
    with tarfile.open(served / "bundle.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("inside.txt")
        tf.addfile(info, io.BytesIO(b""))
    context = user.home / "url"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM busybox\nADD {url}/bundle.tar.gz /dl/\n"
                                        f"ADD {url}/bundle.tar.gz /named.tgz\n")
    _build(user, context, "-t", "url")
    assert _sh(user, "url", "stat -c '%n %a' /dl/bundle.tar.gz /named.tgz; ls /dl") == \
        "/dl/bundle.tar.gz 600\n/named.tgz 600\nbundle.tar.gz\n"
    digest = hashlib.sha256((served / "bundle.tar.gz").read_bytes()).hexdigest()
    (context / "Dockerfile").write_text(
        f"FROM busybox\nADD --checksum=sha256:{digest} {url}/bundle.tar.gz /checked\n")
    _build(user, context)
    (context / "Dockerfile").write_text(
        f"FROM busybox\nADD --checksum=sha256:{'0' * 64} {url}/bundle.tar.gz /checked\n")
    wrong = _build(user, context, ok=False)
    assert wrong.returncode == 1 and "(--checksum)" in wrong.stderr
    (context / "Dockerfile").write_text(f"FROM busybox\nADD {url}/missing /x\n")
    missing = _build(user, context, ok=False)
    assert missing.returncode == 1 and "Dockerfile:2" in missing.stderr and "404" in missing.stderr
    _nothing_left(user)


def test_run_network_none_by_default_host_when_asked(user: User) -> None:
    context = user.home / "net"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nRUN ls /sys/class/net > /nets; "
                                        "cat /etc/resolv.conf > /resolv 2>&1; true\n")
    _build(user, context, "-t", "net-none")
    assert _sh(user, "net-none", "cat /nets") == "lo\n"
    _build(user, context, "-t", "net-host", "--network", "host")
    host = _sh(user, "net-host", "cat /nets").split()
    assert "lo" in host and len(host) > 1  # the host's interfaces (others come and go)
    # The host's resolver, read-only for the RUN and not left in the image.
    assert _sh(user, "net-host", "cat /resolv") == Path("/etc/resolv.conf").read_text()
    assert _top_layer(user, "net-host") == ["nets", "resolv"]


def test_run_reaches_its_own_loopback(user: User) -> None:
    context = user.home / "loopback"
    context.mkdir()
    serve = ("echo served > /index.html && httpd -p 127.0.0.1:8080 -h / && "
             "wget -q -O /got-{0} http://{1}:8080/ && cat /sys/class/net/lo/flags > /lo-{0}")
    (context / "Dockerfile").write_text(
        f"FROM busybox\nRUN {serve.format('default', 'localhost')}\n"
        f"RUN --network=none {serve.format('none', '127.0.0.1')} && "
        "grep -q \"^127.0.0.1.*localhost $(hostname)\" /etc/hosts && cat /etc/hostname > /hn\n")
    result = _build(user, context, "-t", "loopback")
    # lo is up (IFF_UP | IFF_LOOPBACK) on both, as on Docker's bridge and none networks;
    # /etc/hosts names localhost and the step's container.
    assert _sh(user, "loopback", "cat /got-default /got-none /lo-default /lo-none") == \
        "served\nserved\n0x9\n0x9\n"
    hostname = _sh(user, "loopback", "cat /hn").strip()
    assert f" ---> Running in {hostname}" in result.stdout
    # The step's own files, not the /etc ones it had.
    assert _top_layer(user, "loopback") == ["got-none", "hn", "index.html", "lo-none"]
    _nothing_left(user)


def _top_layer(user: User, image: str) -> list[str]:
    """The names in the image's last layer, from ``dockyard save``."""
    archive = user.home / f"{image}.tar"
    user("save", "-o", str(archive), image)
    with tarfile.open(archive) as saved:
        manifest = json.load(saved.extractfile("manifest.json"))  # type: ignore[arg-type]
        layer = saved.extractfile(manifest[0]["Layers"][-1])
        assert layer is not None
        with tarfile.open(fileobj=io.BytesIO(layer.read())) as tar:
            return sorted(tar.getnames())


def test_pull_takes_the_registry_image_not_the_local_one(user: User, tmp_path: Path) -> None:
    with run_registry(tmp_path / "registry") as registry:
        remote = f"{registry.host}/tools/base:1"
        newer = user.home / "newer"
        newer.mkdir()
        (newer / "Dockerfile").write_text("FROM busybox\nRUN echo newer > /version\n")
        _build(user, newer, "-t", remote)
        user("push", "-q", remote)
        user("tag", "busybox", remote)  # the local tag is the older image again
        context = user.home / "pulling"
        context.mkdir()
        (context / "Dockerfile").write_text(
            f"FROM {remote}\nRUN cat /version 2>/dev/null || echo older > /version\n")
        _build(user, context, "-t", "local")
        assert user("run", "--rm", "local", "cat", "/version").stdout == "older\n"
        _build(user, context, "-t", "pulled", "--pull")
        assert user("run", "--rm", "pulled", "cat", "/version").stdout == "newer\n"


def _bad(user: User, dockerfile: str, *files: str,
         keep: bool = False) -> subprocess.CompletedProcess[str]:
    """A build of ``dockerfile`` in the context ``bad`` (made anew unless ``keep``) with
    ``files``, which must fail with one line and make no image."""
    context = user.home / "bad"
    if not keep:
        shutil.rmtree(context, ignore_errors=True)
    context.mkdir(exist_ok=True)
    for name in files:
        (context / name).write_text(name)
    (context / "Dockerfile").write_text(dockerfile)
    result = _build(user, context, "-t", "bad", ok=False)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
    assert user("image", "inspect", "bad", ok=False).returncode == 1
    return result


def test_bad_input_gives_one_line_naming_the_line(user: User) -> None:
    assert "Dockerfile:2: unknown instruction: FOOBAR" in _bad(
        user, "FROM busybox\nFOOBAR x\n").stderr
    assert "Dockerfile:2" in _bad(user, "FROM busybox\nRUN <<EOF\necho never ends\n").stderr
    missing_stage = _bad(user, "FROM busybox\nCOPY --from=nosuch /x /x\n").stderr
    assert "Dockerfile:2" in missing_stage and "nosuch" in missing_stage
    outside = _bad(user, "FROM busybox\nCOPY ../x /x\n").stderr
    assert "Dockerfile:2" in outside and "outside the build context" in outside
    mount = _bad(user, "FROM busybox\nRUN --mount=type=bind,source=../x,target=/x true\n")
    assert "Dockerfile:2" in mount.stderr and "outside the build context" in mount.stderr
    flag = _bad(user, "FROM busybox\nCOPY --chmod=999 Dockerfile /x\n").stderr
    assert "Dockerfile:2" in flag and "--chmod=999" in flag
    unknown_flag = _bad(user, "FROM busybox\nCOPY --nope Dockerfile /x\n").stderr
    assert "Dockerfile:2: unknown flag: nope" in unknown_flag
    several = _bad(user, "FROM busybox\nCOPY a b /dest\n", "a", "b").stderr
    assert "must be a directory and end with a /" in several
    _nothing_left(user)


def test_failing_run_shows_the_code_and_leaves_nothing(user: User) -> None:
    result = _bad(user, "FROM busybox\nRUN echo partial > /partial\nRUN exit 3\n")
    assert "Step 3/3 : RUN exit 3" in result.stdout
    assert "The command '/bin/sh -c exit 3' returned a non-zero code: 3" in result.stderr
    _nothing_left(user)


def test_a_build_killed_in_a_run_is_swept_by_the_next(user: User) -> None:
    context = user.home / "killed"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nRUN sleep 4242\n")
    killed = subprocess.Popen([*user.base, "build", str(context)], stdout=subprocess.DEVNULL)
    build_dir = user.home / "run" / "build"
    deadline = time.monotonic() + 30
    while not (build_dir.exists() and any(p.name.startswith("bundle-")
                                          for p in build_dir.iterdir())):
        assert time.monotonic() < deadline and killed.poll() is None
        time.sleep(0.05)
    time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    (context / "Dockerfile").write_text("FROM busybox\nRUN true\n")
    _build(user, context)
    _nothing_left(user)
    sleepers = [p for p in Path("/proc").iterdir() if p.name.isdigit()
                and _cmdline(p) == b"sleep\x004242\x00"]
    assert sleepers == []


def _cmdline(proc: Path) -> bytes:
    try:
        return proc.joinpath("cmdline").read_bytes()
    except OSError:
        return b""


def test_context_symlink_to_etc_is_copied_as_a_link(user: User) -> None:
    context = user.home / "links"
    context.mkdir()
    (context / "etc").symlink_to("/etc")
    (context / "Dockerfile").write_text("FROM busybox\nCOPY etc /copied-link\n")
    _build(user, context, "-t", "links")
    assert _sh(user, "links", "readlink /copied-link") == "/etc\n"
    escaped = _bad(user, "FROM busybox\nCOPY etc/passwd /stolen\n").stderr
    assert "Dockerfile:2" in escaped
    (user.home / "bad" / "etc").symlink_to("/etc")
    bound = _bad(user, "FROM busybox\nRUN --mount=type=bind,source=etc,target=/mnt true\n",
                 keep=True).stderr
    assert "Dockerfile:2" in bound and "leaves the build context" in bound
    assert os.path.exists("/etc/os-release")  # what a mount following the link would show
    (context / "Dockerfile").write_text(
        "FROM busybox AS evil\nRUN ln -s /etc /evil\n"
        "FROM busybox\nRUN --mount=type=bind,from=evil,source=/evil,target=/mnt "
        "ls /mnt > /seen\n")
    _build(user, context, "-t", "inside")
    seen = _sh(user, "inside", "cat /seen").split()
    assert "passwd" in seen and "os-release" not in seen  # the stage's /etc, not the host's
    _nothing_left(user)


def test_cache_from_an_image_loaded_elsewhere(user: User, tmp_path: Path) -> None:
    context = _context(user, "app")
    _build(user, context, "-t", "app:cached")
    _build(user, context, "-t", "app:build", "--target", "build")  # the first stage's
    archive = user.home / "app.tar"
    user("save", "-o", str(archive), "app:cached", "app:build")
    other = User(tmp_path / "other")
    try:
        other("image", "bootstrap", "busybox")
        other("load", "-i", str(archive))
        result = _build(other, context, "--cache-from", "app:cached", "--cache-from",
                        "app:build", "-t", "app:again")
        assert len(_cached_steps(result.stdout)) == 7
        assert other("run", "--rm", "app:again").stdout == "mode=release\n10 config.txt\n"
    finally:
        assert other.leftovers() == []
