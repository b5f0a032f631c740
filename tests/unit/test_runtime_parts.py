"""The runtime's pure parts: IDs, mount options, signals, sizes, command lookup, caches."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from dockyard.errors import CannotExecute, CommandNotFound, Conflict, InvalidArgument
from dockyard.linux import syscalls as sc
from dockyard.oci import runtime as oci
from dockyard.runtime import cli, process, rootfs, seccomp_policy
from dockyard.runtime.state import ContainerRecord, StateDir, check_id, proc_start_time


@pytest.mark.parametrize("good", ["a", "web-1", "x.y_z+1", "A" * 1024])
def test_valid_ids(good: str) -> None:
    check_id(good)


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "a b", "A" * 1025, "é"])
def test_invalid_ids_are_refused_with_one_line(bad: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        check_id(bad)
    assert "\n" not in str(e.value)


def test_state_dir_claim_is_exclusive_and_remove_leaves_nothing(tmp_path: Path) -> None:
    sd = StateDir(tmp_path, "c1")
    sd.claim()
    with pytest.raises(Conflict, match="already exists"):
        StateDir(tmp_path, "c1").claim()
    record = ContainerRecord(id="c1", pid=1, pid_start=2, bundle="/b", rootfs="/b/rootfs",
                             created="now", cgroup_path="/dockyard/c1", config=b"{}")
    sd.write(record)
    assert sd.read() == record
    sd.remove()
    assert list(tmp_path.iterdir()) == []


def test_corrupt_state_is_a_clear_error(tmp_path: Path) -> None:
    sd = StateDir(tmp_path, "c1")
    sd.claim()
    Path(sd.state_file).write_text("{not json")
    with pytest.raises(InvalidArgument, match="state of container 'c1' is corrupt"):
        sd.read()


def test_start_time_names_a_live_process_only() -> None:
    assert proc_start_time(os.getpid())
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    # A zombie counts as gone: its pid may be waited for but it runs nothing.
    while True:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split(") ")[1].startswith("Z"):
                break
    assert proc_start_time(pid) is None
    os.waitpid(pid, 0)
    assert proc_start_time(pid) is None


def test_mount_options_become_flags_propagation_and_data() -> None:
    m = oci.Mount(destination="/data", type="bind", source="vol",
                  options=["rbind", "ro", "nosuid", "rprivate", "size=10k", "tmpcopyup"])
    plan = rootfs.parse_mount(m, "/bundle")
    assert plan.source == "/bundle/vol"  # relative bind sources are the bundle's
    assert plan.is_bind
    assert plan.flags & sc.MS_REC and plan.flags & sc.MS_RDONLY and plan.flags & sc.MS_NOSUID
    assert plan.propagation == (sc.MS_PRIVATE | sc.MS_REC,)
    assert plan.data == "size=10k"


def test_later_options_override_earlier_ones() -> None:
    plan = rootfs.parse_mount(oci.Mount(destination="/t", type="tmpfs", source="tmpfs",
                                        options=["ro", "rw", "noexec", "exec"]), "/b")
    assert not plan.flags & (sc.MS_RDONLY | sc.MS_NOEXEC)


def test_relative_mount_destination_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="not absolute"):
        rootfs.parse_mount(oci.Mount(destination="data", type="tmpfs"), "/b")


def test_root_propagation() -> None:
    assert rootfs.root_propagation(None) == sc.MS_SLAVE | sc.MS_REC
    assert rootfs.root_propagation("shared") == sc.MS_SHARED
    with pytest.raises(InvalidArgument):
        rootfs.root_propagation("sideways")


@pytest.mark.parametrize(("text", "number"), [
    ("9", 9), ("KILL", signal.SIGKILL), ("SIGTERM", signal.SIGTERM), ("hup", signal.SIGHUP),
])
def test_signals_by_name_or_number(text: str, number: int) -> None:
    assert cli.parse_signal(text) == number


def test_unknown_signal() -> None:
    with pytest.raises(InvalidArgument, match="unknown signal 'SIGNOPE'"):
        cli.parse_signal("SIGNOPE")


@pytest.mark.parametrize(("text", "size"), [
    ("64m", 64 << 20), ("1g", 1 << 30), ("512", 512), ("2kb", 2048), ("-1", -1),
])
def test_sizes(text: str, size: int) -> None:
    assert cli.parse_bytes(text) == size


def test_bad_size() -> None:
    with pytest.raises(InvalidArgument, match="invalid size"):
        cli.parse_bytes("lots")


def test_command_word_skips_global_options() -> None:
    assert cli._command_word(["--root", "/r", "--debug", "run", "x"]) == "run"
    assert cli._command_word(["--log", "f", "--log-format", "json", "kill", "x", "9"]) == "kill"
    assert cli._command_word(["run", "--help"]) is None
    assert cli._command_word(["frobnicate"]) is None


def _prepared(tmp_path: Path, args: list[str], path: str) -> process.PreparedProcess:
    return process.prepare(oci.Process(cwd="/", args=args, env=[f"PATH={path}"]), None)


def test_lookup_follows_path_like_execvp(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    tool = tmp_path / "b" / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    prepared = _prepared(tmp_path, ["tool"], f"{tmp_path}/a:{tmp_path}/b")
    assert process.lookup(prepared) == str(tool)


def test_lookup_errors_have_dockers_words_and_codes(tmp_path: Path) -> None:
    with pytest.raises(CommandNotFound, match="executable file not found in \\$PATH") as e:
        process.lookup(_prepared(tmp_path, ["nope"], str(tmp_path)))
    assert e.value.exit_code == 127
    plain = tmp_path / "plain"
    plain.write_text("data")
    with pytest.raises(CannotExecute, match="permission denied") as e2:
        process.lookup(_prepared(tmp_path, [str(plain)], str(tmp_path)))
    assert e2.value.exit_code == 126


def test_the_runtime_refuses_its_own_executable(tmp_path: Path) -> None:
    prepared = _prepared(tmp_path, ["/proc/self/exe"], "/bin")
    with pytest.raises(CannotExecute, match="runtime's own executable"):
        process.refuse_runtime_binary(prepared, "/proc/self/exe")
    script = tmp_path / "evil"
    script.write_text("#!/proc/self/exe\n")
    with pytest.raises(CannotExecute):
        process.refuse_runtime_binary(prepared, str(script))
    process.refuse_runtime_binary(prepared, "/bin/sh")  # anything else is fine


def test_bad_rlimits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="unknown rlimit type 'RLIMIT_NOPE'"):
        process.prepare(oci.Process(cwd="/", args=["x"], rlimits=[
            oci.POSIXRlimit(type="RLIMIT_NOPE", hard=1, soft=1)]), None)
    with pytest.raises(InvalidArgument, match="above the hard limit"):
        process.prepare(oci.Process(cwd="/", args=["x"], rlimits=[
            oci.POSIXRlimit(type="RLIMIT_NOFILE", hard=1, soft=2)]), None)


def test_ambient_caps_need_inheritable_ones_like_runc() -> None:
    caps = oci.LinuxCapabilities(bounding=["CAP_KILL"], effective=["CAP_KILL"],
                                 permitted=["CAP_KILL"], ambient=["CAP_KILL"])
    prepared = process.prepare(oci.Process(cwd="/", args=["x"], capabilities=caps), None)
    assert prepared.caps is not None and prepared.caps.ambient == set()


def test_seccomp_programs_are_cached(tmp_path: Path) -> None:
    section = oci.LinuxSeccomp(default_action="SCMP_ACT_ALLOW", architectures=[
        "SCMP_ARCH_X86_64"], syscalls=[oci.LinuxSyscall(names=["mkdir"],
                                                        action="SCMP_ACT_ERRNO")])
    first = seccomp_policy.compile_cached(section, str(tmp_path))
    assert first == seccomp_policy.compile_oci_seccomp(section)
    [cached] = list(tmp_path.iterdir())
    assert cached.read_bytes().endswith(first[0])
    # A damaged cache file is not trusted: it is compiled again and rewritten.
    cached.write_bytes(b"junk")
    assert seccomp_policy.compile_cached(section, str(tmp_path)) == first
    assert cached.read_bytes().endswith(first[0])


def test_a_cache_file_serves_only_its_own_section(tmp_path: Path) -> None:
    arch = ["SCMP_ARCH_X86_64"]
    deny = oci.LinuxSeccomp(default_action="SCMP_ACT_ALLOW", architectures=arch, syscalls=[
        oci.LinuxSyscall(names=["mkdir"], action="SCMP_ACT_ERRNO")])
    allow = oci.LinuxSeccomp(default_action="SCMP_ACT_ALLOW", architectures=arch)
    deny_dir, allow_dir = tmp_path / "d", tmp_path / "a"
    denying = seccomp_policy.compile_cached(deny, str(deny_dir))
    allowing = seccomp_policy.compile_cached(allow, str(allow_dir))
    assert allowing != denying
    # Put deny's file under allow's name, as a CRC collision would: it is not taken.
    [deny_file] = list(deny_dir.iterdir())
    [allow_file] = list(allow_dir.iterdir())
    allow_file.write_bytes(deny_file.read_bytes())
    assert seccomp_policy.compile_cached(allow, str(allow_dir)) == allowing
