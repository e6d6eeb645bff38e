"""The operation name of a span: low-cardinality, so it can key a series.

Most instrumentations name spans well ("GET /users/{id}", "SELECT orders",
"checkout.Cart/AddItem"). HTTP server spans from some libraries are named only
by their method ("GET"); their operation becomes the method plus
``http.route`` when the instrumentation knows the route, else the method plus
the request path with identifiers replaced by placeholders, so that
``/users/1234`` and ``/users/5678`` count as one operation.
"""

from __future__ import annotations

import re
from functools import lru_cache

HTTP_METHODS = frozenset(
    {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT"}
)
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_HEX = re.compile(r"^[0-9a-fA-F]{8,}$")
_HAS_DIGIT = re.compile(r"\d")


def is_method_only(span_name: str) -> bool:
    """Return True if a span name says no more than the HTTP method (or nothing)."""
    return not span_name or span_name.upper() in HTTP_METHODS or span_name == "HTTP"


def template_segment(segment: str) -> str:
    """Return ``segment`` or the placeholder that stands for it.

    All digits -> ``{num}``; a UUID -> ``{uuid}``; 8 or more hex digits ->
    ``{hex}``; any other segment containing a digit -> ``{id}``.
    """
    if not segment:
        return segment
    if segment.isdigit():
        return "{num}"
    if _UUID.match(segment):
        return "{uuid}"
    if _HEX.match(segment):
        return "{hex}"
    if _HAS_DIGIT.search(segment):
        return "{id}"
    return segment


@lru_cache(maxsize=65_536)
def template_path(path: str) -> str:
    """Return the path without its query string, each id segment templated."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    return "/".join(template_segment(segment) for segment in path.split("/"))


def path_of(url_or_target: str) -> str:
    """Return the path part of ``http.target``/``url.path`` or of a full URL."""
    if "://" in url_or_target:
        after_scheme = url_or_target.split("://", 1)[1]
        slash = after_scheme.find("/")
        return after_scheme[slash:] if slash >= 0 else "/"
    return url_or_target


def operation_name(
    span_name: str,
    is_server: bool,
    http_method: str | None,
    http_route: str | None,
    http_path: object,
) -> str:
    """Return the operation of a span (see the module docstring for the rule)."""
    if not is_server or not is_method_only(span_name):
        return span_name
    method = (http_method or span_name or "HTTP").upper()
    if http_route:
        return f"{method} {http_route}"
    if http_path:
        # str(): a path attribute sent as a number or a list is still a path.
        return f"{method} {template_path(path_of(str(http_path)))}"
    return span_name or method
