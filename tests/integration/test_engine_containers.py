"""The container service as a library: create, start, logs, wait, remove, and what it
makes of an interrupted create or an image in use."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.engine.containers import ContainerService
from dockyard.engine.options import RunFlags, to_config
from dockyard.errors import Conflict, NotFound

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ContainerService]:
    svc = ContainerService(str(tmp_path / "root"), str(tmp_path / "run"))
    svc.images.bootstrap("busybox")
    yield svc
    for summary in svc.list(all=True):
        svc.remove(summary["Id"], force=True)
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if str(tmp_path) in line]


def test_run_logs_wait_and_remove(service: ContainerService) -> None:
    config, host = to_config(RunFlags(image="busybox", command=["sh", "-c", "echo hi; exit 5"]))
    cid = service.run(config, host, "job")
    assert service.resolve("job") == cid == service.resolve(cid[:8])
    assert [e.data for e in service.logs(cid, follow=True)] == [b"hi\n"]
    assert service.wait("job") == 5
    assert service.inspect("job")["State"]["Status"] == "exited"
    image_id = service.images.resolve("busybox")
    assert service.image_in_use(image_id)
    with pytest.raises(Conflict):
        service.images.remove("busybox")
    service.remove("job")
    assert not service.image_in_use(image_id)
    with pytest.raises(NotFound, match="No such container: job"):
        service.resolve("job")


def test_interrupted_create_is_cleaned_up(service: ContainerService) -> None:
    config, host = to_config(RunFlags(image="busybox", command=["true"]))
    cid = service.create(config, host, "half")
    # As if the creating process died before it recorded the container as created.
    with service.db.transaction() as conn:
        conn.execute("UPDATE containers SET state = 'creating', pid = 999999999 "
                     "WHERE id = ?", (cid,))
    assert service.list(all=True) == []
    with pytest.raises(NotFound):
        service.resolve("half")
    assert not os.path.exists(os.path.join(service.runroot, "containers", cid))


def test_volumes_are_recorded_and_rm_v_removes_anonymous_ones(
        service: ContainerService) -> None:
    config, host = to_config(RunFlags(image="busybox", volume=["data:/data", "/scratch"],
                                      command=["sh", "-c", "echo hi > /scratch/f"]))
    cid = service.run(config, host, "job")
    assert service.wait(cid) == 0
    names = {m["Destination"]: m["Name"] for m in service.inspect(cid)["Mounts"]}
    anonymous = names["/scratch"]
    assert names["/data"] == "data"
    assert service.volume_users("data") == service.volume_users(anonymous) == [cid]
    assert service.volumes.users("data") == [cid]  # released at exit: no mount ref left
    with pytest.raises(Conflict, match=f"remove data: volume is in use - \\[{cid}\\]"):
        service.volumes.remove("data")
    service.remove(cid, volumes=True)
    assert [v["Name"] for v in service.volumes.ls()] == ["data"]
    assert service.volume_users("data") == []
    service.volumes.remove("data")
