"""The OCI runtime-spec models: round trips, JSON key names, decode and semantic errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dockyard.errors import InvalidArgument
from dockyard.oci.runtime import (
    LinuxNamespace,
    Spec,
    dump,
    load_features,
    load_spec,
    load_state,
    validate_spec,
)

needs_runc = pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")

# Every member whose JSON key does not come back from snake_case, plus the rest of the
# spec's corners (ints beyond 32 bits, -1, maps of structs, a keyword as a key).
FULL_CONFIG = {
    "ociVersion": "1.2.0",
    "process": {
        "terminal": False,
        "consoleSize": {"height": 24, "width": 80},
        "user": {"uid": 1000, "gid": 1000, "umask": 18, "additionalGids": [5, 100]},
        "args": ["/bin/sh", "-c", "true"],
        "env": ["PATH=/bin"],
        "cwd": "/",
        "capabilities": {"bounding": ["CAP_KILL"], "inheritable": [], "ambient": ["CAP_KILL"]},
        "rlimits": [{"type": "RLIMIT_CORE", "hard": 18446744073709551615, "soft": 0}],
        "noNewPrivileges": True,
        "apparmorProfile": "docker-default",
        "oomScoreAdj": -500,
        "selinuxLabel": "system_u:system_r:container_t:s0",
        "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 4},
        "scheduler": {"policy": "SCHED_OTHER", "nice": -5},
        "execCPUAffinity": {"initial": "0", "final": "0-1"},
    },
    "root": {"path": "/var/lib/bundle/rootfs"},
    "hostname": "box",
    "domainname": "example.org",
    "mounts": [
        {
            "destination": "/data",
            "type": "bind",
            "source": "/srv/data",
            "options": ["rbind", "ro"],
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        }
    ],
    "hooks": {
        "createRuntime": [{"path": "/usr/bin/hook", "args": ["hook", "up"], "timeout": 5}],
        "poststop": [{"path": "/usr/bin/hook"}],
    },
    "annotations": {"org.example.key": "value"},
    "linux": {
        "namespaces": [{"type": "pid"}, {"type": "user"}, {"type": "network", "path": "/x"}],
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "timeOffsets": {"monotonic": {"secs": -3600, "nanosecs": 5}},
        "devices": [{"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229, "fileMode": 438}],
        "netDevices": {"eth1": {"name": "net0"}},
        "cgroupsPath": "/dockyard/abc",
        "resources": {
            "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c"}],
            "memory": {
                "limit": 8589934592,
                "swap": -1,
                "kernelTCP": 1024,
                "disableOOMKiller": True,
                "checkBeforeUpdate": True,
            },
            "cpu": {"shares": 512, "quota": -1, "realtimeRuntime": 950000, "cpus": "0-1"},
            "pids": {"limit": -1},
            "blockIO": {
                "weight": 500,
                "weightDevice": [{"major": 8, "minor": 0, "weight": 300, "leafWeight": 10}],
                "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}],
                "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
            },
            "hugepageLimits": [{"pageSize": "2MB", "limit": 209715200}],
            "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]},
            "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}},
            "unified": {"memory.high": "1G"},
        },
        "rootfsPropagation": "rslave",
        "seccomp": {
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "listenerPath": "/run/seccomp.sock",
            "syscalls": [
                {
                    "names": ["personality"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 8, "valueTwo": 255, "op": "SCMP_CMP_MASKED_EQ"}],
                },
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            ],
        },
        "sysctl": {"net.ipv4.ip_forward": "1"},
        "maskedPaths": ["/proc/kcore"],
        "readonlyPaths": ["/proc/sys"],
        "mountLabel": "system_u:object_r:container_file_t:s0",
        "intelRdt": {"closID": "guaranteed", "l3CacheSchema": "L3:0=ff", "memBwSchema": "MB:0=50"},
        "memoryPolicy": {"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]},
        "personality": {"domain": "LINUX32"},
    },
}


def _config(**changes: object) -> dict:
    """A small valid config with top-level members replaced."""
    config = {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
    }
    config.update(changes)
    return config


def _problem(config: dict) -> str:
    """The one-line error that loading and validating ``config`` gives."""
    with pytest.raises(InvalidArgument) as raised:
        validate_spec(load_spec(json.dumps(config).encode()))
    message = str(raised.value)
    assert "\n" not in message
    return message


@needs_runc
@pytest.mark.parametrize("flags", [[], ["--rootless"]], ids=["default", "rootless"])
def test_runc_spec_round_trips(tmp_path: Path, flags: list[str]) -> None:
    subprocess.run(["runc", "spec", *flags], cwd=tmp_path, check=True)
    raw = (tmp_path / "config.json").read_bytes()
    spec = load_spec(raw)
    validate_spec(spec)
    assert json.loads(dump(spec)) == json.loads(raw)
    assert spec.process is not None and spec.process.no_new_privileges is True
    assert spec.linux is not None and spec.linux.masked_paths
    assert load_spec(dump(spec, indent=4)) == spec


def test_full_config_round_trips_with_snake_case_attributes() -> None:
    spec = load_spec(json.dumps(FULL_CONFIG))
    validate_spec(spec)
    assert json.loads(dump(spec)) == FULL_CONFIG
    process, linux = spec.process, spec.linux
    assert process is not None and linux is not None and linux.resources is not None
    assert process.user.additional_gids == [5, 100]
    assert process.console_size is not None and process.console_size.width == 80
    assert process.oom_score_adj == -500
    assert process.io_priority is not None and process.io_priority.class_ == "IOPRIO_CLASS_BE"
    assert process.exec_cpu_affinity is not None and process.exec_cpu_affinity.final == "0-1"
    assert process.rlimits is not None and process.rlimits[0].hard == 2**64 - 1
    assert linux.cgroups_path == "/dockyard/abc"
    assert linux.uid_mappings is not None and linux.uid_mappings[0].host_id == 100000
    assert linux.uid_mappings[0].container_id == 0
    memory = linux.resources.memory
    assert memory is not None and memory.disable_oom_killer is True and memory.swap == -1
    assert memory.kernel_tcp == 1024
    assert linux.resources.cpu is not None and linux.resources.cpu.realtime_runtime == 950000
    block_io = linux.resources.block_io
    assert block_io is not None and block_io.throttle_read_iops_device is not None
    assert linux.resources.network is not None and linux.resources.network.class_id == 1048577
    assert linux.seccomp is not None and linux.seccomp.default_errno_ret == 1
    assert linux.seccomp.syscalls is not None and linux.seccomp.syscalls[1].errno_ret == 38
    assert linux.intel_rdt is not None and linux.intel_rdt.clos_id == "guaranteed"
    assert linux.time_offsets is not None and linux.time_offsets["monotonic"].secs == -3600


def test_unknown_keys_are_ignored_and_unset_members_omitted() -> None:
    config = _config(windows={"layerFolders": []}, futureKey=1)
    config["process"]["futureFlag"] = True  # type: ignore[index]
    spec = load_spec(json.dumps(config))
    assert spec.hostname is None and spec.linux is None
    assert json.loads(dump(spec)) == _config()


def test_models_build_in_code_and_encode_camel_case() -> None:
    spec = Spec(oci_version="1.2.0")
    assert dump(spec) == b'{"ociVersion":"1.2.0"}'
    assert dump(LinuxNamespace(type="pid")) == b'{"type":"pid"}'


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            json.dumps(_config(process={"cwd": "/", "user": {"uid": "0", "gid": 0}})),
            "invalid config.json: Expected int, got str at $.process.user.uid",
        ),
        ("{", "invalid config.json: Input data was truncated"),
        ("[1]", "invalid config.json: Expected object, got array"),
        ("{]", "invalid config.json: JSON is malformed"),
        (
            json.dumps({"root": {"path": "rootfs"}}),
            "invalid config.json: Object missing required field 'ociVersion'",
        ),
        (
            json.dumps(_config(mounts=[{"source": "/x"}])),
            "invalid config.json: Object missing required field 'destination' at $.mounts[0]",
        ),
        (
            json.dumps(_config(linux={"uidMappings": [{"containerID": 0, "hostID": -1}]})),
            "invalid config.json: Expected int >= 0 at $.linux.uidMappings[0].hostID",
        ),
    ],
)
def test_decode_errors_are_one_line_with_the_json_path(data: str, expected: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        load_spec(data.encode())
    assert str(raised.value).startswith(expected)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"ociVersion": "2.0.0"}, "unsupported ociVersion '2.0.0'"),
        ({"ociVersion": ""}, "unsupported ociVersion ''"),
        ({"root": None}, "root filesystem path is missing at $.root.path"),
        ({"root": {"path": ""}}, "root filesystem path is missing"),
        ({"process": {"cwd": "/", "args": []}}, "process.args is empty"),
        ({"process": {"cwd": "tmp", "args": ["sh"]}}, "cwd 'tmp' is not an absolute path"),
        (
            {"linux": {"namespaces": [{"type": "pid"}, {"type": "foo"}]}},
            "unknown namespace type 'foo' at $.linux.namespaces[1].type",
        ),
        (
            {"linux": {"namespaces": [{"type": "pid"}, {"type": "pid"}]}},
            "duplicate namespace type 'pid'",
        ),
        (
            {"linux": {"namespaces": [{"type": "user"}]}},
            "a new user namespace needs id mappings at $.linux.uidMappings",
        ),
        (
            {"linux": {"gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}},
            "id mappings need a user namespace in linux.namespaces at $.linux.gidMappings",
        ),
        (
            {"hooks": {"poststart": [{"path": "hook"}]}},
            "hook path 'hook' is not absolute at $.hooks.poststart[0].path",
        ),
        (
            {"mounts": [{"destination": "proc", "type": "proc"}]},
            "mount destination 'proc' is not absolute at $.mounts[0].destination",
        ),
        (
            {"process": {"cwd": "/", "args": ["sh"], "rlimits": [
                {"type": "RLIMIT_FOO", "hard": 1, "soft": 1}
            ]}},
            "unknown rlimit type 'RLIMIT_FOO' at $.process.rlimits[0].type",
        ),
        (
            {"process": {"cwd": "/", "args": ["sh"], "capabilities": {
                "effective": ["CAP_KILL", "CAP_FLY"]
            }}},
            "unknown capability 'CAP_FLY' at $.process.capabilities.effective[1]",
        ),
        (
            {"linux": {"seccomp": {"defaultAction": "SCMP_ACT_DENY"}}},
            "unknown seccomp action 'SCMP_ACT_DENY' at $.linux.seccomp.defaultAction",
        ),
        (
            {"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}
            ]}}},
            "unknown seccomp operator 'SCMP_CMP_ABOUT' at $.linux.seccomp.syscalls[0].args[0].op",
        ),
        (
            {"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                                   "architectures": ["SCMP_ARCH_Z80"]}}},
            "unknown seccomp architecture 'SCMP_ARCH_Z80'",
        ),
        (
            {"linux": {"rootfsPropagation": "sideways"}},
            "unknown rootfs propagation 'sideways'",
        ),
    ],
)  # fmt: skip
def test_semantic_errors(changes: dict, expected: str) -> None:
    config = _config(**changes)
    if config["root"] is None:
        del config["root"]
    message = _problem(config)
    assert message.startswith("invalid config.json: ")
    assert expected in message


def test_joining_a_user_namespace_needs_no_mappings() -> None:
    spec = load_spec(json.dumps(_config(linux={"namespaces": [{"type": "user", "path": "/p"}]})))
    validate_spec(spec)


def test_state_reads_runc_output_and_writes_the_oci_document() -> None:
    runc_state = {
        "ociVersion": "1.0.2-dev",
        "id": "web",
        "pid": 4242,
        "status": "running",
        "bundle": "/run/bundle",
        "rootfs": "/run/bundle/rootfs",
        "created": "2024-01-01T00:00:00Z",
        "owner": "",
    }
    state = load_state(json.dumps(runc_state))
    assert (state.id, state.status, state.pid) == ("web", "running", 4242)
    assert json.loads(dump(state)) == {
        "ociVersion": "1.0.2-dev",
        "id": "web",
        "status": "running",
        "bundle": "/run/bundle",
        "pid": 4242,
    }
    with pytest.raises(InvalidArgument, match=r"^invalid container state: .*'bundle'"):
        load_state(b'{"ociVersion": "1.0.2", "id": "x", "status": "created"}')


@needs_runc
def test_features_reads_runc_features() -> None:
    raw = subprocess.run(["runc", "features"], check=True, capture_output=True).stdout
    features = load_features(raw)
    assert features.oci_version_min.startswith("1.")
    assert features.linux is not None and features.linux.namespaces is not None
    assert "pid" in features.linux.namespaces
    assert features.linux.seccomp is not None and features.linux.seccomp.actions
    assert load_features(dump(features)) == features
