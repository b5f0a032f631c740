"""How fast an image comes from a registry: dockyard pull against skopeo (and podman).

    sudo .venv/bin/python bench/pull_bench.py [-n 5] [--size-mb 200]

Builds an image of several gzip layers (~SIZE MB compressed, compressible like real
software), pushes it to a local Distribution registry, then, alternating, N times:
``dockyard pull`` into an empty root (download, verify, unpack), ``skopeo copy
docker://... oci:DIR`` (download and verify, no unpack) and ``podman pull`` where podman
is installed. Prints the medians and the ratios to skopeo, and the layer extraction
throughput of dockyard alone (``apply_layer`` of the blobs from the local store).
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dockyard.engine.images import ImageService
from dockyard.images.platform import host_platform
from dockyard.oci.image import (
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    Digest,
    ImageConfig,
    Manifest,
    RootFS,
    dump,
)
from dockyard.storage.content import ContentStore
from dockyard.storage.layers import apply_layer
from interop.registry_fixtures import run_registry


def _layer_tar(size: int, seed: int) -> bytes:
    """A tar of files whose content compresses about 2:1, like binaries and libraries."""
    rng = random.Random(seed)
    words = [rng.randbytes(6).hex().encode() for _ in range(4096)]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        written = n = 0
        while written < size:
            length = rng.choice([2_000, 30_000, 300_000, 2_000_000])
            data = b"".join(rng.choices(words, k=length // 12)) + rng.randbytes(length // 3)
            info = tarfile.TarInfo(f"usr/lib/pkg{seed}/d{n // 50}/f{n}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
            written += len(data)
            n += 1
    return buf.getvalue()


def build_and_push(registry: str, size_mb: int, work: Path) -> str:
    """An image of four gzip layers in a store of its own, pushed to ``registry``."""
    service = ImageService(str(work / "source"))
    layers, diff_ids = [], []
    for i in range(4):
        tar = _layer_tar(size_mb * 2 * 1_000_000 // 4, seed=i)
        blob = gzip.compress(tar, 6)
        with service.content.writer() as writer:
            writer.write(blob)
            digest = writer.commit()
        layers.append(Descriptor(media_type=OCI_LAYER_GZIP, digest=digest, size=len(blob)))
        diff_ids.append(Digest.of(tar))
    platform = host_platform()
    config = dump(ImageConfig(architecture=platform.architecture, os=platform.os,
                              rootfs=RootFS(diff_ids=diff_ids)))
    manifest = dump(Manifest(schema_version=2, media_type=OCI_MANIFEST, layers=layers,
                             config=Descriptor(media_type=OCI_CONFIG, digest=Digest.of(config),
                                               size=len(config))))
    ref = f"{registry}/bench/image:1"
    service.add_image(manifest, config, [ref])
    service.push(ref)
    return ref


def timed(func: object) -> float:
    start = time.perf_counter()
    func()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--iterations", type=int, default=5)
    parser.add_argument("--size-mb", type=int, default=200)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pull-bench-") as tmp:
        work = Path(tmp)
        with run_registry(work / "registry") as registry:
            ref = build_and_push(registry.host, options.size_mb, work)
            # The image just built and pushed is still being written back: the first
            # pull's fsyncs would wait for it (~0.2 s on ext4), not for its own writes.
            os.sync()
            samples: dict[str, list[float]] = {"dockyard pull": [], "skopeo copy": []}
            podman = shutil.which("podman")
            if podman:
                samples["podman pull"] = []
            for i in range(options.iterations):
                root, layout = work / f"dy{i}", work / f"oci{i}"
                samples["dockyard pull"].append(timed(lambda root=root: ImageService(
                    str(root), storage_driver="overlay").pull(ref)))
                shutil.rmtree(root, ignore_errors=True)
                samples["skopeo copy"].append(timed(lambda layout=layout: subprocess.run(
                    ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}",
                     f"oci:{layout}:bench"], check=True)))
                shutil.rmtree(layout, ignore_errors=True)
                if podman:
                    samples["podman pull"].append(timed(lambda: subprocess.run(
                        [podman, "pull", "-q", "--tls-verify=false", ref], check=True,
                        stdout=subprocess.DEVNULL)))
                    subprocess.run([podman, "rmi", "-f", ref], check=False,
                                   capture_output=True)
            source = ContentStore(str(work / "source" / "content"))
            extract = _extraction_rate(source, work / "extract")
    medians = {label: statistics.median(times) for label, times in samples.items()}
    reference = medians["skopeo copy"]
    print(f"\n{'':16}{'median':>9}{'vs skopeo':>11}   ({options.iterations} pulls of "
          f"{ref.rpartition('/')[2]}, ~{options.size_mb} MB compressed)")
    for label, median in medians.items():
        print(f"{label:16}{median:8.2f}s{median / reference:10.2f}x")
    print(f"layer extraction (apply_layer, gzip): {extract:.0f} MB/s of uncompressed tar")
    return 0


def _extraction_rate(store: ContentStore, target: Path) -> float:
    total = 0
    elapsed = 0.0
    for blob in store.walk():
        if blob.size < 1_000_000:
            continue  # configs and manifests
        target.mkdir(parents=True, exist_ok=True)
        with store.open(blob.digest) as f:
            start = time.perf_counter()
            _, size = apply_layer(f, str(target))
            elapsed += time.perf_counter() - start
        total += size
        shutil.rmtree(target)
    return total / 1_000_000 / elapsed if elapsed else 0.0


if __name__ == "__main__":
    sys.exit(main())
