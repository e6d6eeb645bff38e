"""A fault-injecting HTTP/1.1 reverse proxy on loopback, for chaos tests.

`FaultProxy` listens on a free port of 127.0.0.1 in front of one upstream
endpoint (an emulator's plain-HTTP URL) and forwards every request to it,
except that, with probability ``FaultPlan.rate`` drawn from a seeded
generator, it does one of the `FaultKind` things instead:

* ``throttle``, ``500``, ``503``: answer an error in the protocol of the
  request's service without forwarding, so the upstream never applied it.
  DynamoDB and Kinesis speak JSON (HTTP 400 with ``__type``
  ``ProvisionedThroughputExceededException`` or ``ThrottlingException``;
  5xx with ``InternalServerError``/``InternalFailure``/``ServiceUnavailable``),
  S3 speaks REST-XML (503 ``SlowDown``, 500 ``InternalError``, 503
  ``ServiceUnavailable``);
* ``reset``: read the request, then close the connection with a TCP reset
  without forwarding or answering;
* ``lost-response``: forward the request, read the upstream's answer, then
  reset the connection instead of answering. The write *was* applied and the
  client cannot know: its retry applies it again, which only idempotent
  writes survive;
* ``slow``: wait a while, then forward.

A request's service is the prefix of its ``X-Amz-Target`` header (JSON
protocols), else the service of its SigV4 credential scope (S3). Requests of
services outside ``FaultPlan.services`` are always forwarded unchanged.
`FaultProxy.counts` says what was done, per service and fault kind, so that
a test can assert that faults really happened.

One thread serves each client connection, with its own keep-alive
connection to the upstream: this is for tests on one machine, not for load.
"""

from __future__ import annotations

import contextlib
import enum
import http.client
import json
import logging
import random
import re
import selectors
import socket
import struct
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from devenv.ports import LOOPBACK_HOST

logger = logging.getLogger(__name__)

FAULTABLE_SERVICES = frozenset({"dynamodb", "kinesis", "s3"})
MAX_LINE_BYTES = 65_536
UPSTREAM_TIMEOUT_SECS = 60.0
_ACCEPT_POLL_SECS = 0.1
_STOP_JOIN_SECS = 5.0
#: Headers that describe one hop's connection, never forwarded as they are.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "content-length",
    }
)
_JSON_TARGET_PREFIXES = {"DynamoDB_": "dynamodb", "Kinesis_": "kinesis"}
_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_JSON_NAMESPACES = {
    "dynamodb": "com.amazonaws.dynamodb.v20120810",
    "kinesis": "com.amazonaws.kinesis.v20131202",
}
_JSON_CONTENT_TYPES = {
    "dynamodb": "application/x-amz-json-1.0",
    "kinesis": "application/x-amz-json-1.1",
}
_THROTTLING_CODES = ("ProvisionedThroughputExceededException", "ThrottlingException")
_JSON_500_CODES = {"dynamodb": "InternalServerError", "kinesis": "InternalFailure"}


class FaultKind(enum.StrEnum):
    """What the proxy does to a faulted request."""

    THROTTLE = "throttle"
    ERROR_500 = "500"
    ERROR_503 = "503"
    RESET = "reset"
    LOST_RESPONSE = "lost-response"
    SLOW = "slow"


#: The kinds answered by the proxy itself: the upstream never sees the request.
ANSWERED_KINDS = frozenset(
    {FaultKind.THROTTLE, FaultKind.ERROR_500, FaultKind.ERROR_503}
)


@dataclass(frozen=True)
class FaultPlan:
    """Which requests are faulted, and how.

    ``rate``: probability that a request of one of ``services`` (and of
    ``operations``, if given: ``"PutItem"``, ``"PutObject"``) is faulted;
    the kind is then picked uniformly from ``kinds``. ``max_faults`` stops
    faulting after that many (None: never). ``slow_secs``: the range a slow
    response is delayed by. ``seed`` seeds the generator; requests of
    concurrent connections still arrive in no fixed order. Raises
    ValueError for a rate outside [0, 1], no kinds, a bad range or count.
    """

    rate: float = 0.0
    kinds: tuple[FaultKind, ...] = tuple(FaultKind)
    seed: int = 0
    slow_secs: tuple[float, float] = (0.05, 0.3)
    services: frozenset[str] = FAULTABLE_SERVICES
    operations: frozenset[str] | None = None
    max_faults: int | None = None

    def applies_to(self, request: ProxiedRequest) -> bool:
        """Return True if ``request`` may be faulted under this plan."""
        return request.service in self.services and (
            self.operations is None or request.operation in self.operations
        )

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be within [0, 1], got {self.rate!r}")
        if not self.kinds:
            raise ValueError("a fault plan needs at least one fault kind")
        low, high = self.slow_secs
        if not 0.0 <= low <= high:
            raise ValueError(f"slow_secs must be (low, high), got {self.slow_secs!r}")
        if self.max_faults is not None and self.max_faults < 0:
            raise ValueError(f"max_faults must be >= 0, got {self.max_faults!r}")
        unknown = self.services - FAULTABLE_SERVICES
        if unknown:
            raise ValueError(
                f"cannot fault {sorted(unknown)!r}: only {sorted(FAULTABLE_SERVICES)!r}"
            )


@dataclass(frozen=True)
class ProxiedRequest:
    """One request as the proxy read it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    service: str
    operation: str

    def header(self, name: str) -> str:
        """Return the first value of header ``name`` (any case), or ""."""
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), "")

    @property
    def wants_close(self) -> bool:
        return self.header("Connection").lower() == "close"


@dataclass
class FaultCounts:
    """What one or more proxies did; add two with ``+``.

    ``requests`` and ``forwarded`` count by service; ``faults`` by
    (service, kind). A slow or lost-response request is both forwarded and
    faulted. ``upstream_errors``: requests the upstream failed to answer
    (answered 502).
    """

    requests: Counter[str] = field(default_factory=Counter)
    forwarded: Counter[str] = field(default_factory=Counter)
    faults: Counter[tuple[str, FaultKind]] = field(default_factory=Counter)
    operations: Counter[tuple[str, str]] = field(default_factory=Counter)
    upstream_errors: int = 0

    def __add__(self, other: FaultCounts) -> FaultCounts:
        return FaultCounts(
            self.requests + other.requests,
            self.forwarded + other.forwarded,
            self.faults + other.faults,
            self.operations + other.operations,
            self.upstream_errors + other.upstream_errors,
        )

    def copy(self) -> FaultCounts:
        return self + FaultCounts()

    def by_kind(self) -> Counter[FaultKind]:
        """Return the number of faults of each kind, over all services."""
        counts: Counter[FaultKind] = Counter()
        for (_, kind), count in self.faults.items():
            counts[kind] += count
        return counts

    def by_service(self) -> Counter[str]:
        """Return the number of faults of each service, over all kinds."""
        counts: Counter[str] = Counter()
        for (service, _), count in self.faults.items():
            counts[service] += count
        return counts

    @property
    def total_faults(self) -> int:
        return sum(self.faults.values())

    def summary(self) -> str:
        """Return a one-line account: requests, faults by kind and by service."""
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind().items()))
        services = ", ".join(
            f"{s} {self.by_service()[s]}/{n}" for s, n in sorted(self.requests.items())
        )
        return (
            f"{sum(self.requests.values())} requests, {self.total_faults} faulted "
            f"({kinds}); faulted/requests by service: {services}; "
            f"{self.upstream_errors} upstream errors"
        )


class FaultProxy:
    """A reverse proxy on 127.0.0.1 in front of ``upstream_url``, injecting faults.

    Use as a context manager, or call `start` and `stop`; `endpoint_url` is
    where clients should go. ``plan`` may be replaced while it runs (a
    request uses the plan of when it arrived).
    """

    def __init__(self, upstream_url: str, plan: FaultPlan | None = None) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(
                f"the fault proxy forwards plain HTTP only, got {upstream_url!r}"
            )
        self.upstream_url = upstream_url
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or 80
        self._plan = plan or FaultPlan()
        self._rng = random.Random(self._plan.seed)
        self._faults_of_plan = 0
        self._lock = threading.Lock()
        self._counts = FaultCounts()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._connections: dict[threading.Thread, socket.socket] = {}
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        """The URL clients use instead of ``upstream_url``."""
        return f"http://{LOOPBACK_HOST}:{self.port}"

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    @plan.setter
    def plan(self, plan: FaultPlan) -> None:
        """Fault from now on as ``plan`` says (its generator and count start anew)."""
        with self._lock:
            self._plan = plan
            self._rng = random.Random(plan.seed)
            self._faults_of_plan = 0

    @property
    def counts(self) -> FaultCounts:
        """Return a copy of what the proxy did so far."""
        with self._lock:
            return self._counts.copy()

    def start(self) -> Self:
        """Listen on a free loopback port and serve in background threads.

        Raises RuntimeError if already started, OSError if it cannot listen.
        """
        if self._listener is not None:
            raise RuntimeError("fault proxy already started")
        self._stopping.clear()
        listener = socket.create_server((LOOPBACK_HOST, 0))
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"faultproxy-{self.port}", daemon=True
        )
        self._acceptor.start()
        logger.info(
            "fault proxy %s -> %s (rate %.2f, kinds %s)",
            self.endpoint_url,
            self.upstream_url,
            self._plan.rate,
            ",".join(self._plan.kinds),
        )
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection and join the threads; never raise."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(_STOP_JOIN_SECS)
        listener.close()
        with self._lock:
            connections = dict(self._connections)
        for sock in connections.values():
            _shutdown(sock)
        for thread in connections:
            thread.join(_STOP_JOIN_SECS)
        logger.info(
            "fault proxy %s stopped: %s", self.endpoint_url, self.counts.summary()
        )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- serving -----------------------------------------------------------
    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            while not self._stopping.is_set():
                if not selector.select(_ACCEPT_POLL_SECS):
                    continue
                try:
                    sock, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    return
                sock.setblocking(True)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                thread = threading.Thread(
                    target=self._serve,
                    args=(sock,),
                    name="faultproxy-conn",
                    daemon=True,
                )
                with self._lock:
                    self._connections[thread] = sock
                thread.start()

    def _serve(self, sock: socket.socket) -> None:
        connection = _ClientConnection(self, sock)
        try:
            connection.serve()
        finally:
            connection.close()
            with self._lock:
                self._connections.pop(threading.current_thread(), None)

    def decide(self, request: ProxiedRequest) -> tuple[FaultKind | None, float]:
        """Return the fault for ``request`` (None: forward) and a slow delay.

        Counts the request and the fault.
        """
        with self._lock:
            plan = self._plan
            self._counts.requests[request.service] += 1
            self._counts.operations[request.service, request.operation] += 1
            if plan.rate <= 0 or not plan.applies_to(request):
                return None, 0.0
            if plan.max_faults is not None and self._faults_of_plan >= plan.max_faults:
                return None, 0.0
            if self._rng.random() >= plan.rate:
                return None, 0.0
            self._faults_of_plan += 1
            kind = self._rng.choice(plan.kinds)
            self._counts.faults[request.service, kind] += 1
            delay = self._rng.uniform(*plan.slow_secs) if kind is FaultKind.SLOW else 0
            return kind, delay

    def pick(self, choices: tuple[str, ...]) -> str:
        """Return one of ``choices`` from the proxy's generator."""
        with self._lock:
            return self._rng.choice(choices)

    def count_forwarded(self, service: str) -> None:
        with self._lock:
            self._counts.forwarded[service] += 1

    def count_upstream_error(self) -> None:
        with self._lock:
            self._counts.upstream_errors += 1

    def wait(self, secs: float) -> bool:
        """Sleep ``secs`` unless the proxy stops first; return True if it did."""
        return self._stopping.wait(secs)

    def upstream(self) -> http.client.HTTPConnection:
        """Return a new (not yet connected) connection to the upstream."""
        return http.client.HTTPConnection(
            self._upstream_host, self._upstream_port, timeout=UPSTREAM_TIMEOUT_SECS
        )


class _Response:
    """An upstream answer, read whole, ready to be written to the client."""

    def __init__(
        self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def to_bytes(self, method: str, close: bool) -> bytes:
        has_body = (
            method != "HEAD" and self.status >= 200 and self.status not in (204, 304)
        )
        lines = [f"HTTP/1.1 {self.status} {self.reason}"]
        for name, value in self.headers:
            lowered = name.lower()
            if lowered in _HOP_BY_HOP and not (
                lowered == "content-length" and not has_body
            ):
                continue
            lines.append(f"{name}: {value}")
        if has_body:
            lines.append(f"Content-Length: {len(self.body)}")
        if close:
            lines.append("Connection: close")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("latin-1") + (self.body if has_body else b"")


class _ClientConnection:
    """One client connection: reads requests in turn, answers or faults each."""

    def __init__(self, proxy: FaultProxy, sock: socket.socket) -> None:
        self.proxy = proxy
        self.sock = sock
        self.rfile = sock.makefile("rb")
        self._upstream: http.client.HTTPConnection | None = None

    def serve(self) -> None:
        while True:
            try:
                request = self._read_request()
            except (OSError, ValueError, http.client.HTTPException) as exc:
                logger.debug("fault proxy: dropping a client connection: %r", exc)
                return
            if request is None or not self._handle(request):
                return

    def close(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
        self.rfile.close()
        self.sock.close()

    def _read_request(self) -> ProxiedRequest | None:
        line = self.rfile.readline(MAX_LINE_BYTES + 1)
        if not line:
            return None
        if len(line) > MAX_LINE_BYTES:
            raise ValueError("request line too long")
        method, target, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        message = http.client.parse_headers(self.rfile)
        headers = list(message.items())
        if message.get("Expect", "").lower() == "100-continue":
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in message.get("Transfer-Encoding", "").lower():
            body = self._read_chunked()
        else:
            body = self._read_exactly(int(message.get("Content-Length") or 0))
        service, operation = _identify(method, target, message)
        return ProxiedRequest(method, target, headers, body, service, operation)

    def _read_exactly(self, size: int) -> bytes:
        body = self.rfile.read(size) if size else b""
        if len(body) != size:
            raise ValueError(f"request body cut short: {len(body)} of {size} bytes")
        return body

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size_line = self.rfile.readline(MAX_LINE_BYTES)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(MAX_LINE_BYTES) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self._read_exactly(size))
            self.rfile.readline(MAX_LINE_BYTES)

    def _handle(self, request: ProxiedRequest) -> bool:
        """Serve one request; return whether the connection stays open."""
        kind, delay_secs = self.proxy.decide(request)
        keep_open = not request.wants_close
        if kind in ANSWERED_KINDS:
            assert kind is not None
            response = self._error_response(request, kind)
            logger.debug(
                "fault proxy: %s %s answered %d",
                request.service,
                request.operation,
                response.status,
            )
            self.sock.sendall(response.to_bytes(request.method, not keep_open))
            return keep_open
        if kind is FaultKind.RESET:
            logger.debug("fault proxy: %s %s reset", request.service, request.operation)
            self._reset()
            return False
        if kind is FaultKind.SLOW and self.proxy.wait(delay_secs):
            return False
        try:
            response = self._forward(request)
        except (OSError, http.client.HTTPException) as exc:
            logger.warning(
                "fault proxy: upstream failed %s %s: %r",
                request.service,
                request.operation,
                exc,
            )
            self.proxy.count_upstream_error()
            bad_gateway = _Response(502, "Bad Gateway", [], b"")
            self.sock.sendall(bad_gateway.to_bytes(request.method, True))
            return False
        self.proxy.count_forwarded(request.service)
        if kind is FaultKind.LOST_RESPONSE:
            logger.debug(
                "fault proxy: %s %s applied, answer %d dropped",
                request.service,
                request.operation,
                response.status,
            )
            self._reset()
            return False
        self.sock.sendall(response.to_bytes(request.method, not keep_open))
        return keep_open

    def _forward(self, request: ProxiedRequest) -> _Response:
        """Send ``request`` upstream and return its whole answer.

        A kept-alive upstream connection the upstream closed while idle fails
        before anything is sent or answered; the request is then sent once
        more on a new connection.
        """
        while True:
            reused = self._upstream is not None
            if self._upstream is None:
                self._upstream = self.proxy.upstream()
            upstream = self._upstream
            try:
                upstream.putrequest(
                    request.method,
                    request.target,
                    skip_host=True,
                    skip_accept_encoding=True,
                )
                for name, value in request.headers:
                    if name.lower() not in _HOP_BY_HOP:
                        upstream.putheader(name, value)
                if request.body or request.method in ("POST", "PUT", "PATCH"):
                    upstream.putheader("Content-Length", str(len(request.body)))
                upstream.endheaders(request.body or None)
                answer = upstream.getresponse()
                body = answer.read()
            except (
                BrokenPipeError,
                ConnectionResetError,
                http.client.RemoteDisconnected,
            ):
                upstream.close()
                self._upstream = None
                if reused:
                    continue
                raise
            except BaseException:
                upstream.close()
                self._upstream = None
                raise
            if answer.will_close:
                upstream.close()
                self._upstream = None
            return _Response(answer.status, answer.reason, answer.getheaders(), body)

    def _error_response(self, request: ProxiedRequest, kind: FaultKind) -> _Response:
        request_id = uuid.uuid4().hex
        service = request.service
        if service == "s3":
            status, code = {
                FaultKind.THROTTLE: (503, "SlowDown"),
                FaultKind.ERROR_500: (500, "InternalError"),
                FaultKind.ERROR_503: (503, "ServiceUnavailable"),
            }[kind]
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>injected by the fault proxy"
                f"</Message><RequestId>{request_id}</RequestId></Error>"
            )
            headers = [
                ("Content-Type", "application/xml"),
                ("x-amz-request-id", request_id),
            ]
            return _Response(status, _reason(status), headers, xml.encode())
        if kind is FaultKind.THROTTLE:
            status, code = 400, self.proxy.pick(_THROTTLING_CODES)
        elif kind is FaultKind.ERROR_500:
            status, code = 500, _JSON_500_CODES[service]
        else:
            status, code = 503, "ServiceUnavailable"
        document = {
            "__type": f"{_JSON_NAMESPACES[service]}#{code}",
            "message": "injected by the fault proxy",
        }
        headers = [
            ("Content-Type", _JSON_CONTENT_TYPES[service]),
            ("x-amzn-RequestId", request_id),
        ]
        return _Response(
            status, _reason(status), headers, json.dumps(document).encode()
        )

    def _reset(self) -> None:
        """Close the client connection with a TCP reset (RST), not a FIN."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        self.sock.close()


def _identify(
    method: str, target: str, headers: http.client.HTTPMessage
) -> tuple[str, str]:
    """Return the (service, operation) of a request, ("", "") if unknown."""
    amz_target = headers.get("X-Amz-Target", "")
    for prefix, service in _JSON_TARGET_PREFIXES.items():
        if amz_target.startswith(prefix):
            return service, amz_target.partition(".")[2]
    scope = _CREDENTIAL_SCOPE.search(headers.get("Authorization", ""))
    service = scope.group(1) if scope else ""
    if service == "s3":
        return service, _s3_operation(method, target)
    return service, amz_target or method


def _s3_operation(method: str, target: str) -> str:
    """Return the S3 operation of a path-style request, roughly."""
    path, _, query = target.partition("?")
    has_key = "/" in path.lstrip("/")
    if has_key:
        return {
            "PUT": "PutObject",
            "GET": "GetObject",
            "HEAD": "HeadObject",
            "DELETE": "DeleteObject",
        }.get(method, f"{method}Object")
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    return {
        "PUT": "CreateBucket",
        "GET": "ListObjects",
        "HEAD": "HeadBucket",
        "DELETE": "DeleteBucket",
    }.get(method, f"{method}Bucket")


def _reason(status: int) -> str:
    return http.client.responses.get(status, "Error")


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
