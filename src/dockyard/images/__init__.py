"""Images: references, manifests, indexes and configs, platform selection.

``reference`` parses and normalises image references the way Docker does, ``platform``
picks the manifest of an index that suits a platform the way containerd does, and
``manifest`` checks what a manifest asks of the engine before anything is fetched. The
package itself imports nothing, so that resolving a reference does not pay for the
registry client.
"""
