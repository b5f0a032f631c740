"""The default spec and the conversion of Docker seccomp profiles to OCI form."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from referencing import Registry
from referencing.jsonschema import DRAFT4

from dockyard.errors import InvalidArgument
from dockyard.oci.runtime import LinuxSeccomp, dump, load_spec, validate_spec
from dockyard.runtime.spec import (
    DEFAULT_CAPABILITIES,
    default_seccomp_profile,
    default_spec,
    seccomp_from_profile,
)

SCHEMAS = Path("/work/shared/reference/oci-runtime-spec")
needs_runc = pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")


@pytest.fixture(scope="module")
def config_schema() -> jsonschema.protocols.Validator:
    """A validator of config-schema.json whose relative $refs ("defs.json#...") resolve
    to the sibling files."""
    if not SCHEMAS.is_dir():
        pytest.skip(f"{SCHEMAS} is missing")
    resources = [
        (path.name, DRAFT4.create_resource(json.loads(path.read_text())))
        for path in SCHEMAS.glob("*.json")
    ]
    registry: Registry = Registry().with_resources(resources)
    schema = json.loads((SCHEMAS / "config-schema.json").read_text())
    return jsonschema.Draft4Validator(schema, registry=registry)


def _allowed(seccomp: LinuxSeccomp) -> set[str]:
    """Syscalls allowed whatever their arguments."""
    return {
        name
        for rule in seccomp.syscalls or ()
        if rule.action == "SCMP_ACT_ALLOW" and not rule.args
        for name in rule.names
    }


def _rules_for(seccomp: LinuxSeccomp, name: str) -> list:
    return [rule for rule in seccomp.syscalls or () if name in rule.names]


@pytest.mark.parametrize("rootless", [False, True], ids=["default", "rootless"])
def test_default_spec_is_valid(config_schema: jsonschema.protocols.Validator, rootless: bool):
    spec = default_spec(rootless=rootless)
    validate_spec(spec)
    config_schema.validate(json.loads(dump(spec)))
    assert load_spec(dump(spec)) == spec


def test_schema_resolves_references(config_schema: jsonschema.protocols.Validator) -> None:
    # The namespace enum lives in defs-linux.json, two $refs away from the root schema.
    bad = {"ociVersion": "1.2.0", "linux": {"namespaces": [{"type": "foo"}]}}
    assert not config_schema.is_valid(bad)


def test_default_spec_has_dockers_defaults() -> None:
    spec = default_spec()
    process, linux = spec.process, spec.linux
    assert process is not None and linux is not None and linux.resources is not None
    assert process.args == ["sh"] and process.terminal is True and process.cwd == "/"
    assert process.env is not None and "TERM=xterm" in process.env
    assert process.env[0].startswith("PATH=/usr/local/sbin:")
    assert (process.user.uid, process.user.gid) == (0, 0)
    caps = process.capabilities
    assert caps is not None
    assert caps.bounding == caps.effective == caps.permitted == list(DEFAULT_CAPABILITIES)
    assert len(DEFAULT_CAPABILITIES) == 14 and "CAP_SYS_ADMIN" not in DEFAULT_CAPABILITIES
    assert caps.inheritable is None and caps.ambient is None
    assert process.rlimits is not None
    assert [(r.type, r.soft, r.hard) for r in process.rlimits] == [("RLIMIT_NOFILE", 1024, 1024)]
    assert process.no_new_privileges is True
    assert spec.root is not None and (spec.root.path, spec.root.readonly) == ("rootfs", True)
    assert spec.hostname == "dockyard"
    assert [ns.type for ns in linux.namespaces or ()] == [
        "pid", "network", "ipc", "uts", "mount", "cgroup"
    ]  # fmt: skip
    assert linux.uid_mappings is None
    assert linux.masked_paths is not None and "/sys/devices/virtual/powercap" in linux.masked_paths
    assert linux.readonly_paths == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                    "/proc/sysrq-trigger"]  # fmt: skip
    assert json.loads(dump(linux.resources)) == {"devices": [{"allow": False, "access": "rwm"}]}
    assert linux.seccomp is not None and linux.seccomp.default_action == "SCMP_ACT_ERRNO"
    assert linux.seccomp.default_errno_ret == 1


def test_rootless_spec_maps_the_caller() -> None:
    linux = default_spec(rootless=True).linux
    assert linux is not None
    types = [ns.type for ns in linux.namespaces or ()]
    assert "user" in types and "network" not in types
    assert linux.uid_mappings is not None and linux.gid_mappings is not None
    assert [(m.container_id, m.host_id, m.size) for m in linux.uid_mappings] == [
        (0, os.geteuid(), 1)
    ]
    assert [(m.container_id, m.host_id, m.size) for m in linux.gid_mappings] == [
        (0, os.getegid(), 1)
    ]
    assert linux.resources is None


@needs_runc
@pytest.mark.parametrize("rootless", [False, True], ids=["default", "rootless"])
def test_mounts_are_those_of_runc_spec(tmp_path: Path, rootless: bool) -> None:
    flags = ["--rootless"] if rootless else []
    subprocess.run(["runc", "spec", *flags], cwd=tmp_path, check=True)
    runc = json.loads((tmp_path / "config.json").read_bytes())
    ours = json.loads(dump(default_spec(rootless=rootless)))
    assert ours["mounts"] == runc["mounts"]
    assert set(runc["linux"]["maskedPaths"]) <= set(ours["linux"]["maskedPaths"])
    assert runc["linux"]["readonlyPaths"] == ours["linux"]["readonlyPaths"]


def test_sys_admin_allows_the_mount_syscalls() -> None:
    profile = default_seccomp_profile()
    without = seccomp_from_profile(profile, DEFAULT_CAPABILITIES, "x86_64", kernel="6.1")
    with_admin = seccomp_from_profile(
        profile, [*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"], "x86_64", kernel="6.1"
    )
    for name in ("mount", "umount2", "unshare", "setns", "bpf", "fsmount"):
        assert name not in _allowed(without)
        assert name in _allowed(with_admin)
    # Without CAP_SYS_ADMIN, clone may not create namespaces and clone3 (whose flags
    # seccomp cannot read) fails with ENOSYS so that libc falls back to clone.
    assert [rule.args is not None for rule in _rules_for(without, "clone")] == [True]
    [clone3] = _rules_for(without, "clone3")
    assert (clone3.action, clone3.errno_ret) == ("SCMP_ACT_ERRNO", 38)
    assert "clone3" in _allowed(with_admin)
    assert all(rule.action == "SCMP_ACT_ALLOW" for rule in _rules_for(with_admin, "clone3"))


def test_capability_rules_follow_the_bounding_set() -> None:
    profile = default_seccomp_profile()
    base = _allowed(seccomp_from_profile(profile, DEFAULT_CAPABILITIES, "x86_64", kernel="6.1"))
    assert "chroot" in base  # CAP_SYS_CHROOT is a default capability
    assert not {"reboot", "init_module", "syslog", "settimeofday"} & base
    extra = ["CAP_SYS_BOOT", "CAP_SYS_MODULE", "CAP_SYSLOG", "CAP_SYS_TIME"]
    more = _allowed(
        seccomp_from_profile(profile, [*DEFAULT_CAPABILITIES, *extra], "x86_64", kernel="6.1")
    )
    assert {"reboot", "init_module", "syslog", "settimeofday"} <= more
    no_chroot = [cap for cap in DEFAULT_CAPABILITIES if cap != "CAP_SYS_CHROOT"]
    assert "chroot" not in _allowed(seccomp_from_profile(profile, no_chroot, "x86_64"))


@pytest.mark.parametrize(
    ("arch", "architectures", "present", "absent"),
    [
        ("x86_64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
         {"arch_prctl", "modify_ldt"}, {"cacheflush", "s390_runtime_instr"}),
        ("amd64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
         {"arch_prctl"}, {"set_tls"}),
        ("aarch64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
         {"cacheflush", "set_tls"}, {"arch_prctl", "modify_ldt"}),
        ("s390x", ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"], {"s390_runtime_instr"}, {"arch_prctl"}),
        ("riscv64", ["SCMP_ARCH_RISCV64"], {"riscv_flush_icache"}, {"arch_prctl"}),
        ("ppc64le", None, {"swapcontext"}, {"arch_prctl"}),
    ],
)  # fmt: skip
def test_arch_map_and_arch_conditions(
    arch: str, architectures: list[str] | None, present: set[str], absent: set[str]
) -> None:
    seccomp = seccomp_from_profile(default_seccomp_profile(), DEFAULT_CAPABILITIES, arch)
    assert seccomp.architectures == architectures
    assert present <= _allowed(seccomp)
    assert not absent & _allowed(seccomp)


def test_s390_clone_filters_the_second_argument() -> None:
    seccomp = seccomp_from_profile(default_seccomp_profile(), DEFAULT_CAPABILITIES, "s390x")
    [clone] = _rules_for(seccomp, "clone")
    assert clone.args is not None and [arg.index for arg in clone.args] == [1]


def test_min_kernel() -> None:
    profile = default_seccomp_profile()
    old = seccomp_from_profile(profile, DEFAULT_CAPABILITIES, "x86_64", kernel="4.4.0-generic")
    new = seccomp_from_profile(profile, DEFAULT_CAPABILITIES, "x86_64", kernel="4.8.0")
    assert "ptrace" not in _allowed(old)
    assert "ptrace" in _allowed(new)
    excluded = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["kcmp"], "action": "SCMP_ACT_ERRNO",
                      "excludes": {"minKernel": "5.10"}}],
    }  # fmt: skip
    assert seccomp_from_profile(excluded, [], kernel="5.4").syscalls
    assert seccomp_from_profile(excluded, [], kernel="6.18.0").syscalls is None


def test_host_defaults_give_this_machine_a_filter() -> None:
    seccomp = seccomp_from_profile(default_seccomp_profile(), DEFAULT_CAPABILITIES)
    if os.uname().machine == "x86_64":
        assert seccomp.architectures == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert {"read", "write", "execve", "exit_group"} <= _allowed(seccomp)


def test_profile_with_name_and_plain_architectures() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"name": "getpid", "action": "SCMP_ACT_ALLOW", "comment": "Docker-only key"},
        ],
    }
    seccomp = seccomp_from_profile(profile, [], "aarch64")
    assert json.loads(dump(seccomp)) == {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}],
    }


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86"],
          "archMap": [{"architecture": "SCMP_ARCH_X86", "subArchitectures": None}]},
         "both 'architectures' and 'archMap'"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ALLOW"}]},
         "both 'name' and 'names'"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{"names": ["a"], "action": 1}]},
         "Expected str, got int at $.syscalls[0].action"),
        ({"syscalls": []}, "Object missing required field 'defaultAction'"),
    ],
)  # fmt: skip
def test_bad_profiles(profile: dict, expected: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        seccomp_from_profile(profile, [], "x86_64")
    assert str(raised.value).startswith("invalid seccomp profile: ")
    assert expected in str(raised.value)
