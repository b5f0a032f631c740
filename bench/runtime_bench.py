"""How long one container takes: dockyard-runtime against runc and crun.

    sudo .venv/bin/python bench/runtime_bench.py [-n 30]

Each iteration runs the same busybox bundle (``/bin/true``) once with every runtime, in
turn, so that a slow spell of the machine hits them all alike: ``RUNTIME --root R run
--bundle B ID`` with a fresh ID, which creates, starts, waits for and deletes it. Two more
figures frame them: the floor, ``unshare ... chroot ROOTFS /bin/true`` (the namespaces
and nothing else), and dockyard's in-process Python API, which pays no interpreter
start-up. Medians are printed, with each one's ratio to runc.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

# The bundle builder is shared with the tests rather than written twice.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import bundles

Timed = Callable[[], None]


def cli_run(binary: str, root: Path, bundle: Path) -> Timed:
    """One ``run`` of the bundle with a runtime's CLI; the delete is not timed."""

    def run() -> None:
        cid = f"bench-{uuid.uuid4().hex[:12]}"
        done = bundles.run_runtime(binary, root, "run", "--bundle", str(bundle), cid)
        if done.returncode != 0:
            # Only a failed run can leave the container behind (run deletes it).
            bundles.run_runtime(binary, root, "delete", "--force", cid)
            raise RuntimeError(f"{Path(binary).name} run exited {done.returncode}: {done.stderr}")

    return run


def bare_unshare(rootfs: Path) -> Timed:
    command = ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net"]
    command += ["chroot", str(rootfs), "/bin/true"]
    return lambda: subprocess.run(command, check=True)


def python_api(root: Path, bundle: Path) -> Timed:
    """create, start, wait, delete through ``dockyard.runtime.Runtime`` in this process."""
    from dockyard.runtime import Runtime

    runtime = Runtime(root)

    def run() -> None:
        cid = f"bench-{uuid.uuid4().hex[:12]}"
        runtime.create(cid, bundle, reap=True)
        try:
            runtime.start(cid)
            runtime.wait(cid)
        finally:
            runtime.delete(cid)

    return run


def time_once(func: Timed) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--iterations", type=int, default=30)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="runtime-bench-") as tmp:
        work = Path(tmp)
        rootfs = bundles.build_busybox_rootfs(work / "rootfs")
        bundle = bundles.write_bundle(work / "bundle", rootfs, ["/bin/true"])

        figures: dict[str, Timed] = {}
        for name in bundles.RUNTIMES:
            try:
                figures[f"{name} run"] = cli_run(
                    bundles.runtime_binary(name), work / "roots" / name, bundle
                )
            except (FileNotFoundError, RuntimeError) as error:
                print(f"skipped {name}: {error}")
        try:
            figures["dockyard.runtime API"] = python_api(work / "roots" / "api", bundle)
        except (ImportError, AttributeError) as error:
            print(f"skipped the Python API (dockyard.runtime.Runtime not there yet): {error}")
        figures["unshare + chroot"] = bare_unshare(rootfs)

        samples: dict[str, list[float]] = {label: [] for label in figures}
        failed: dict[str, str] = {}
        for _ in range(options.iterations):
            for label, func in figures.items():
                if label in failed:
                    continue
                try:
                    samples[label].append(time_once(func))
                # Whatever a runtime under construction raises marks its figure failed;
                # the others are still measured.
                except Exception as error:
                    failed[label] = f"{type(error).__name__}: {str(error).strip()}"

    medians = {label: statistics.median(times) for label, times in samples.items() if times}
    reference = medians.get("runc run")
    print(f"\n{'':24}{'median':>10}{'vs runc':>10}   ({options.iterations} iterations)")
    for label, median in medians.items():
        ratio = f"{median / reference:9.2f}x" if reference else f"{'-':>10}"
        print(f"{label:24}{median * 1000:8.1f}ms{ratio}")
    for label, error in failed.items():
        print(f"{label:24}  failed: {error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
