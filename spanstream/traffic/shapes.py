"""The kinds of request a tenant's shop serves, one function per trace shape.

Each shape returns the root node of a new trace. Weights in `SHAPES` set how
often each occurs; together they cover HTTP (both naming styles, templated
paths), gRPC, databases, Kafka, SQS, external APIs and Lambda functions.
"""

from __future__ import annotations

from collections.abc import Callable

from spanstream.traffic.builder import Node
from spanstream.traffic.hops import Calls

#: (method, route, path template) of the pages the frontend serves
FRONTEND_PAGES = (
    ("GET", "/products/:productId", "/products/{num}"),
    ("GET", "/orders/:orderId", "/orders/{uuid}"),
    ("GET", "/users/:userId/cart", "/users/{id}/cart"),
    ("GET", "/images/:imageHash", "/images/{hex}"),
)


def _frontend_root(calls: Calls, method: str, route: str, path_template: str) -> Node:
    naming = "empty" if calls.rng.random() < 0.03 else "method"
    return calls.http_server(
        "frontend",
        method,
        route,
        path_template,
        naming,
        calls.millis(6),
        calls.http_outcome(),
    )


def browse(calls: Calls) -> Node:
    """A product page: frontend -> catalog (HTTP) -> postgresql, maybe cart."""
    method, route, template = calls.rng.choice(FRONTEND_PAGES[:2])
    root = _frontend_root(calls, method, route, template)
    catalog = calls.http_call(
        root, "catalog", "GET", "/products/{id}", "/products/{num}", "method", 3
    )
    calls.db_call(
        catalog,
        "postgresql",
        "SELECT shop.products",
        "SELECT * FROM products WHERE id = $1",
        2,
    )
    if calls.rng.random() < 0.4:
        cart = calls.http_call(
            root, "cart", "GET", "/cart/<user_id>", "/cart/{id}", "bare", 2
        )
        calls.db_call(cart, "redis", "HGETALL", "HGETALL cart:?", 0.5)
    calls.internal(root, "render product-page", 4)
    return root


def add_to_cart(calls: Calls) -> Node:
    """frontend -> cart (HTTP POST, route-named server span) -> redis."""
    root = _frontend_root(calls, "GET", "/users/:userId/cart", "/users/{id}/cart")
    cart = calls.http_call(
        root,
        "cart",
        "POST",
        "/cart/{user_id}/items",
        "/cart/{uuid}/items",
        "route",
        3,
    )
    calls.db_call(cart, "redis", "HSET", "HSET cart:? item ?", 0.4)
    calls.db_call(cart, "redis", "EXPIRE", "EXPIRE cart:? 86400", 0.2)
    return root


def checkout(calls: Calls) -> Node:
    """The long one: gRPC fan-out, payment, fraud Lambda, Kafka, SQS."""
    root = calls.http_server(
        "frontend",
        "POST",
        "/api/checkout",
        "/api/checkout",
        calls.rng.choice(("method", "route")),
        calls.millis(8),
        calls.http_outcome(),
    )
    order = calls.grpc_call(root, "checkout", "shop.CheckoutService", "PlaceOrder", 5)
    calls.internal(order, "prepare order", 1)
    calls.http_call(order, "cart", "GET", "/cart/<user_id>", "/cart/{id}", "bare", 2)
    payment = calls.grpc_call(order, "payment", "shop.PaymentService", "Charge", 4)
    calls.external_call(payment, "api.stripe.com", "POST", "/v1/charges")
    calls.function_call(order, "fraud-check", 35)
    calls.db_call(
        order,
        "postgresql",
        "INSERT shop.orders",
        "INSERT INTO orders (id, user_id, total) VALUES ($1, $2, $3)",
        3,
    )
    shipping = calls.kafka_publish(order, "orders", "fulfillment")
    calls.db_call(
        shipping,
        "postgresql",
        "UPDATE shop.orders",
        "UPDATE orders SET state = 'paid' WHERE id = $1",
        2,
    )
    calls.sqs_send(shipping, "shipments")
    return root


def image(calls: Calls) -> Node:
    """A content-addressed image, served straight by the frontend."""
    root = _frontend_root(calls, *FRONTEND_PAGES[3])
    calls.internal(root, "read image cache", 1)
    return root


def nightly_report(calls: Calls) -> Node:
    """A timer-triggered Lambda: no caller, a query and an e-mail API call."""
    root = calls.function_server("reports", "timer", 80)
    calls.db_call(
        root,
        "postgresql",
        "SELECT shop.orders",
        "SELECT count(*) FROM orders WHERE created_at > $1",
        25,
    )
    calls.external_call(root, "api.sendgrid.com", "POST", "/v3/mail/send")
    return root


SHAPES: tuple[tuple[str, Callable[[Calls], Node], float], ...] = (
    ("browse", browse, 0.40),
    ("add_to_cart", add_to_cart, 0.22),
    ("checkout", checkout, 0.22),
    ("image", image, 0.10),
    ("nightly_report", nightly_report, 0.06),
)
