"""What every OCI document model shares: the base class and JSON (de)serialisation.

Errors are one line that names the document and the JSON path of the bad value, the
way msgspec reports it without its markup.
"""

# No `from __future__ import annotations`, for the reason given in dockyard.oci.runtime.
import re
from typing import Any, TypeVar

import msgspec

from dockyard.errors import InvalidArgument

__all__ = ["Document", "convert", "decode", "dump"]


class Document(
    msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel", repr_omit_defaults=True
):
    """Base of every model: camelCase keys, optional members omitted when unset."""


_D = TypeVar("_D", bound=Document)

# msgspec says "Expected `int`, got `str` - at `$.process.user.uid`"; users get the same
# facts on one line without the markup.
_AT_PATH = re.compile(r" - at `(\$[^`]*)`$")
_FIELD_NAME = re.compile(r"field `([^`]*)`")


def _invalid_document(what: str, exc: msgspec.DecodeError) -> InvalidArgument:
    message = _FIELD_NAME.sub(r"field '\1'", str(exc))
    message = _AT_PATH.sub(r" at \1", message).replace("`", "")
    return InvalidArgument(f"invalid {what}: {message}")


def decode(data: bytes | str, kind: type[_D], what: str) -> _D:
    """Decode JSON text into ``kind``; ``what`` names the document in the error line."""
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError too
        raise _invalid_document(what, exc) from None


def convert(obj: Any, kind: type[_D], what: str) -> _D:
    """Build a model from already-parsed JSON (dicts, lists...), checking types the way
    ``decode`` does; ``what`` names the document in the error line."""
    try:
        return msgspec.convert(obj, type=kind)
    except msgspec.ValidationError as exc:
        raise _invalid_document(what, exc) from None


def _encode_other(obj: Any) -> Any:
    # msgspec encodes str itself but not its subclasses (such as a Digest).
    if isinstance(obj, str):
        return str(obj)
    raise NotImplementedError(f"cannot encode {type(obj).__name__} as JSON")


_ENCODER = msgspec.json.Encoder(enc_hook=_encode_other)


def dump(obj: Document, *, indent: int = 0) -> bytes:
    """Encode a model as JSON; ``indent`` > 0 pretty-prints it like ``runc spec``."""
    encoded = _ENCODER.encode(obj)
    return msgspec.json.format(encoded, indent=indent) if indent else encoded
