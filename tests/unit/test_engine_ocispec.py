"""The rendering of Config + HostConfig + image config into an OCI runtime spec."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Any

import pytest

from dockyard.engine.config import ContainerConfig, convert_host_config
from dockyard.engine.ocispec import (
    DEFAULT_SHM_SIZE,
    INIT_PATH,
    STOP_SIGNAL_ANNOTATION,
    command,
    held_capabilities,
    merge_image_config,
    render,
    resolve_user,
    volume_requests,
)
from dockyard.engine.options import RunFlags, to_config
from dockyard.errors import InvalidArgument
from dockyard.oci.image import ContainerConfig as ImageDefaults
from dockyard.oci.image import ImageConfig, RootFS
from dockyard.oci.runtime import Mount, Spec
from dockyard.runtime.spec import DEFAULT_CAPABILITIES, DEFAULT_MASKED_PATHS

CID = "0123456789abcdef" * 4
PASSWD = """root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
app:x:1000:1000::/home/app:/bin/sh
"""
GROUP = """root:x:0:
nogroup:x:65534:
app:x:1000:
wheel:x:10:app,root
audio:x:29:app
staff:x:50:
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


def image(**config: Any) -> ImageConfig:
    return ImageConfig(architecture="amd64", os="linux", rootfs=RootFS(),
                       config=ImageDefaults(**config))


def spec_of(rootfs: Path, img: ImageConfig | None = None, **flags: Any) -> Spec:
    flags.setdefault("command", ["true"])
    config, host = to_config(RunFlags(**flags))
    return render(config, host, img, rootfs=str(rootfs), container_id=CID)


def mount_at(spec: Spec, destination: str) -> Mount:
    found = [m for m in spec.mounts or () if m.destination == destination]
    assert len(found) == 1, f"{destination}: {found}"
    return found[0]


# --- Entrypoint and Cmd, as Docker merges them ------------------------------------------

IMAGE_EP = {"entrypoint": ["/entry", "-x"], "cmd": ["default"]}


@pytest.mark.parametrize(("img", "user", "argv"), [
    (IMAGE_EP, {}, ["/entry", "-x", "default"]),
    (IMAGE_EP, {"cmd": ["mine"]}, ["/entry", "-x", "mine"]),
    (IMAGE_EP, {"entrypoint": ["/other"]}, ["/other"]),  # --entrypoint drops the image's Cmd
    (IMAGE_EP, {"entrypoint": ["/other"], "cmd": ["a"]}, ["/other", "a"]),
    (IMAGE_EP, {"entrypoint": [""], "cmd": ["sh"]}, ["sh"]),  # --entrypoint "" resets
    (IMAGE_EP, {"entrypoint": [], "cmd": None}, ["default"]),  # [] keeps the image's Cmd
    ({"cmd": ["sh"]}, {}, ["sh"]),
    ({"cmd": ["sh"]}, {"cmd": ["ls", "-l"]}, ["ls", "-l"]),
    ({}, {"cmd": ["ls"]}, ["ls"]),
])
def test_entrypoint_and_cmd(img: dict[str, Any], user: dict[str, Any], argv: list[str]) -> None:
    assert command(merge_image_config(ContainerConfig(**user), image(**img))) == argv


@pytest.mark.parametrize(("img", "user"), [
    ({}, {}), ({"entrypoint": ["/e"]}, {"entrypoint": [""]}),
])
def test_no_command_is_refused(img: dict[str, Any], user: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument, match="no command specified"):
        command(merge_image_config(ContainerConfig(**user), image(**img)))


# --- environment, working directory, hostname -------------------------------------------


def test_environment_merge(rootfs: Path) -> None:
    img = image(env=["PATH=/img/bin", "A=image", "B=image", "GONE=x"])
    spec = spec_of(rootfs, img, env=["A=user", "C=3", "GONE"], tty=True)
    assert spec.process is not None
    assert spec.process.env == [
        "PATH=/img/bin", f"HOSTNAME={CID[:12]}", "TERM=xterm", "A=user", "C=3", "B=image",
        "HOME=/root",
    ]


def test_defaults(rootfs: Path) -> None:
    spec = spec_of(rootfs)
    assert spec.process is not None and spec.linux is not None
    assert spec.process.env == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        f"HOSTNAME={CID[:12]}", "HOME=/root",
    ]
    assert spec.process.cwd == "/"
    assert spec.process.terminal is False
    assert spec.process.no_new_privileges is None
    assert spec.hostname == CID[:12]
    assert spec.root is not None and spec.root.path == str(rootfs) and not spec.root.readonly
    assert [n.type for n in spec.linux.namespaces or ()] == [
        "mount", "pid", "ipc", "uts", "cgroup", "network"]
    assert spec.linux.masked_paths == list(DEFAULT_MASKED_PATHS)
    assert spec.linux.seccomp is not None
    assert f"size={DEFAULT_SHM_SIZE}" in (mount_at(spec, "/dev/shm").options or ())
    nofile = min(1 << 20, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    assert [(r.type, r.soft, r.hard) for r in spec.process.rlimits or ()] == [
        ("RLIMIT_NOFILE", nofile, nofile)]
    assert spec.annotations == {STOP_SIGNAL_ANNOTATION: "SIGTERM"}


def test_workdir_hostname_and_annotations(rootfs: Path) -> None:
    img = image(working_dir="/srv", stop_signal="SIGQUIT", labels={"a": "img", "b": "img"})
    spec = spec_of(rootfs, img, hostname="web", domainname="example.org",
                   label=["b=user"], stop_timeout=30)
    assert spec.process is not None and spec.process.cwd == "/srv"
    assert (spec.hostname, spec.domainname) == ("web", "example.org")
    assert spec.annotations == {"a": "img", "b": "user", STOP_SIGNAL_ANNOTATION: "SIGQUIT",
                                "io.dockyard.stopTimeout": "30"}
    assert spec_of(rootfs, img, workdir="/w").process.cwd == "/w"  # type: ignore[union-attr]


# --- user resolution --------------------------------------------------------------------


@pytest.mark.parametrize(("user", "uid", "gid", "groups", "home"), [
    ("", 0, 0, [10], "/root"),
    ("app", 1000, 1000, [10, 29], "/home/app"),
    ("1000", 1000, 1000, [10, 29], "/home/app"),
    ("app:staff", 1000, 50, [], "/home/app"),
    ("app:50", 1000, 50, [], "/home/app"),
    ("4242", 4242, 0, [], "/"),  # not in passwd: used as is
    ("4242:4343", 4242, 4343, [], "/"),
    ("nobody", 65534, 65534, [], "/nonexistent"),
])
def test_resolve_user(rootfs: Path, user: str, uid: int, gid: int, groups: list[int],
                      home: str) -> None:
    resolved = resolve_user(str(rootfs), user)
    assert (resolved.uid, resolved.gid, resolved.additional_gids, resolved.home) == (
        uid, gid, groups, home)


def test_group_add_and_errors(rootfs: Path) -> None:
    assert resolve_user(str(rootfs), "app", ["staff", "777"]).additional_gids == [10, 29, 50, 777]
    with pytest.raises(InvalidArgument, match="unable to find user ghost: no matching entries"):
        resolve_user(str(rootfs), "ghost")
    with pytest.raises(InvalidArgument, match="unable to find group ghosts: no matching"):
        resolve_user(str(rootfs), "app:ghosts")
    with pytest.raises(InvalidArgument, match="unable to find group ghosts"):
        resolve_user(str(rootfs), "app", ["ghosts"])


def test_user_files_are_read_inside_the_rootfs(rootfs: Path, tmp_path: Path) -> None:
    # An image's /etc/passwd pointing at the host's must read the rootfs's own file.
    outside = tmp_path / "host-passwd"
    outside.write_text("evil:x:0:0::/:/bin/sh\n")
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").symlink_to(f"../../{outside.name}")
    with pytest.raises(InvalidArgument, match="unable to find user evil"):
        resolve_user(str(rootfs), "evil")
    (rootfs / "etc" / "passwd").unlink()
    os.mkfifo(rootfs / "etc" / "passwd")
    with pytest.raises(InvalidArgument, match="not a regular file"):
        resolve_user(str(rootfs), "app")


def test_spec_carries_the_user(rootfs: Path) -> None:
    spec = spec_of(rootfs, image(user="app"), group_add=["staff"])
    assert spec.process is not None
    assert (spec.process.user.uid, spec.process.user.gid) == (1000, 1000)
    assert spec.process.user.additional_gids == [10, 29, 50]
    assert "HOME=/home/app" in (spec.process.env or ())


# --- capabilities, privileged, security options -----------------------------------------


@pytest.mark.parametrize(("flags", "expected"), [
    ({}, list(DEFAULT_CAPABILITIES)),
    ({"cap_drop": ["ALL"]}, []),
    ({"cap_drop": ["ALL"], "cap_add": ["NET_BIND_SERVICE"]}, ["CAP_NET_BIND_SERVICE"]),
    ({"cap_drop": ["chown", "kill"]},
     [c for c in DEFAULT_CAPABILITIES if c not in ("CAP_CHOWN", "CAP_KILL")]),
    ({"cap_add": ["sys_admin"]}, [*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"]),
    # "All" is what the bounding set holds (this host's root lacks CAP_SYS_RESOURCE).
    ({"cap_add": ["ALL"], "cap_drop": ["SYS_ADMIN"]},
     [c for c in held_capabilities() if c != "CAP_SYS_ADMIN"]),
    ({"privileged": True, "cap_drop": ["ALL"]}, held_capabilities()),
])
def test_capabilities(rootfs: Path, flags: dict[str, Any], expected: list[str]) -> None:
    caps = spec_of(rootfs, **flags).process.capabilities  # type: ignore[union-attr]
    assert caps is not None
    assert caps.bounding == caps.effective == caps.permitted == expected
    assert caps.inheritable is None and caps.ambient is None


def test_privileged(rootfs: Path) -> None:
    spec = spec_of(rootfs, privileged=True)
    assert spec.linux is not None and spec.linux.resources is not None
    assert spec.linux.seccomp is None
    assert spec.linux.masked_paths is None and spec.linux.readonly_paths is None
    assert "ro" not in (mount_at(spec, "/sys").options or ())
    assert "ro" not in (mount_at(spec, "/sys/fs/cgroup").options or ())
    assert [(d.allow, d.access) for d in spec.linux.resources.devices or ()] == [(True, "rwm")]
    paths = {device.path for device in spec.linux.devices or ()}
    assert "/dev/null" in paths and "/dev/console" not in paths
    assert not any(p.startswith(("/dev/pts/", "/dev/shm/")) for p in paths)


def test_security_opts(rootfs: Path, tmp_path: Path) -> None:
    spec = spec_of(rootfs, security_opt=["no-new-privileges", "seccomp=unconfined"])
    assert spec.process is not None and spec.process.no_new_privileges is True
    assert spec.linux is not None and spec.linux.seccomp is None
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mount"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["reboot"], "action": "SCMP_ACT_ERRNO"}]}))
    spec = spec_of(rootfs, security_opt=[f"seccomp={profile}", "label=disable"])
    assert spec.linux is not None and spec.linux.seccomp is not None
    assert spec.linux.seccomp.default_action == "SCMP_ACT_ALLOW"
    # The rule that needs CAP_SYS_ADMIN is left out: the container does not hold it.
    assert [s.names for s in spec.linux.seccomp.syscalls or ()] == [["reboot"]]
    spec = spec_of(rootfs, security_opt=["systempaths=unconfined"])
    assert spec.linux is not None and spec.linux.masked_paths is None


# --- resources and limits ---------------------------------------------------------------


def test_resources(rootfs: Path) -> None:
    spec = spec_of(rootfs, memory="64m", memory_reservation="32m", cpus="0.5", cpu_shares=512,
                   cpuset_cpus="0", cpuset_mems="0", pids_limit=100, blkio_weight=300,
                   ulimit=["nofile=1024:2048", "nproc=-1"])
    assert spec.linux is not None and spec.linux.resources is not None
    res = spec.linux.resources
    assert res.memory is not None and res.cpu is not None and res.pids is not None
    assert (res.memory.limit, res.memory.swap, res.memory.reservation) == (
        64 << 20, 128 << 20, 32 << 20)
    assert (res.cpu.quota, res.cpu.period, res.cpu.shares) == (50_000, 100_000, 512)
    assert (res.cpu.cpus, res.cpu.mems) == ("0", "0")
    assert res.pids.limit == 100
    assert res.block_io is not None and res.block_io.weight == 300
    assert spec.process is not None
    assert [(r.type, r.soft, r.hard) for r in spec.process.rlimits or ()] == [
        ("RLIMIT_NOFILE", 1024, 2048), ("RLIMIT_NPROC", 2**64 - 1, 2**64 - 1)]


@pytest.mark.parametrize(("flags", "swap"), [
    ({"memory": "64m", "memory_swap": "-1"}, -1),
    ({"memory": "64m", "memory_swap": "100m"}, 100 << 20),
])
def test_memory_swap(rootfs: Path, flags: dict[str, Any], swap: int) -> None:
    spec = spec_of(rootfs, **flags)
    assert spec.linux.resources.memory.swap == swap  # type: ignore[union-attr]


# HostConfig as the API sends it -> the one line that refuses it
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"Memory": 1 << 20}, "Minimum memory limit allowed is 6MB"),
    ({"MemorySwap": 1 << 30}, "You should always set the Memory limit"),
    ({"Memory": 64 << 20, "MemorySwap": 32 << 20}, "Minimum memoryswap limit"),
    ({"Memory": 64 << 20, "MemoryReservation": 128 << 20}, "memory reservation"),
    ({"NanoCpus": 10**9, "CpuPeriod": 1000}, "Nano CPUs and CPU Period"),
    ({"NanoCpus": 10**15}, "Range of CPUs is from 0.01"),
    ({"BlkioWeight": 5}, "Range of blkio weight is from 10 to 1000"),
    ({"Init": True}, "--init needs an init binary"),
    ({"UsernsMode": "private"}, "userns mode 'private' is not supported yet"),
    ({"PidMode": "container:x"}, "pid mode 'container:x' is not supported yet"),
    ({"NetworkMode": "host", "Sysctls": {"net.ipv4.ip_forward": "1"}},
     "not allowed in host network namespace"),
    ({"Tmpfs": {"/x": ""}, "Mounts": [{"Type": "tmpfs", "Target": "/x"}]},
     "Duplicate mount point: /x"),
    ({"Mounts": [{"Type": "bind", "Source": "/nonexistent", "Target": "/x"}]},
     'bind source path does not exist: /nonexistent'),
    ({"Devices": [{"PathOnHost": "/nonexistent"}]},
     'error gathering device information while adding custom device "/nonexistent"'),
    ({"CapAdd": ["CAP_FLY"]}, 'unknown capability: "CAP_FLY"'),
    ({"SecurityOpt": ["apparmor=docker-default"]}, "apparmor profile 'docker-default' is not"),
]


@pytest.mark.parametrize(("host", "message"), REFUSED)
def test_refused(rootfs: Path, host: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        render(ContainerConfig(cmd=["true"]), convert_host_config(host), None,
               rootfs=str(rootfs), container_id=CID)
    assert message in str(info.value)


# --- mounts and devices -----------------------------------------------------------------


def test_mounts(rootfs: Path, tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    source = tmp_path / "src"
    source.mkdir()
    config, host = to_config(RunFlags(
        command=["true"], read_only=True, shm_size="128m",
        volume=[f"{host_dir}:/data/sub:ro,rslave", f"{host_dir}:/data", "named:/named"],
        mount=[f"type=bind,source={source},target=/src,readonly",
               "type=tmpfs,target=/scratch,tmpfs-size=1m,tmpfs-mode=700"],
        tmpfs=["/run:exec,size=64m"],
    ))
    spec = render(config, host, None, rootfs=str(rootfs), container_id=CID,
                  volumes=[("/var/lib/volumes/named", "/named", ["ro"])],
                  hosts_file="/h/hosts", resolv_conf="/h/resolv.conf", hostname_file="/h/name")
    assert host_dir.is_dir()  # -v makes a missing host directory, as Docker does
    assert spec.root is not None and spec.root.readonly is True
    destinations = [m.destination for m in spec.mounts or ()]
    assert destinations.index("/data") < destinations.index("/data/sub")
    assert mount_at(spec, "/data/sub").options == ["rbind", "rslave", "ro"]
    assert mount_at(spec, "/data").options == ["rbind", "rprivate"]
    assert mount_at(spec, "/src").options == ["rbind", "rprivate", "ro"]
    assert mount_at(spec, "/scratch").options == [
        "noexec", "nosuid", "nodev", "rprivate", "size=1048576", "mode=700"]
    assert mount_at(spec, "/run").options == ["nosuid", "nodev", "rprivate", "exec", "size=64m"]
    named = mount_at(spec, "/named")
    assert (named.source, named.options) == ("/var/lib/volumes/named", ["rbind", "rprivate", "ro"])
    assert "size=134217728" in (mount_at(spec, "/dev/shm").options or ())
    hosts = mount_at(spec, "/etc/hosts")
    assert (hosts.source, hosts.options) == ("/h/hosts", ["rbind", "rprivate", "ro"])
    assert mount_at(spec, "/etc/resolv.conf").source == "/h/resolv.conf"
    assert mount_at(spec, "/etc/hostname").source == "/h/name"
    assert spec.linux is not None and spec.linux.rootfs_propagation == "rslave"


def test_user_mount_replaces_a_default_one(rootfs: Path) -> None:
    spec = spec_of(rootfs, tmpfs=["/dev/shm:size=1m"])
    assert mount_at(spec, "/dev/shm").source == "tmpfs"
    spec = spec_of(rootfs, ipc="none")
    assert not any(m.destination == "/dev/shm" for m in spec.mounts or ())


def test_volume_requests(rootfs: Path) -> None:
    img = image(volumes={"/var/lib/db": {}, "/cache": {}})
    config, host = to_config(RunFlags(volume=["named:/named:ro", "/anon", "/h:/cache"],
                                      mount=["type=volume,source=v2,target=/v2,volume-nocopy"]))
    assert [tuple(r) for r in volume_requests(config, host, img)] == [
        ("named", "/named", True, False), ("v2", "/v2", False, True),
        ("", "/var/lib/db", False, False), ("", "/anon", False, False)]


def test_devices(rootfs: Path) -> None:
    spec = spec_of(rootfs, device=["/dev/null:/dev/mynull:r"],
                   device_cgroup_rule=["c 42:* rm"])
    assert spec.linux is not None and spec.linux.resources is not None
    [device] = spec.linux.devices or []
    assert (device.path, device.type, device.major, device.minor) == ("/dev/mynull", "c", 1, 3)
    rules = [(r.allow, r.type, r.major, r.minor, r.access)
             for r in spec.linux.resources.devices or ()]
    assert rules == [(False, None, None, None, "rwm"), (True, "c", 1, 3, "r"),
                     (True, "c", 42, None, "rm")]


def test_namespaces(rootfs: Path) -> None:
    spec = spec_of(rootfs, network="host", ipc="host", uts="host", pid="host", cgroupns="host")
    assert spec.linux is not None
    assert [n.type for n in spec.linux.namespaces or ()] == ["mount"]
    assert spec.hostname is None
    spec = spec_of(rootfs, network="bridge")
    config, host = to_config(RunFlags(command=["true"]))
    spec = render(config, host, None, rootfs=str(rootfs), container_id=CID,
                  netns_path="/run/netns/x", cgroups_path="/dockyard/x")
    assert spec.linux is not None and spec.linux.cgroups_path == "/dockyard/x"
    assert [n.path for n in spec.linux.namespaces or () if n.type == "network"] == [
        "/run/netns/x"]


def test_init_and_sysctls(rootfs: Path) -> None:
    config, host = to_config(RunFlags(command=["app"], init=True, sysctl=["net.core.somaxconn=1"]))
    spec = render(config, host, None, rootfs=str(rootfs), container_id=CID,
                  init_path="/usr/bin/tini")
    assert spec.process is not None and spec.process.args == [INIT_PATH, "--", "app"]
    assert mount_at(spec, INIT_PATH).source == "/usr/bin/tini"
    assert spec.linux is not None and spec.linux.sysctl == {"net.core.somaxconn": "1"}
