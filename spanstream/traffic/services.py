"""Tenants and the services they run, as OTLP resources.

Each tenant runs the same small shop: a Node.js ``frontend``, a Python
``cart`` on Redis, a Go ``catalog`` and ``checkout``, a Java ``payment`` and
``fulfillment``, and two AWS Lambda functions. A tenant of ``None`` sends no
``tenant.id`` resource attribute, so its spans belong to the default tenant.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from spanstream.traffic.model import AttributeValue, GeneratedResource
from spanstream.traffic.truth import DEFAULT_TENANT, TENANT_ATTRIBUTE

DEFAULT_TENANTS: tuple[str | None, ...] = ("acme", "globex", "initech", None)

_REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2", "us-west-2")

#: service -> SDK language; Lambda functions are in `FUNCTIONS`.
SERVICE_LANGUAGES = {
    "frontend": "nodejs",
    "cart": "python",
    "catalog": "go",
    "checkout": "go",
    "payment": "java",
    "fulfillment": "java",
}

#: Lambda service name -> function name (``faas.name``).
FUNCTIONS = {"fraud-check": "fraud-check", "reports": "report-generator"}

#: (language, instrumentation) -> instrumentation scope (name, version)
SCOPES: dict[tuple[str, str], tuple[str, str]] = {
    ("nodejs", "http"): ("@opentelemetry/instrumentation-http", "0.52.1"),
    ("nodejs", "grpc"): ("@opentelemetry/instrumentation-grpc", "0.52.1"),
    ("python", "http"): ("opentelemetry.instrumentation.flask", "0.48b0"),
    ("python", "client"): ("opentelemetry.instrumentation.requests", "0.48b0"),
    ("python", "db"): ("opentelemetry.instrumentation.redis", "0.48b0"),
    ("python", "faas"): ("opentelemetry.instrumentation.aws_lambda", "0.48b0"),
    ("python", "aws"): ("opentelemetry.instrumentation.botocore", "0.48b0"),
    ("go", "http"): ("go.opentelemetry.io/contrib/instrumentation/net/http", "0.53.0"),
    ("go", "grpc"): ("go.opentelemetry.io/contrib/instrumentation/grpc", "0.53.0"),
    ("go", "db"): ("github.com/XSAM/otelsql", "0.32.0"),
    ("go", "messaging"): ("github.com/IBM/sarama/otelsarama", "0.9.0"),
    ("java", "grpc"): ("io.opentelemetry.grpc-1.6", "2.6.0-alpha"),
    ("java", "client"): ("io.opentelemetry.okhttp-3.0", "2.6.0-alpha"),
    ("java", "db"): ("io.opentelemetry.jdbc", "2.6.0-alpha"),
    ("java", "messaging"): ("io.opentelemetry.kafka-clients-0.11", "2.6.0-alpha"),
    ("java", "aws"): ("io.opentelemetry.aws-sdk-2.2", "2.6.0-alpha"),
}


@dataclass(slots=True)
class Tenant:
    """One tenant's identity, AWS account and the resources of its services."""

    tenant_id: str | None
    region: str
    account_id: str
    resources: dict[str, GeneratedResource] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The tenant the pipeline should report: the id or the default."""
        return self.tenant_id if self.tenant_id is not None else DEFAULT_TENANT

    def resource(self, service: str) -> GeneratedResource:
        """Return the (shared) resource of ``service`` for this tenant."""
        found = self.resources.get(service)
        if found is None:
            found = GeneratedResource(
                key=f"{self.label}/{service}", attributes=self._attributes(service)
            )
            self.resources[service] = found
        return found

    def scope(self, service: str, instrumentation: str) -> tuple[str, str]:
        """Return the instrumentation scope a service's spans of a kind carry."""
        language = language_of(service)
        return SCOPES.get((language, instrumentation), (service, "1.0.0"))

    def _attributes(self, service: str) -> dict[str, AttributeValue]:
        attributes: dict[str, AttributeValue] = {"service.name": service}
        if self.tenant_id is not None:
            attributes[TENANT_ATTRIBUTE] = self.tenant_id
        attributes["deployment.environment"] = "production"
        attributes["telemetry.sdk.name"] = "opentelemetry"
        attributes["telemetry.sdk.language"] = language_of(service)
        attributes["telemetry.sdk.version"] = "1.26.0"
        if service in FUNCTIONS:
            attributes.update(self._function_attributes(FUNCTIONS[service]))
        else:
            attributes["service.version"] = "2.4.1"
            attributes["host.name"] = f"{service}-7d9f8b6c4-x2k9p"
            attributes["k8s.namespace.name"] = f"shop-{self.label}"
            attributes["process.pid"] = 1
        if language_of(service) == "java":
            attributes["process.command_args"] = ["java", "-jar", f"/app/{service}.jar"]
        return attributes

    def _function_attributes(self, function: str) -> dict[str, AttributeValue]:
        return {
            "cloud.provider": "aws",
            "cloud.platform": "aws_lambda",
            "cloud.region": self.region,
            "cloud.account.id": self.account_id,
            "faas.name": function,
            "faas.version": "$LATEST",
            "faas.max_memory": 512 * 1024 * 1024,
            "faas.instance": f"2025/01/01/[$LATEST]{function}",
        }


def language_of(service: str) -> str:
    """Return the SDK language a service is written in."""
    return SERVICE_LANGUAGES.get(service, "python")


def make_tenants(tenant_ids: tuple[str | None, ...] | list[str | None]) -> list[Tenant]:
    """Return a `Tenant` per id, each with a stable region and account id."""
    tenants = []
    for index, tenant_id in enumerate(tenant_ids):
        digest = hashlib.sha256(str(tenant_id).encode()).hexdigest()
        account_id = str(int(digest[:12], 16) % 10**12).zfill(12)
        region = _REGIONS[index % len(_REGIONS)]
        tenants.append(Tenant(tenant_id, region, account_id))
    return tenants
