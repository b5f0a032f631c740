"""What only the monitor sees, as events and health: ``die`` (with the exit code),
``oom``, ``start`` for a restart by the policy, and the healthcheck's probes
(``health.json`` and the ``health_status`` events); and the output it holds for the
first attach client (``run -it``).

The monitors are those of ``test_monitor`` (its ``monitors`` fixture and the ``dy``
session), so whatever they leave is found.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dockyard.engine.config import ContainerConfig
from dockyard.engine.ocispec import merge_image_config
from dockyard.errors import InvalidArgument
from dockyard.oci.image import ContainerConfig as ImageDefaults
from dockyard.oci.image import HealthConfig, ImageConfig, RootFS
from dockyard.runtime.monitor import Frame, HealthSpec, RestartPolicy, read_health
from integration.test_monitor import MiB, Monitors, frames_until, monitors, output_of

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.timeout(120),
]

__all__ = ["monitors"]  # the fixture, imported for the tests below

ATTRIBUTES = {"image": "busybox", "name": "box", "tier": "web"}


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] \
        if path.exists() else []


def test_die_and_restarts_are_recorded_with_the_attributes(monitors: Monitors,
                                                           tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    handle, spec = monitors.start(["sh", "-c", "exit 2"], events_path=str(log),
                                  event_attributes=ATTRIBUTES,
                                  restart=RestartPolicy.parse("on-failure:1"))
    assert handle.wait(timeout=30).restarts == 1
    seen = events(log)
    # As dockerd: each exit a die, the policy's restart a start.
    assert [e["Action"] for e in seen] == ["die", "start", "die"]
    assert all(e["Type"] == "container" and e["id"] == spec.container_id for e in seen)
    assert seen[0]["Actor"]["Attributes"] == {**ATTRIBUTES, "exitCode": "2",
                                              "execDuration": "0"}
    assert seen[1]["Actor"]["Attributes"] == ATTRIBUTES
    assert seen[0]["from"] == "busybox"


def test_an_oom_kill_is_an_oom_event_before_the_die(monitors: Monitors,
                                                    tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    limit = 32 * MiB
    handle, _ = monitors.start(
        ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
        linux={"resources": {"memory": {"limit": limit, "swap": limit}}},
        events_path=str(log), event_attributes=ATTRIBUTES)
    assert handle.wait(timeout=30).oom_killed
    seen = events(log)
    assert [e["Action"] for e in seen] == ["oom", "die"]
    assert seen[1]["Actor"]["Attributes"]["exitCode"] == "137"


def test_health_changes_are_written_and_recorded(monitors: Monitors, tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    # Passes three times (a counter in /dev/shm: the rootfs is read-only), then fails for good.
    check = HealthSpec(test=("/bin/sh", "-c", "n=$(cat /dev/shm/n 2>/dev/null || echo 0); "
                             "echo $((n+1)) > /dev/shm/n; echo probe $n; [ $n -lt 3 ]"),
                       interval=0.1, timeout=5, retries=2)
    handle, spec = monitors.start(["sleep", "60"], healthcheck=check,
                                  events_path=str(log), event_attributes=ATTRIBUTES)
    monitors.dy.wait_for(lambda: (read_health(spec.state_dir) or {}).get("Status")
                         == "unhealthy", 20, "the container to become unhealthy")
    health = read_health(spec.state_dir)
    assert health is not None and health["FailingStreak"] == 2
    assert [entry["Output"] for entry in health["Log"]] == [
        "probe 0\n", "probe 1\n", "probe 2\n", "probe 3\n", "probe 4\n"]
    assert [entry["ExitCode"] for entry in health["Log"]] == [0, 0, 0, 1, 1]
    actions = [e["Action"] for e in events(log)]
    assert actions == ["health_status: healthy", "health_status: unhealthy"]
    handle.stop(timeout=1)
    # No probe outlives the container.
    assert [e["Action"] for e in events(log)][-1] == "die"


def test_health_spec_refuses_nonsense() -> None:
    for bad in ({"test": ()}, {"test": ("true",), "interval": 0},
                {"test": ("true",), "retries": 0}, {"test": ("true",), "start_period": -1}):
        with pytest.raises(InvalidArgument, match="healthcheck"):
            HealthSpec(**bad)


def test_the_users_healthcheck_fills_in_from_the_images_as_dockerd_merges() -> None:
    image = ImageConfig(architecture="amd64", os="linux", rootfs=RootFS(diff_ids=[]),
                        config=ImageDefaults(healthcheck=HealthConfig(
                            test=["CMD", "check"], interval=5_000_000_000, retries=7)))
    mine = ContainerConfig(image="x", healthcheck=HealthConfig(interval=1_000_000_000))
    merged = merge_image_config(mine, image).healthcheck
    assert merged == HealthConfig(test=["CMD", "check"], interval=1_000_000_000, retries=7)
    none = ContainerConfig(image="x", healthcheck=HealthConfig(test=["NONE"]))
    assert merge_image_config(none, image).healthcheck == HealthConfig(
        test=["NONE"], interval=5_000_000_000, retries=7)


@pytest.mark.parametrize("hold", [True, False])
def test_held_output_goes_to_the_first_client_only(monitors: Monitors, hold: bool) -> None:
    handle, spec = monitors.start(["sh", "-c", "echo early; sleep 1; echo late"],
                                  hold_output=hold)
    monitors.dy.wait_for(lambda: Path(spec.log_path).exists() and
                         "early" in Path(spec.log_path).read_text(), 10, "the first line")
    first, second = handle.attach(), handle.attach()
    with first, second:
        for sock, wanted in ((first, b"early\nlate\n" if hold else b"late\n"),
                             (second, b"late\n")):
            frames = frames_until(sock, lambda f: bool(f) and f[-1][0] == Frame.EXIT)
            assert output_of(frames) == wanted
    assert handle.wait().exit_code == 0
