"""The OCI image-spec models: round trips, schema validity, decode errors, digests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from dockyard.errors import InvalidArgument
from dockyard.images.manifest import ACCEPT, check_config, check_image, verify
from dockyard.oci.image import (
    DOCKER_CONFIG,
    DOCKER_LAYER_FOREIGN_GZIP,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    ContainerConfig,
    Descriptor,
    Digest,
    ImageConfig,
    Index,
    Manifest,
    RootFS,
    chain_ids,
    dump,
    layer_compression,
    load_config,
    load_index,
    load_layout,
    load_manifest,
    parse_any,
)

SCHEMAS = Path("/work/shared/reference/oci-image-spec")


def sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# --- realistic documents ---------------------------------------------------------------

DOCKER_MANIFEST_DOC = {
    "schemaVersion": 2,
    "mediaType": DOCKER_MANIFEST,
    "config": {"mediaType": DOCKER_CONFIG, "digest": sha256("config"), "size": 1457},
    "layers": [
        {"mediaType": DOCKER_LAYER_GZIP, "digest": sha256("layer0"), "size": 2152262},
        {
            "mediaType": DOCKER_LAYER_FOREIGN_GZIP,
            "digest": sha256("layer1"),
            "size": 1024,
            "urls": ["https://mcr.microsoft.com/v2/windows/blobs/" + sha256("layer1")],
        },
    ],
}

OCI_MANIFEST_DOC = {
    "schemaVersion": 2,
    "mediaType": OCI_MANIFEST,
    "config": {"mediaType": OCI_CONFIG, "digest": sha256("oci-config"), "size": 7023},
    "layers": [
        {"mediaType": OCI_LAYER_GZIP, "digest": sha256("l0"), "size": 32654},
        {"mediaType": OCI_LAYER_ZSTD, "digest": sha256("l1"), "size": 16724},
        {"mediaType": OCI_LAYER, "digest": sha256("l2"), "size": 73109},
    ],
    "subject": {"mediaType": OCI_MANIFEST, "digest": sha256("subject"), "size": 7682},
    "annotations": {
        "org.opencontainers.image.created": "2024-05-01T12:00:00Z",
        "org.opencontainers.image.source": "https://github.com/example/app",
    },
}

# An artifact (a signature) in image-spec 1.1 style: empty config, data inlined.
ARTIFACT_DOC = {
    "schemaVersion": 2,
    "mediaType": OCI_MANIFEST,
    "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
    "config": {
        "mediaType": OCI_EMPTY,
        "digest": sha256("{}"),
        "size": 2,
        "data": "e30=",
    },
    "layers": [
        {
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "digest": sha256("bundle"),
            "size": 4321,
        }
    ],
    "subject": {"mediaType": OCI_INDEX, "digest": sha256("index"), "size": 1609},
}

OCI_INDEX_DOC = {
    "schemaVersion": 2,
    "mediaType": OCI_INDEX,
    "manifests": [
        {
            "mediaType": OCI_MANIFEST,
            "digest": sha256("amd64"),
            "size": 1077,
            "platform": {"architecture": "amd64", "os": "linux"},
        },
        {
            "mediaType": OCI_MANIFEST,
            "digest": sha256("arm64"),
            "size": 1077,
            "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
        },
        {
            "mediaType": OCI_MANIFEST,
            "digest": sha256("win"),
            "size": 1077,
            "platform": {
                "architecture": "amd64",
                "os": "windows",
                "os.version": "10.0.20348.2461",
                "os.features": ["win32k"],
            },
        },
        {
            "mediaType": OCI_MANIFEST,
            "digest": sha256("attestation"),
            "size": 839,
            "annotations": {
                "vnd.docker.reference.digest": sha256("amd64"),
                "vnd.docker.reference.type": "attestation-manifest",
            },
            "platform": {"architecture": "unknown", "os": "unknown"},
        },
    ],
    "annotations": {"org.opencontainers.image.ref.name": "1.0"},
}

DOCKER_LIST_DOC = {
    "schemaVersion": 2,
    "mediaType": DOCKER_MANIFEST_LIST,
    "manifests": [
        {
            "mediaType": DOCKER_MANIFEST,
            "digest": sha256("list-amd64"),
            "size": 528,
            "platform": {"architecture": "amd64", "os": "linux"},
        },
        {
            "mediaType": DOCKER_MANIFEST,
            "digest": sha256("list-armv7"),
            "size": 528,
            "platform": {"architecture": "arm", "os": "linux", "variant": "v7"},
        },
        {
            "mediaType": DOCKER_MANIFEST,
            "digest": sha256("list-arm64"),
            "size": 528,
            "platform": {
                "architecture": "arm64",
                "os": "linux",
                "variant": "v8",
                "features": ["sse4"],
            },
        },
    ],
}

# The config `docker build` writes, with the members dockyard models (Docker's extra
# ones are in DOCKER_CONFIG_EXTRA below).
DOCKER_CONFIG_DOC = {
    "architecture": "amd64",
    "os": "linux",
    "created": "2024-04-30T21:52:15.123456789Z",
    "author": "ops@example.com",
    "config": {
        "User": "app:app",
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=b=c"],
        "Entrypoint": ["/docker-entrypoint.sh"],
        "Cmd": ["nginx", "-g", "daemon off;"],
        "Volumes": {"/var/cache/nginx": {}},
        "WorkingDir": "/srv",
        "Labels": {"maintainer": "NGINX Docker Maintainers"},
        "StopSignal": "SIGQUIT",
        "ArgsEscaped": True,
        "Healthcheck": {
            "Test": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
            "Interval": 30000000000,
            "Timeout": 3000000000,
            "StartPeriod": 5000000000,
            "StartInterval": 1000000000,
            "Retries": 3,
        },
        "OnBuild": ["RUN echo child"],
        "Shell": ["/bin/bash", "-c"],
    },
    "rootfs": {"type": "layers", "diff_ids": [sha256("diff0"), sha256("diff1")]},
    "history": [
        {
            "created": "2024-04-10T01:02:03Z",
            "created_by": "/bin/sh -c #(nop) ADD file:abc in / ",
        },
        {
            "created": "2024-04-10T01:02:04Z",
            "created_by": '/bin/sh -c #(nop)  CMD ["bash"]',
            "empty_layer": True,
        },
        {
            "created": "2024-04-30T21:52:15Z",
            "created_by": "RUN /bin/sh -c apt-get update # buildkit",
            "comment": "buildkit.dockerfile.v0",
            "author": "ops@example.com",
        },
    ],
}

OCI_CONFIG_DOC = {
    "created": "2024-05-01T12:00:00Z",
    "architecture": "arm64",
    "variant": "v8",
    "os": "linux",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
    "rootfs": {"type": "layers", "diff_ids": [sha256("d0")]},
}

WINDOWS_CONFIG_DOC = {
    "architecture": "amd64",
    "os": "windows",
    "os.version": "10.0.20348.2461",
    "os.features": ["win32k"],
    "rootfs": {"type": "layers", "diff_ids": []},
}


def canonical(document: dict[str, Any]) -> Any:
    return json.loads(json.dumps(document))


MANIFESTS = [DOCKER_MANIFEST_DOC, OCI_MANIFEST_DOC, ARTIFACT_DOC]
INDEXES = [OCI_INDEX_DOC, DOCKER_LIST_DOC]
CONFIGS = [DOCKER_CONFIG_DOC, OCI_CONFIG_DOC, WINDOWS_CONFIG_DOC]


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("document", MANIFESTS)
def test_manifest_round_trip(document: dict[str, Any]) -> None:
    manifest = load_manifest(json.dumps(document))
    assert json.loads(dump(manifest)) == canonical(document)
    assert load_manifest(dump(manifest, indent=3)) == manifest


@pytest.mark.parametrize("document", INDEXES)
def test_index_round_trip(document: dict[str, Any]) -> None:
    index = load_index(json.dumps(document).encode())
    assert json.loads(dump(index)) == canonical(document)


@pytest.mark.parametrize("document", CONFIGS)
def test_config_round_trip(document: dict[str, Any]) -> None:
    config = load_config(json.dumps(document))
    assert json.loads(dump(config)) == canonical(document)


def test_attribute_names() -> None:
    manifest = load_manifest(json.dumps(OCI_MANIFEST_DOC))
    assert manifest.schema_version == 2
    assert manifest.media_type == OCI_MANIFEST
    assert manifest.config.media_type == OCI_CONFIG
    assert manifest.subject is not None and manifest.subject.size == 7682
    assert [layer.size for layer in manifest.layers] == [32654, 16724, 73109]
    assert load_manifest(json.dumps(ARTIFACT_DOC)).config.data == "e30="

    index = load_index(json.dumps(OCI_INDEX_DOC))
    windows = index.manifests[2].platform
    assert windows is not None
    assert windows.os_version == "10.0.20348.2461"
    assert windows.os_features == ["win32k"]
    assert load_index(json.dumps(DOCKER_LIST_DOC)).manifests[2].platform.features == ["sse4"]

    config = load_config(json.dumps(DOCKER_CONFIG_DOC))
    assert config.config is not None
    assert config.config.exposed_ports == {"80/tcp": {}, "53/udp": {}}
    assert config.config.working_dir == "/srv"
    assert config.config.stop_signal == "SIGQUIT"
    assert config.config.args_escaped is True
    assert config.config.healthcheck is not None
    assert config.config.healthcheck.start_period == 5_000_000_000
    assert config.config.on_build == ["RUN echo child"]
    assert config.config.shell == ["/bin/bash", "-c"]
    assert config.rootfs.diff_ids == [sha256("diff0"), sha256("diff1")]
    assert config.history is not None
    assert config.history[1].empty_layer is True
    assert config.history[2].created_by.startswith("RUN")


def test_docker_extra_members_are_ignored() -> None:
    document = canonical(DOCKER_CONFIG_DOC)
    document["docker_version"] = "20.10.7"
    document["container"] = "3f1c0c6b"
    document["container_config"] = {"Hostname": "3f1c0c6b", "Cmd": ["/bin/sh"]}
    document["config"].update({"Hostname": "", "AttachStdin": False, "Image": sha256("p")})
    assert load_config(json.dumps(document)) == load_config(json.dumps(DOCKER_CONFIG_DOC))


def test_null_members_load_as_absent() -> None:
    document = canonical(OCI_CONFIG_DOC)
    document["config"].update({"Entrypoint": None, "Volumes": None, "Labels": None})
    config = load_config(json.dumps(document))
    assert config.config is not None and config.config.entrypoint is None
    assert json.loads(dump(config)) == canonical(OCI_CONFIG_DOC)


def test_models_built_in_code_encode_the_required_members() -> None:
    config = ImageConfig(architecture="amd64", os="linux", rootfs=RootFS())
    assert json.loads(dump(config)) == {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    descriptor = Descriptor(media_type=OCI_CONFIG, digest=Digest.of(b"{}"), size=2)
    manifest = Manifest(schema_version=2, config=descriptor, layers=[])
    assert json.loads(dump(manifest)) == {
        "schemaVersion": 2,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256("{}"), "size": 2},
        "layers": [],
    }
    assert json.loads(dump(ContainerConfig(working_dir="/", exposed_ports={"80/tcp": {}}))) == {
        "ExposedPorts": {"80/tcp": {}},
        "WorkingDir": "/",
    }


def test_layout_files() -> None:
    assert load_layout(b'{"imageLayoutVersion": "1.0.0"}').image_layout_version == "1.0.0"
    with pytest.raises(InvalidArgument, match=r"invalid oci-layout: .*\$\.imageLayoutVersion"):
        load_layout(b'{"imageLayoutVersion": "2.0.0"}')
    # index.json of an image layout, as skopeo writes it: no mediaType, no platform
    index_json = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": sha256("m"),
                "size": 406,
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }
        ],
    }
    index = load_index(json.dumps(index_json))
    assert isinstance(index, Index)
    assert json.loads(dump(index)) == index_json


# --- validation against the image-spec's JSON schemas ---------------------------------


@pytest.fixture(scope="module")
def validate():
    if not SCHEMAS.is_dir():
        pytest.skip(f"the image-spec schemas are not at {SCHEMAS}")
    from jsonschema import Draft4Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    def retrieve(uri: str) -> Resource:
        # The schemas $ref each other by file name relative to ids that are not URLs of
        # these files: serve every such URI from the local copy of the same name.
        path = SCHEMAS / uri.rsplit("/", 1)[-1]
        return Resource.from_contents(json.loads(path.read_text()), default_specification=DRAFT4)

    registry = Registry(retrieve=retrieve)

    def check(document: Any, schema_file: str) -> None:
        schema = json.loads((SCHEMAS / schema_file).read_text())
        Draft4Validator(schema, registry=registry).validate(document)

    return check


@pytest.mark.parametrize("document", MANIFESTS)
def test_dumped_manifests_are_schema_valid(validate, document: dict[str, Any]) -> None:
    validate(json.loads(dump(load_manifest(json.dumps(document)))), "image-manifest-schema.json")


@pytest.mark.parametrize("document", INDEXES)
def test_dumped_indexes_are_schema_valid(validate, document: dict[str, Any]) -> None:
    validate(json.loads(dump(load_index(json.dumps(document)))), "image-index-schema.json")


@pytest.mark.parametrize("document", CONFIGS)
def test_dumped_configs_are_schema_valid(validate, document: dict[str, Any]) -> None:
    validate(json.loads(dump(load_config(json.dumps(document)))), "config-schema.json")


def test_dumped_layout_and_descriptor_are_schema_valid(validate) -> None:
    validate(
        json.loads(dump(load_layout('{"imageLayoutVersion":"1.0.0"}'))), "image-layout-schema.json"
    )
    descriptor = load_manifest(json.dumps(OCI_MANIFEST_DOC)).layers[0]
    validate(json.loads(dump(descriptor)), "content-descriptor.json")


def test_the_schema_check_itself_catches_errors(validate) -> None:
    from jsonschema import ValidationError

    broken = canonical(OCI_MANIFEST_DOC)
    broken["config"]["digest"] = "not a digest"
    with pytest.raises(ValidationError):
        validate(broken, "image-manifest-schema.json")


# --- invalid documents ----------------------------------------------------------------


def _with(document: dict[str, Any], path: str, value: Any) -> str:
    """``document`` as JSON with the member at ``path`` (keys and list indexes joined
    by "/", as keys may hold dots) set to ``value``, or deleted if ``value`` is ``...``."""
    copy = canonical(document)
    *parents, last = path.split("/")
    node = copy
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is ...:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return json.dumps(copy)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{", "invalid image manifest: "),
        ("[]", "invalid image manifest: expected a JSON object at $"),
        ('"x"', "invalid image manifest: expected a JSON object at $"),
        (_with(OCI_MANIFEST_DOC, "schemaVersion", 3), "at $.schemaVersion"),
        (_with(OCI_MANIFEST_DOC, "schemaVersion", "2"), "at $.schemaVersion"),
        (_with(OCI_MANIFEST_DOC, "schemaVersion", ...), "missing required field 'schemaVersion'"),
        (_with(OCI_MANIFEST_DOC, "config", ...), "missing required field 'config'"),
        (_with(OCI_MANIFEST_DOC, "layers", ...), "missing required field 'layers'"),
        (_with(OCI_MANIFEST_DOC, "layers", {}), "at $.layers"),
        (
            _with(OCI_MANIFEST_DOC, "config/digest", ...),
            "missing required field 'digest' at $.config",
        ),
        (_with(OCI_MANIFEST_DOC, "config/digest", "sha256:abc"), "at $.config.digest"),
        (_with(OCI_MANIFEST_DOC, "layers/1/digest", "md5:" + "0" * 32), "at $.layers[1].digest"),
        (_with(OCI_MANIFEST_DOC, "layers/1/digest", sha256("x").upper()), "at $.layers[1].digest"),
        (_with(OCI_MANIFEST_DOC, "layers/0/size", -1), "at $.layers[0].size"),
        (_with(OCI_MANIFEST_DOC, "layers/0/size", "12"), "at $.layers[0].size"),
        (_with(OCI_MANIFEST_DOC, "layers/2/mediaType", "tar"), "at $.layers[2].mediaType"),
        (_with(OCI_MANIFEST_DOC, "annotations/x", 1), "at $.annotations"),
        (_with(OCI_MANIFEST_DOC, "mediaType", OCI_INDEX), "is not one of"),
        (_with(OCI_MANIFEST_DOC, "subject/size", None), "at $.subject.size"),
    ],
)
def test_invalid_manifests(data: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        load_manifest(data)
    assert message in str(caught.value)
    assert str(caught.value).startswith("invalid image manifest: ")
    assert "\n" not in str(caught.value) and "`" not in str(caught.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_with(OCI_INDEX_DOC, "manifests", ...), "missing required field 'manifests'"),
        (_with(OCI_INDEX_DOC, "manifests/1/platform/os", ...), "at $.manifests[1].platform"),
        (
            _with(OCI_INDEX_DOC, "manifests/2/platform/os.features", "x"),
            "at $.manifests[2].platform.os.features",
        ),
        (_with(DOCKER_LIST_DOC, "mediaType", DOCKER_MANIFEST), "is not one of"),
    ],
)
def test_invalid_indexes(data: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^invalid image index: ") as caught:
        load_index(data)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_with(DOCKER_CONFIG_DOC, "rootfs", ...), "missing required field 'rootfs'"),
        (_with(DOCKER_CONFIG_DOC, "architecture", ...), "missing required field 'architecture'"),
        (_with(DOCKER_CONFIG_DOC, "rootfs/type", "layer"), "at $.rootfs.type"),
        (_with(DOCKER_CONFIG_DOC, "rootfs/diff_ids/1", "sha256:zz"), "at $.rootfs.diff_ids[1]"),
        (_with(DOCKER_CONFIG_DOC, "config/Env", "PATH=/bin"), "at $.config.Env"),
        (_with(DOCKER_CONFIG_DOC, "config/ExposedPorts", ["80/tcp"]), "at $.config.ExposedPorts"),
        (
            _with(DOCKER_CONFIG_DOC, "config/Healthcheck/Retries", "3"),
            "at $.config.Healthcheck.Retries",
        ),
        (_with(DOCKER_CONFIG_DOC, "history/1/empty_layer", "yes"), "at $.history[1].empty_layer"),
    ],
)
def test_invalid_configs(data: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^invalid image config: ") as caught:
        load_config(data)
    assert message in str(caught.value)


# --- parse_any ------------------------------------------------------------------------

SCHEMA1_DOC = {
    "schemaVersion": 1,
    "name": "library/busybox",
    "tag": "latest",
    "architecture": "amd64",
    "fsLayers": [{"blobSum": sha256("b")}],
    "history": [{"v1Compatibility": "{}"}],
}


@pytest.mark.parametrize(
    ("document", "media_type", "kind"),
    [
        (DOCKER_MANIFEST_DOC, DOCKER_MANIFEST, Manifest),
        (OCI_MANIFEST_DOC, OCI_MANIFEST, Manifest),
        (OCI_MANIFEST_DOC, None, Manifest),
        (OCI_INDEX_DOC, OCI_INDEX, Index),
        (DOCKER_LIST_DOC, DOCKER_MANIFEST_LIST, Index),
        (DOCKER_LIST_DOC, f"{DOCKER_MANIFEST_LIST}; charset=utf-8", Index),
        (DOCKER_LIST_DOC, "", Index),
    ],
)
def test_parse_any(document: dict[str, Any], media_type: str | None, kind: type) -> None:
    parsed = parse_any(json.dumps(document), media_type)
    assert isinstance(parsed, kind)
    assert json.loads(dump(parsed)) == canonical(document)


def test_parse_any_tells_documents_without_media_type_apart() -> None:
    manifest = canonical(OCI_MANIFEST_DOC)
    del manifest["mediaType"]
    index = canonical(OCI_INDEX_DOC)
    del index["mediaType"]
    assert isinstance(parse_any(json.dumps(manifest)), Manifest)
    assert isinstance(parse_any(json.dumps(index)), Index)
    # the served type decides when the document is silent
    assert isinstance(parse_any(json.dumps(index), OCI_INDEX), Index)
    with pytest.raises(InvalidArgument, match="missing required field 'manifests'"):
        parse_any(json.dumps(manifest), OCI_INDEX)


SCHEMA1_REFUSAL = "schema 1 manifests are not supported: push the image again with a current client"


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (json.dumps(SCHEMA1_DOC), None),
        (json.dumps(SCHEMA1_DOC), "application/vnd.docker.distribution.manifest.v1+prettyjws"),
        (json.dumps(SCHEMA1_DOC), "application/json"),
        ("{}", "application/vnd.docker.distribution.manifest.v1+json"),
        (
            json.dumps(
                {**SCHEMA1_DOC, "mediaType": "application/vnd.docker.distribution.manifest.v1+json"}
            ),
            None,
        ),
    ],
)
def test_schema1_is_refused(data: str, media_type: str | None) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_any(data, media_type)
    assert str(caught.value) == SCHEMA1_REFUSAL
    with pytest.raises(InvalidArgument, match=r"^schema 1 manifests are not supported"):
        load_manifest(json.dumps(SCHEMA1_DOC))


@pytest.mark.parametrize(
    ("data", "media_type", "message"),
    [
        (json.dumps(OCI_MANIFEST_DOC), "text/html", "unsupported manifest media type 'text/html'"),
        (json.dumps(OCI_MANIFEST_DOC), OCI_INDEX, "served as"),
        (json.dumps(DOCKER_LIST_DOC), OCI_INDEX, "served as"),
        (
            _with(OCI_MANIFEST_DOC, "mediaType", "application/x-foo"),
            None,
            "unsupported manifest media type",
        ),
        (_with(OCI_MANIFEST_DOC, "mediaType", 7), None, "expected a string at $.mediaType"),
        ("<html>", OCI_MANIFEST, "invalid manifest: "),
        ("[1, 2]", None, "expected a JSON object"),
    ],
)
def test_parse_any_refuses(data: str, media_type: str | None, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_any(data, media_type)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


# --- digests, chain IDs, media types -----------------------------------------------------


def test_digest() -> None:
    data = b'{"architecture":"amd64"}'
    digest = Digest.of(data)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert (digest.algorithm, digest.encoded) == ("sha256", hashlib.sha256(data).hexdigest())
    assert Digest.of(data, "sha512") == "sha512:" + hashlib.sha512(data).hexdigest()
    assert Digest(str(digest)) == digest
    assert {digest: 1}[str(digest)] == 1  # hashes as its text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected <algorithm>:<hex>"),
        ("abc", "expected <algorithm>:<hex>"),
        ("sha256:" + "a" * 63, "expected 64 lowercase hex digits"),
        ("sha256:" + "a" * 65, "expected 64 lowercase hex digits"),
        ("sha256:" + "A" * 64, "expected 64 lowercase hex digits"),
        ("sha256:" + "g" * 64, "expected 64 lowercase hex digits"),
        ("sha512:" + "a" * 64, "expected 128 lowercase hex digits"),
        ("sha384:" + "a" * 96, "unsupported digest algorithm 'sha384'"),
        ("SHA256:" + "a" * 64, "unsupported digest algorithm 'SHA256'"),
    ],
)
def test_invalid_digests(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        Digest(text)


def test_digest_of_refuses_other_algorithms() -> None:
    with pytest.raises(InvalidArgument, match="unsupported digest algorithm 'md5'"):
        Digest.of(b"", "md5")


def test_chain_ids() -> None:
    diff_ids = [sha256("layer a"), sha256("layer b"), sha256("layer c")]
    second = "sha256:" + hashlib.sha256(f"{diff_ids[0]} {diff_ids[1]}".encode()).hexdigest()
    third = "sha256:" + hashlib.sha256(f"{second} {diff_ids[2]}".encode()).hexdigest()
    assert chain_ids(diff_ids) == [diff_ids[0], second, third]
    assert chain_ids(diff_ids[:1]) == diff_ids[:1]
    assert chain_ids([]) == []
    with pytest.raises(InvalidArgument, match="digest"):
        chain_ids([diff_ids[0], "sha256:nope"])


@pytest.mark.parametrize(
    ("media_type", "compression"),
    [
        (OCI_LAYER, None),
        (OCI_LAYER_GZIP, "gzip"),
        (OCI_LAYER_ZSTD, "zstd"),
        (OCI_LAYER_NONDISTRIBUTABLE_ZSTD, "zstd"),
        (DOCKER_LAYER_GZIP, "gzip"),
        (DOCKER_LAYER_FOREIGN_GZIP, "gzip"),
    ],
)
def test_layer_compression(media_type: str, compression: str | None) -> None:
    assert layer_compression(media_type) == compression


def test_layer_compression_refuses_other_types() -> None:
    with pytest.raises(InvalidArgument, match="unsupported layer media type"):
        layer_compression(OCI_CONFIG)


# --- dockyard.images.manifest: what the engine asks of an image ----------------------------


def test_check_image() -> None:
    check_image(load_manifest(json.dumps(DOCKER_MANIFEST_DOC)))
    check_image(load_manifest(json.dumps(OCI_MANIFEST_DOC)))
    with pytest.raises(InvalidArgument, match="not a container image: the config media type"):
        check_image(load_manifest(json.dumps(ARTIFACT_DOC)))
    odd_layer = _with(OCI_MANIFEST_DOC, "layers/1/mediaType", "application/x-tar")
    with pytest.raises(InvalidArgument, match=r"'application/x-tar' at \$\.layers\[1\]"):
        check_image(load_manifest(odd_layer))


def test_check_config() -> None:
    manifest = load_manifest(json.dumps(DOCKER_MANIFEST_DOC))
    check_config(manifest, load_config(json.dumps(DOCKER_CONFIG_DOC)))
    with pytest.raises(InvalidArgument, match="lists 1 layers but the manifest has 2"):
        check_config(manifest, load_config(json.dumps(OCI_CONFIG_DOC)))


def test_verify() -> None:
    data = json.dumps(OCI_MANIFEST_DOC).encode()
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    assert verify(data, good) == good
    assert verify(data, "sha512:" + hashlib.sha512(data).hexdigest()).algorithm == "sha512"
    with pytest.raises(InvalidArgument, match=f"digest mismatch: expected {good}, got"):
        verify(data + b" ", good)
    with pytest.raises(InvalidArgument, match="invalid sha256 digest"):
        verify(data, "sha256:abc")


def test_accept_prefers_indexes() -> None:
    assert ACCEPT[:2] == (OCI_INDEX, DOCKER_MANIFEST_LIST)
    assert set(ACCEPT) == {OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST}
