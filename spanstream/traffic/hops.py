"""Span factories for the calls a trace is made of.

Each factory adds the span(s) of one kind of call under a parent node and
records what it intended: the operation after templating, the HTTP status
it chose, which client span a server span answers, and the service-graph
edge a client or producer span stands for. HTTP spans use the old
(``http.method``...) or the new (``http.request.method``...) semantic
conventions at random, per span.
"""

from __future__ import annotations

import math
import random
import re
import uuid

from spanstream.traffic.builder import Node, new_span_id
from spanstream.traffic.model import AttributeValue
from spanstream.traffic.services import FUNCTIONS, Tenant

USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0"
_PLACEHOLDER = re.compile(r"\{(num|uuid|hex|id)\}")
NANOS_PER_MILLI = 1_000_000


class Calls:
    """Makes the nodes of one trace of one tenant, drawing from ``rng``."""

    def __init__(self, rng: random.Random, tenant: Tenant) -> None:
        self.rng = rng
        self.tenant = tenant

    # -- basics -----------------------------------------------------------

    def millis(self, median_millis: float, sigma: float = 0.5) -> int:
        """Return a log-normal duration in nanoseconds around ``median_millis``."""
        value = math.exp(self.rng.gauss(math.log(median_millis), sigma))
        return max(1_000, int(value * NANOS_PER_MILLI))

    def node(
        self,
        service: str,
        kind: str,
        name: str,
        attributes: dict[str, AttributeValue],
        self_nanos: int,
        instrumentation: str = "internal",
        operation: str | None = None,
    ) -> Node:
        """Return a node of ``service`` whose operation defaults to its name."""
        return Node(
            resource=self.tenant.resource(service),
            tenant=self.tenant.label,
            service=service,
            faas_name=FUNCTIONS.get(service),
            scope=self.tenant.scope(service, instrumentation),
            span_id=new_span_id(self.rng),
            name=name,
            kind=kind,
            attributes=attributes,
            self_nanos=self_nanos,
            operation=name if operation is None else operation,
        )

    def internal(self, parent: Node, name: str, median_millis: float = 2.0) -> Node:
        """Add an INTERNAL span; 1 % record a handled exception (an error)."""
        child = self.node(
            parent.service, "INTERNAL", name, {}, self.millis(median_millis)
        )
        if self.rng.random() < 0.01:
            self._exception(child, "ValueError", "handled: bad input")
        return parent.add(child)

    def fill_path(self, template: str) -> str:
        """Replace each ``{num}``/``{uuid}``/``{hex}``/``{id}`` with a fresh id."""
        return _PLACEHOLDER.sub(lambda match: self._id(match.group(1)), template)

    def _id(self, kind: str) -> str:
        rng = self.rng
        if kind == "num":
            return str(rng.randint(1, 9_999_999))
        if kind == "uuid":
            return str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if kind == "hex":
            while True:  # mixed letters and digits, so not {num} and clearly hex
                value = f"{rng.getrandbits(64):016x}"
                if not value.isdigit() and any(ch.isdigit() for ch in value):
                    return value
        return rng.choice("uocs") + str(rng.randint(100, 999_999))

    def _exception(self, node: Node, exc_type: str, message: str) -> None:
        attributes: dict[str, AttributeValue] = {
            "exception.type": exc_type,
            "exception.message": message,
            "exception.stacktrace": f"{exc_type}: {message}\n  at handler (app:42)",
        }
        node.events.append(("exception", self.rng.uniform(0.3, 0.95), attributes))

    def _is_new_semconv(self) -> bool:
        return self.rng.random() < 0.5

    # -- HTTP -------------------------------------------------------------

    def http_outcome(self) -> tuple[int, str, str, bool]:
        """Return (status code, server status, client status, server exception)."""
        roll = self.rng.random()
        if roll < 0.02:
            server_status = "ERROR" if self.rng.random() < 0.8 else "UNSET"
            with_exception = server_status == "ERROR" and self.rng.random() < 0.5
            return (
                self.rng.choice((500, 502, 503)),
                server_status,
                "ERROR",
                with_exception,
            )
        if roll < 0.06:
            client_status = "ERROR" if self.rng.random() < 0.5 else "UNSET"
            return self.rng.choice((400, 404, 409)), "UNSET", client_status, False
        server_status = "OK" if self.rng.random() < 0.1 else "UNSET"
        return 200, server_status, "UNSET", False

    def http_server(
        self,
        service: str,
        method: str,
        route: str,
        path_template: str,
        naming: str,
        self_nanos: int,
        outcome: tuple[int, str, str, bool],
    ) -> Node:
        """Return an HTTP SERVER node, named by ``naming``.

        ``naming`` is ``"method"`` (name is the method, ``http.route`` on
        half of them), ``"route"`` (``"GET /x/:id"``), ``"bare"`` (the route
        alone) or ``"empty"`` (no name, no route).
        """
        code, status, _, with_exception = outcome
        path = self.fill_path(path_template)
        emit_route = naming in ("route", "bare") or (
            naming == "method" and self.rng.random() < 0.5
        )
        if naming == "route":
            name = operation = f"{method} {route}"
        elif naming == "bare":
            name = operation = route
        else:
            name = method if naming == "method" else ""
            operation = f"{method} {route if emit_route else path_template}"
        query = "page=2&ref=home" if self.rng.random() < 0.2 else ""
        attributes = self._server_attributes(service, method, path, query, code)
        if emit_route:
            attributes["http.route"] = route
        node = self.node(
            service, "SERVER", name, attributes, self_nanos, "http", operation
        )
        node.http_status_code = code
        node.status_code = status
        if status == "ERROR":
            node.status_message = f"HTTP {code}"
        if with_exception:
            self._exception(node, "RuntimeError", "upstream failure")
        return node

    def _server_attributes(
        self, service: str, method: str, path: str, query: str, code: int
    ) -> dict[str, AttributeValue]:
        if self._is_new_semconv():
            attributes: dict[str, AttributeValue] = {
                "http.request.method": method,
                "url.path": path,
                "url.scheme": "http",
                "server.address": service,
                "server.port": 8080,
                "http.response.status_code": code,
                "user_agent.original": USER_AGENT,
            }
            if query:
                attributes["url.query"] = query
            return attributes
        return {
            "http.method": method,
            "http.target": f"{path}?{query}" if query else path,
            "http.scheme": "http",
            "net.host.name": service,
            "http.status_code": code,
            "http.user_agent": USER_AGENT,
        }

    def http_client(
        self,
        parent: Node,
        host: str,
        method: str,
        path: str,
        code: int,
        status: str,
        instrumentation: str = "client",
    ) -> Node:
        """Add an HTTP CLIENT span to ``host``; ``peer.service`` on 10 %."""
        if self._is_new_semconv():
            name = method
            attributes: dict[str, AttributeValue] = {
                "http.request.method": method,
                "url.full": f"https://{host}{path}",
                "server.address": host,
                "server.port": 443,
                "http.response.status_code": code,
            }
        else:
            name = f"HTTP {method}"
            attributes = {
                "http.method": method,
                "http.url": f"https://{host}{path}",
                "net.peer.name": host,
                "net.peer.port": 443,
                "http.status_code": code,
            }
        peer = host
        if self.rng.random() < 0.1:
            peer = attributes["peer.service"] = f"{host}-svc"
        client = self.node(
            parent.service,
            "CLIENT",
            name,
            attributes,
            self.millis(0.4),
            instrumentation,
        )
        client.http_status_code = code
        client.status_code = status
        client.peer_service = peer
        return parent.add(client)

    def http_call(
        self,
        parent: Node,
        server_service: str,
        method: str,
        route: str,
        path_template: str,
        naming: str,
        median_millis: float,
    ) -> Node:
        """Add a client span under ``parent`` and its server half; return the server."""
        outcome = self.http_outcome()
        server = self.http_server(
            server_service,
            method,
            route,
            path_template,
            naming,
            self.millis(median_millis),
            outcome,
        )
        path = server.attributes.get("url.path") or server.attributes["http.target"]
        client = self.http_client(
            parent, server_service, method, str(path), outcome[0], outcome[2], "http"
        )
        return self._pair(client, server)

    def _pair(self, client: Node, server: Node) -> Node:
        client.add(server)
        server.caller = client
        client.edge_server = server.service
        client.edge_type = "rpc"
        return server

    def external_call(self, parent: Node, host: str, method: str, path: str) -> Node:
        """Add a CLIENT span to a host outside the system (a ``peer`` edge)."""
        roll = self.rng.random()
        code = 402 if roll < 0.04 else 503 if roll < 0.05 else 200
        status = "ERROR" if code >= 400 and self.rng.random() < 0.5 else "UNSET"
        client = self.http_client(parent, host, method, path, code, status)
        client.self_nanos = self.millis(120, 0.6)
        client.edge_server = client.peer_service
        client.edge_type = "peer"
        return client

    # -- gRPC -------------------------------------------------------------

    def grpc_call(
        self,
        parent: Node,
        server_service: str,
        rpc_service: str,
        rpc_method: str,
        median_millis: float,
    ) -> Node:
        """Add a gRPC client span and its server half; return the server."""
        name = f"{rpc_service}/{rpc_method}"
        failed = self.rng.random() < 0.02
        grpc_code = self.rng.choice((13, 14)) if failed else 0
        common: dict[str, AttributeValue] = {
            "rpc.system": "grpc",
            "rpc.service": rpc_service,
            "rpc.method": rpc_method,
            "rpc.grpc.status_code": grpc_code,
        }
        server = self.node(
            server_service,
            "SERVER",
            name,
            {**common, "server.address": server_service, "server.port": 50051},
            self.millis(median_millis),
            "grpc",
        )
        client_attributes = dict(common)
        if self._is_new_semconv():
            client_attributes["server.address"] = server_service
        else:
            client_attributes["net.peer.name"] = server_service
        client = self.node(
            parent.service,
            "CLIENT",
            name,
            client_attributes,
            self.millis(0.3),
            "grpc",
        )
        client.peer_service = server_service
        if failed:
            server.status_code = client.status_code = "ERROR"
            server.status_message = client.status_message = "upstream unavailable"
        elif self.rng.random() < 0.3:
            server.status_code = "OK"
        if self.rng.random() < 0.3:
            for at, direction in ((0.05, "RECEIVED"), (0.95, "SENT")):
                message: dict[str, AttributeValue] = {
                    "message.type": direction,
                    "message.id": 1,
                }
                server.events.append(("message", at, message))
        parent.add(client)
        return self._pair(client, server)

    # -- databases and queues ---------------------------------------------

    def db_call(
        self, parent: Node, system: str, name: str, statement: str, median_millis: float
    ) -> Node:
        """Add a database CLIENT span with no server half (a ``database`` edge)."""
        attributes: dict[str, AttributeValue] = {"db.system": system}
        if system != "redis":
            attributes["db.name"] = "shop"
            attributes["db.operation"] = name.split(" ", 1)[0]
        if self._is_new_semconv():
            attributes["db.query.text"] = statement
        else:
            attributes["db.statement"] = statement
        client = self.node(
            parent.service, "CLIENT", name, attributes, self.millis(median_millis), "db"
        )
        client.peer_service = client.db_system = system
        client.edge_server, client.edge_type = system, "database"
        if self.rng.random() < 0.01:
            client.status_code = "ERROR"
            client.status_message = "connection reset by peer"
            self._exception(client, "ConnectionError", "connection reset by peer")
        return parent.add(client)

    def sqs_send(self, parent: Node, queue: str) -> Node:
        """Add an SQS SendMessage CLIENT span (a ``queue`` edge)."""
        attributes: dict[str, AttributeValue] = {
            "rpc.system": "aws-api",
            "rpc.service": "SQS",
            "rpc.method": "SendMessage",
            "messaging.system": "aws_sqs",
            "messaging.destination.name": queue,
            "cloud.region": self.tenant.region,
        }
        client = self.node(
            parent.service,
            "CLIENT",
            "SQS.SendMessage",
            attributes,
            self.millis(15),
            "aws",
        )
        client.peer_service = client.messaging_system = "aws_sqs"
        client.edge_server, client.edge_type = "aws_sqs", "queue"
        return parent.add(client)

    def kafka_publish(self, parent: Node, topic: str, consumer_service: str) -> Node:
        """Add a PRODUCER span and its CONSUMER in another service; return it."""
        partition = self.rng.randint(0, 11)
        producer = self.node(
            parent.service,
            "PRODUCER",
            f"{topic} publish",
            {
                "messaging.system": "kafka",
                "messaging.destination.name": topic,
                "messaging.operation": "publish",
                "messaging.kafka.destination.partition": partition,
            },
            self.millis(1.5),
            "messaging",
        )
        producer.messaging_system = producer.peer_service = "kafka"
        producer.edge_server, producer.edge_type = consumer_service, "messaging"
        consumer = self.node(
            consumer_service,
            "CONSUMER",
            f"{topic} process",
            {
                "messaging.system": "kafka",
                "messaging.destination.name": topic,
                "messaging.operation": "process",
                "messaging.kafka.consumer.group": consumer_service,
                "messaging.kafka.message.offset": self.rng.randint(0, 10**9),
            },
            self.millis(8),
            "messaging",
        )
        consumer.messaging_system = "kafka"
        consumer.is_async = True
        consumer.lag_nanos = self.millis(40, 1.0)
        consumer.caller = producer
        producer.add(consumer)
        parent.add(producer)
        return consumer

    # -- AWS Lambda -------------------------------------------------------

    def function_server(self, service: str, trigger: str, median_millis: float) -> Node:
        """Return a Lambda invocation SERVER node; 5 % are cold starts."""
        function = FUNCTIONS[service]
        attributes: dict[str, AttributeValue] = {
            "faas.trigger": trigger,
            "faas.invocation_id": self._id("uuid"),
            "cloud.resource_id": (
                f"arn:aws:lambda:{self.tenant.region}:{self.tenant.account_id}"
                f":function:{function}"
            ),
        }
        self_nanos = self.millis(median_millis)
        is_cold = self.rng.random() < 0.05
        if is_cold:
            attributes["faas.coldstart"] = True
            self_nanos += self.millis(450, 0.4)
        elif self.rng.random() < 0.5:
            attributes["faas.coldstart"] = False
        server = self.node(service, "SERVER", function, attributes, self_nanos, "faas")
        server.is_cold_start = is_cold
        return server

    def function_call(self, parent: Node, service: str, median_millis: float) -> Node:
        """Add an HTTP call to a Lambda function URL and the invocation."""
        code, server_status, client_status, with_exception = self.http_outcome()
        server = self.function_server(service, "http", median_millis)
        server.attributes.update(
            {
                "http.request.method": "POST",
                "url.path": "/",
                "http.response.status_code": code,
            }
        )
        server.http_status_code = code
        server.status_code = server_status
        if with_exception:
            self._exception(server, "RuntimeError", "model timed out")
        host = f"{FUNCTIONS[service]}.lambda-url.{self.tenant.region}.on.aws"
        client = self.http_client(
            parent, host, "POST", "/", code, client_status, "http"
        )
        return self._pair(client, server)
