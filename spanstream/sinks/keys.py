"""Safe encoding of customer-controlled names inside S3 and DynamoDB keys.

Tenant, service and operation names come from span data, so they may hold
``/``, ``..``, ``=``, ``#``, control characters or megabytes of text. Each name
becomes one key *component* by percent-encoding every byte of its UTF-8 form
outside ``[A-Za-z0-9_-]`` (``.`` included, so no component is ever ``.`` or
``..``). Components are joined with ``#``, which an encoded component never
holds, so the joined key of one tuple of names is never the key of another.

Two more rules keep the encoding injective and the keys within AWS limits:

* the empty name encodes as ``~`` (``~`` itself encodes as ``%7E``);
* an encoding longer than `MAX_COMPONENT_CHARS` is cut and followed by ``~``
  and 32 hex digits of the name's SHA-256, so two long names differ in their
  suffix even when their first few hundred characters agree.

Names of letters, digits, ``-`` and ``_`` encode as themselves, which keeps
the keys of ordinary tenants readable (``tenant=acme``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from urllib.parse import unquote

logger = logging.getLogger(__name__)

SEPARATOR = "#"
EMPTY = "~"
HASH_MARK = "~"
#: Longest encoded component; S3 keys allow 1024 bytes, DynamoDB sort keys
#: 1024 and partition keys 2048, and a key holds up to four components.
MAX_COMPONENT_CHARS = 200
_HASH_HEX_CHARS = 32
_UNRESERVED = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)
_BYTE_FORMS = tuple(
    chr(byte) if byte in _UNRESERVED else f"%{byte:02X}" for byte in range(256)
)
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
#: Names repeat from flush to flush (tenants, services, operations), so
#: their encodings are remembered: at most this many, each of a name of at
#: most `CACHED_NAME_CHARS` characters, which bounds the cache's memory.
ENCODING_CACHE_SIZE = 4_096
CACHED_NAME_CHARS = 256


def encode_component(name: str) -> str:
    """Return ``name`` as one key component: no ``/``, ``#``, ``.`` or controls.

    The result is at most `MAX_COMPONENT_CHARS` characters; distinct names
    give distinct components (up to a SHA-256 collision for capped names).
    """
    if len(name) <= CACHED_NAME_CHARS:
        return _cached_encoding(name)
    return _encoding(name)


def _encoding(name: str) -> str:
    if _PLAIN.fullmatch(name) and len(name) <= MAX_COMPONENT_CHARS:
        return name
    if not name:
        return EMPTY
    encoded = "".join(
        _BYTE_FORMS[byte] for byte in name.encode("utf-8", "surrogatepass")
    )
    if len(encoded) <= MAX_COMPONENT_CHARS:
        return encoded
    return _capped(name, encoded)


_cached_encoding = functools.lru_cache(maxsize=ENCODING_CACHE_SIZE)(_encoding)


def _capped(name: str, encoded: str) -> str:
    keep = MAX_COMPONENT_CHARS - 1 - _HASH_HEX_CHARS
    # Never cut a %XX triple in two: the cut prefix must stay decodable.
    percent = encoded.rfind("%", keep - 2, keep)
    if percent != -1:
        keep = percent
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{encoded[:keep]}{HASH_MARK}{digest[:_HASH_HEX_CHARS]}"


def join_key(*names: str) -> str:
    """Return the names encoded with `encode_component` and joined by ``#``."""
    return SEPARATOR.join(encode_component(name) for name in names)


def is_capped(component: str) -> bool:
    """Return True if ``component`` was cut to fit and cannot be decoded."""
    return len(component) > 1 and HASH_MARK in component


def decode_component(component: str) -> str:
    """Return the name that `encode_component` turned into ``component``.

    Raises ValueError for a capped component (its tail is a hash) or for text
    `encode_component` never yields.
    """
    if component == EMPTY:
        return ""
    if is_capped(component):
        raise ValueError(f"component was capped and cannot be decoded: {component!r}")
    if (
        encode_component(name := unquote(component, errors="surrogatepass"))
        != component
    ):
        raise ValueError(f"not an encoded key component: {component!r}")
    return name
