"""Docker's Config / HostConfig models and the parsing of ``docker run`` flag values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dockyard.engine.config import (
    BindSpec,
    ContainerConfig,
    DeviceMapping,
    HealthConfig,
    HostConfig,
    Mount,
    RestartPolicy,
    TmpfsOptions,
    Ulimit,
    load_container_config,
    load_host_config,
    normalize_capability,
    parse_bind,
)
from dockyard.engine.options import RunFlags, parse_duration, parse_env_file, to_config
from dockyard.errors import InvalidArgument


def test_models_use_dockers_json_names() -> None:
    host = HostConfig(uts_mode="host", container_id_file="/x", nano_cpus=1, readonly_rootfs=True,
                      restart_policy=RestartPolicy(name="always", maximum_retry_count=0))
    encoded = json.loads(msgspec.json.encode(host))
    assert encoded == {"UTSMode": "host", "ContainerIDFile": "/x", "NanoCpus": 1,
                       "ReadonlyRootfs": True,
                       "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}}
    assert load_host_config(msgspec.json.encode(host)) == host
    config = load_container_config(b'{"Cmd": ["sh"], "WorkingDir": "/w", "Tty": null,'
                                   b' "Healthcheck": {"Test": ["NONE"]}}')
    assert config.cmd == ["sh"] and config.working_dir == "/w" and config.tty is None
    assert config.healthcheck is not None and config.healthcheck.test == ["NONE"]


def test_decoding_errors_are_one_line() -> None:
    with pytest.raises(InvalidArgument, match=r"^invalid host config: Expected .* at \$.Memory$"):
        load_host_config(b'{"Memory": "64m"}')
    with pytest.raises(InvalidArgument, match=r"at \$\.Mounts\[0\]\.ReadOnly"):
        load_host_config(b'{"Mounts": [{"ReadOnly": "yes"}]}')
    with pytest.raises(InvalidArgument, match="container config"):
        load_container_config(b'{"Cmd": "sh"')


@pytest.mark.parametrize(("raw", "expected"), [
    ("/h:/c", BindSpec("bind", "/h", "/c", False, None, False, "")),
    ("/h:/c:ro,rshared", BindSpec("bind", "/h", "/c", True, "rshared", False, "ro,rshared")),
    ("name:/data", BindSpec("volume", "name", "/data", False, None, False, "")),
    ("name:/data:nocopy", BindSpec("volume", "name", "/data", False, None, True, "nocopy")),
    ("/data", BindSpec("volume", "", "/data", False, None, False, "")),
])
def test_parse_bind(raw: str, expected: BindSpec) -> None:
    assert parse_bind(raw) == expected


@pytest.mark.parametrize(("raw", "message"), [
    ("/c:ro", "invalid volume specification: '/c:ro'"),
    ("a:b:c:d", "invalid volume specification: 'a:b:c:d'"),
    ("/h:/c:ro,rw", "invalid mode: ro,rw"),
    ("/h:/c:bogus", "invalid mode: bogus"),
    ("/h:rel", "invalid mount config for type \"bind\": invalid mount path: 'rel' mount path "
               "must be absolute"),
    ("/h:/", "invalid specification: destination can't be '/'"),
    ("vol:/d:shared", 'invalid mount config for type "volume": field BindOptions must not'),
])
def test_parse_bind_errors(raw: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_bind(raw)
    assert str(info.value).startswith(message)


def test_normalize_capability() -> None:
    assert normalize_capability("net_admin") == "CAP_NET_ADMIN"
    assert normalize_capability("CAP_CHOWN") == "CAP_CHOWN"
    assert normalize_capability("all") == "ALL"
    with pytest.raises(InvalidArgument, match='unknown capability: "CAP_FLY"'):
        normalize_capability("fly")


# flags -> (attribute of Config or HostConfig, expected value)
FLAG_TABLE: list[tuple[dict[str, Any], str, Any]] = [
    ({"memory": "64m"}, "host.memory", 64 << 20),
    ({"memory": "1g"}, "host.memory", 1 << 30),
    ({"memory": "1.5GB"}, "host.memory", 3 << 29),
    ({"memory": "100"}, "host.memory", 100),
    ({"memory_swap": "-1"}, "host.memory_swap", -1),
    ({"shm_size": "128m"}, "host.shm_size", 128 << 20),
    ({"cpus": "0.5"}, "host.nano_cpus", 500_000_000),
    ({"cpus": "2"}, "host.nano_cpus", 2_000_000_000),
    ({"ulimit": ["nofile=1024:2048"]}, "host.ulimits",
     [Ulimit(name="nofile", soft=1024, hard=2048)]),
    ({"ulimit": ["nproc=10", "nproc=20"]}, "host.ulimits",
     [Ulimit(name="nproc", soft=20, hard=20)]),
    ({"restart": "on-failure:3"}, "host.restart_policy",
     RestartPolicy(name="on-failure", maximum_retry_count=3)),
    ({"restart": "unless-stopped"}, "host.restart_policy", RestartPolicy(name="unless-stopped")),
    ({"volume": ["/h:/c:ro,rshared", "name:/data", "/anon"]}, "host.binds",
     ["/h:/c:ro,rshared", "name:/data"]),
    ({"volume": ["/anon"]}, "config.volumes", {"/anon": {}}),
    ({"mount": ["type=bind,source=/s,target=/t,readonly"]}, "host.mounts",
     [Mount(type="bind", source="/s", target="/t", read_only=True)]),
    ({"mount": ["type=bind,src=/s,dst=/t,bind-propagation=rslave"]}, "host.mounts[0].bind_options"
     ".propagation", "rslave"),
    ({"mount": ["type=tmpfs,target=/t,tmpfs-size=64m,tmpfs-mode=1770"]}, "host.mounts[0]"
     ".tmpfs_options", TmpfsOptions(size_bytes=64 << 20, mode=0o1770)),
    ({"mount": ["target=/data"]}, "host.mounts", [Mount(type="volume", target="/data")]),
    ({"tmpfs": ["/run:rw,size=64m", "/tmp"]}, "host.tmpfs", {"/run": "rw,size=64m", "/tmp": ""}),
    ({"device": ["/dev/fuse:/dev/fuse:rwm"]}, "host.devices",
     [DeviceMapping(path_on_host="/dev/fuse", path_in_container="/dev/fuse",
                    cgroup_permissions="rwm")]),
    ({"device": ["/dev/sda:r"]}, "host.devices",
     [DeviceMapping(path_on_host="/dev/sda", path_in_container="/dev/sda",
                    cgroup_permissions="r")]),
    ({"device": ["/dev/sda:/dev/xvda"]}, "host.devices[0].path_in_container", "/dev/xvda"),
    ({"security_opt": ["no-new-privileges", "seccomp=unconfined", "label=disable"]},
     "host.security_opt", ["no-new-privileges", "seccomp=unconfined", "label=disable"]),
    ({"cap_add": ["net_admin", "ALL"], "cap_drop": ["chown"]}, "host.cap_add",
     ["CAP_NET_ADMIN", "ALL"]),
    ({"cap_drop": ["all"]}, "host.cap_drop", ["ALL"]),
    ({"add_host": ["db:10.0.0.2", "gw=host-gateway", "v6=::1"]}, "host.extra_hosts",
     ["db:10.0.0.2", "gw:host-gateway", "v6:::1"]),
    ({"sysctl": ["net.ipv4.ip_forward=1"]}, "host.sysctls", {"net.ipv4.ip_forward": "1"}),
    ({"env": ["A=1", "B="]}, "config.env", ["A=1", "B="]),
    ({"entrypoint": ""}, "config.entrypoint", [""]),
    ({"health_cmd": "true", "health_interval": "1m30s", "health_retries": 3},
     "config.healthcheck",
     HealthConfig(test=["CMD-SHELL", "true"], interval=90_000_000_000, retries=3)),
    ({"no_healthcheck": True}, "config.healthcheck.test", ["NONE"]),
    ({"read_only": True, "privileged": True}, "host.readonly_rootfs", True),
    ({"expose": ["80", "53/udp"]}, "config.exposed_ports", {"80/tcp": {}, "53/udp": {}}),
]


def _get(config: ContainerConfig, host: HostConfig, path: str) -> Any:
    """``host.mounts[0].bind_options`` and the like, read from the two models."""
    root, _, rest = path.partition(".")
    value: Any = config if root == "config" else host
    for part in rest.split("."):
        name, _, index = part.partition("[")
        value = getattr(value, name)
        if index:
            value = value[int(index.rstrip("]"))]
    return value


@pytest.mark.parametrize(("flags", "path", "expected"), FLAG_TABLE)
def test_flags_to_config(flags: dict[str, Any], path: str, expected: Any) -> None:
    config, host = to_config(RunFlags(**flags))
    assert _get(config, host, path) == expected


# flags -> Docker's error message
ERROR_TABLE: list[tuple[dict[str, Any], str]] = [
    ({"memory": "64x"}, """invalid argument "64x" for "-m, --memory" flag: invalid size: '64x'"""),
    ({"memory_swap": "lots"},
     """invalid argument "lots" for "--memory-swap" flag: invalid size: 'lots'"""),
    ({"shm_size": "-1"}, """invalid argument "-1" for "--shm-size" flag: invalid size: '-1'"""),
    ({"cpus": "abc"},
     """invalid argument "abc" for "--cpus" flag: failed to parse abc as a rational number"""),
    ({"cpus": "0.0000000001"},
     """invalid argument "0.0000000001" for "--cpus" flag: value is too precise"""),
    ({"ulimit": ["nofile"]},
     """invalid argument "nofile" for "--ulimit" flag: invalid ulimit argument: nofile"""),
    ({"ulimit": ["bogus=1"]},
     """invalid argument "bogus=1" for "--ulimit" flag: invalid ulimit type: bogus"""),
    ({"ulimit": ["nofile=2048:1024"]},
     """invalid argument "nofile=2048:1024" for "--ulimit" flag: ulimit soft limit must be """
     """less than or equal to hard limit: 2048 > 1024"""),
    ({"ulimit": ["nofile=1:2:3"]}, """invalid argument "nofile=1:2:3" for "--ulimit" flag: """
     """too many limit value arguments - 1:2:3, can only have up to two, `soft[:hard]`"""),
    ({"restart": "on-failure:x"},
     "invalid restart policy format: maximum retry count must be an integer"),
    ({"restart": ":3"}, "invalid restart policy format: no policy provided before colon"),
    ({"restart": "sometimes"}, "invalid restart policy: unknown policy 'sometimes'; use one of "
     "'no', 'always', 'on-failure', or 'unless-stopped'"),
    ({"restart": "always:3"},
     "invalid restart policy: maximum retry count can only be used with 'on-failure'"),
    ({"restart": "always", "rm": True}, "Conflicting options: --restart and --rm"),
    ({"volume": ["/c:ro"]}, "invalid volume specification: '/c:ro'"),
    ({"mount": ["type=bind,source=/s"]},
     """invalid argument "type=bind,source=/s" for "--mount" flag: target is required"""),
    ({"mount": ["type=bind,target=/t,readonly=maybe"]}, """invalid argument """
     """"type=bind,target=/t,readonly=maybe" for "--mount" flag: invalid value for readonly: """
     """maybe"""),
    ({"mount": ["type=volume,target=/t,tmpfs-size=1m"]}, """invalid argument """
     """"type=volume,target=/t,tmpfs-size=1m" for "--mount" flag: cannot mix 'tmpfs-*' """
     """options with mount type 'volume'"""),
    ({"mount": ["type=bind,target=/t,colour=red"]}, """invalid argument """
     """"type=bind,target=/t,colour=red" for "--mount" flag: unexpected key 'colour' in """
     """'colour=red'"""),
    ({"mount": ["type=bind,target=/t"]}, """invalid argument "type=bind,target=/t" for """
     """"--mount" flag: invalid mount config for type "bind": field Source must not be empty"""),
    ({"device": ["/dev/sda:/dev/xvda:rwx"]},
     """invalid argument "/dev/sda:/dev/xvda:rwx" for "--device" flag: bad mode specified: rwx"""),
    ({"device": ["/dev/sda:xvda"]},
     """invalid argument "/dev/sda:xvda" for "--device" flag: xvda is not an absolute path"""),
    ({"security_opt": ["seccomp"]}, 'Invalid --security-opt: "seccomp"'),
    ({"security_opt": ["seccomp=/nonexistent.json"]},
     "opening seccomp profile (/nonexistent.json) failed: No such file or directory"),
    ({"security_opt": ["colour=red"]}, 'invalid --security-opt 2: "colour=red"'),
    ({"cap_add": ["fly"]}, 'unknown capability: "CAP_FLY"'),
    ({"add_host": ["db"]}, """invalid argument "db" for "--add-host" flag: bad format for """
     """add-host: "db\""""),
    ({"add_host": ["db:300.1.1.1"]}, """invalid argument "db:300.1.1.1" for "--add-host" flag: """
     """invalid IP address in add-host: "300.1.1.1\""""),
    ({"sysctl": ["kernel.panic=1"]},
     """invalid argument "kernel.panic=1" for "--sysctl" flag: sysctl 'kernel.panic=1' is not """
     """allowed"""),
    ({"tmpfs": ["run"]}, "invalid mount config for type \"tmpfs\": invalid mount path: 'run' "
     "mount path must be absolute"),
    ({"workdir": "tmp"},
     "the working directory 'tmp' is invalid, it needs to be an absolute path"),
    ({"health_interval": "soon"},
     """invalid argument "soon" for "--health-interval" flag: time: invalid duration "soon\""""),
    ({"health_timeout": "-1s"}, "--health-timeout cannot be negative"),
    ({"no_healthcheck": True, "health_cmd": "true"},
     "--no-healthcheck conflicts with --health-* options"),
    ({"env_file": ["/nonexistent/env"]}, "open /nonexistent/env: no such file or directory"),
]


@pytest.mark.parametrize(("flags", "message"), ERROR_TABLE)
def test_flag_errors(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        to_config(RunFlags(**flags))
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_seccomp_profile_file_is_sent_inline(tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text('{\n  "defaultAction": "SCMP_ACT_ALLOW"\n}\n')
    _, host = to_config(RunFlags(security_opt=[f"seccomp={profile}"]))
    assert host.security_opt == ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}']


def test_env_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_HOST", "h")
    monkeypatch.delenv("NOT_SET", raising=False)
    env_file = tmp_path / "env"
    env_file.write_text("\ufeff# comment\n\nA=1\n  B=two words\nFROM_HOST\nNOT_SET\nC=\n")
    assert parse_env_file(str(env_file)) == ["A=1", "B=two words", "FROM_HOST=h", "C="]
    config, _ = to_config(RunFlags(env_file=[str(env_file)], env=["A=2", "FROM_HOST", "NOT_SET"]))
    assert config.env == ["A=1", "B=two words", "FROM_HOST=h", "C=", "A=2", "FROM_HOST=h",
                          "NOT_SET"]
    env_file.write_text("BAD NAME=1\n")
    with pytest.raises(InvalidArgument, match="variable 'BAD NAME' contains whitespaces"):
        parse_env_file(str(env_file))


@pytest.mark.parametrize(("text", "nanoseconds"), [
    ("0", 0), ("30s", 30 * 10**9), ("1m30s", 90 * 10**9), ("500ms", 5 * 10**8),
    ("1.5h", 5400 * 10**9),
])
def test_parse_duration(text: str, nanoseconds: int) -> None:
    assert parse_duration(text) == nanoseconds
