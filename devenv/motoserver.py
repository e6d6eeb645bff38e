"""moto's server with DynamoDB's conditional writes made atomic, as on AWS.

moto's server is threaded, and its DynamoDB backend checks a write's
condition and then stores the item without a lock, so two conditional puts
that read the same ``version`` can both succeed when their threads
interleave: a lost update that DynamoDB itself never allows. spanstream's
aggregate writer relies on that guarantee (read, merge, put on condition
``version = :read``), so against unpatched moto several writers of one busy
item lose counts now and then (seen with 8 concurrent writers: two puts
stored the same version in 2 of 4 runs, and one run lost 2 % of the counts).

This entry point serialises every DynamoDB write of the backend (put,
update, delete, transactions, batch writes) under one lock, then runs
``moto.server`` with the same arguments. Reads are left concurrent: each
sees one item or the next, never a half-written one. `devenv.emulators`
starts this instead of ``python -m moto.server``.

It also keeps connections open between requests, as AWS endpoints do.
Werkzeug's server answers every request with ``Connection: close``, because
it cannot tell whether the application read the whole body before the next
request line. So every call of a client opened a new TCP connection and
moto a new thread; under load, waiting for moto's accept loop took a large
share of each DynamoDB call. `KeepAliveRequestHandler` reads a request's
body whole before moto sees it (a body with a Content-Length, or none), so
the stream is always at the next request line; a chunked body still closes
the connection after its response.
"""

from __future__ import annotations

import functools
import io
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any

import moto.server
import werkzeug.serving
from moto.dynamodb.models import DynamoDBBackend
from moto.moto_server.werkzeug_app import MotoRequestHandler

#: The backend's methods that change items.
WRITES = (
    "put_item",
    "update_item",
    "delete_item",
    "transact_write_items",
    "batch_write_item",
)

_WRITE_LOCK = threading.RLock()


def _serialised(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _WRITE_LOCK:
            return method(*args, **kwargs)

    return locked


def make_writes_atomic() -> None:
    """Serialise the DynamoDB backend's writes (idempotent)."""
    for name in WRITES:
        method = getattr(DynamoDBBackend, name, None)
        if method is None or getattr(method, "_spanstream_serialised", False):
            continue
        locked = _serialised(method)
        locked._spanstream_serialised = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, locked)


_REQUEST = threading.local()


class _NoDrainSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Werkzeug's selector for the drain after a response; finds nothing
    to drain once the request's body was read whole: what is left on the
    connection is the client's next request."""

    def select(self, timeout: float | None = None) -> list[Any]:
        if getattr(_REQUEST, "body_read", False):
            return []
        return super().select(timeout)


class KeepAliveRequestHandler(MotoRequestHandler):
    """moto's request handler, keeping the connection open after a response
    when the request's body has been read whole (see the module docstring)."""

    _body_read = False

    def setup(self) -> None:
        super().setup()
        # The status line, headers and body go out in separate writes: on a
        # kept connection, Nagle's algorithm would hold each response's last
        # write until the client's delayed ACK (about 40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def parse_request(self) -> bool:
        # Until this request's body is read, an answer (an error about the
        # request line, say) closes the connection.
        self._body_read = _REQUEST.body_read = False
        return bool(super().parse_request())

    def make_environ(self) -> dict[str, Any]:
        environ = super().make_environ()
        chunked = "wsgi.input_terminated" in environ
        length = environ.get("CONTENT_LENGTH") or "0"
        self._body_read = _REQUEST.body_read = not chunked and length.isdigit()
        if self._body_read:
            environ["wsgi.input"] = io.BytesIO(self.rfile.read(int(length)))
        return environ

    def send_header(self, keyword: str, value: str) -> None:
        if self._body_read and keyword.lower() == "connection" and value == "close":
            return
        super().send_header(keyword, value)


class _Selectors:
    """The ``selectors`` module as werkzeug's server sees it."""

    DefaultSelector = _NoDrainSelector
    EVENT_READ = selectors.EVENT_READ


def main() -> None:
    make_writes_atomic()
    werkzeug.serving.selectors = _Selectors()  # type: ignore[assignment]
    moto.server.MotoRequestHandler = KeepAliveRequestHandler  # type: ignore[misc]
    moto.server.main()


if __name__ == "__main__":
    main()
