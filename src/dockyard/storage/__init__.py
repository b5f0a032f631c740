"""Storage: content-addressed blobs, snapshotters and layer tars.

    content     ``ContentStore``: blobs by digest under ``ROOT/blobs/<alg>/<hex>``
    snapshots   ``Snapshotter`` (containerd's model: prepare / view / commit / mounts /
                remove / stat / walk / usage; and stage / adopt, to commit a layer
                unpacked apart from its parents), ``Mount``, ``choose()``; drivers
                ``overlay`` (kernel overlayfs) and ``vfs`` (a full copy per snapshot)
    layers      ``apply_layer`` (a layer tar, compressed or not, into a directory, every
                path resolved inside it) and ``diff_layer`` (the reverse)
    streams     ``decompressed`` / ``compression_of`` (gzip and zstd, by media type or
                magic), ``HashingReader`` / ``HashingWriter``
    durable     ``replace_file`` (atomic and fsynced), ``fsync_dir``, ``pid_alive``

Nothing here knows what an image or a container is: the callers name blobs by digest
and snapshots by opaque keys.
"""
