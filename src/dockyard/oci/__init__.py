"""Typed models of the OCI documents, with JSON (de)serialisation and validation.

``dockyard.oci.runtime`` holds the runtime-spec documents (``config.json``, ``state``,
``features``). The package itself imports nothing, so that importing one kind of
document does not pay for the others.
"""
