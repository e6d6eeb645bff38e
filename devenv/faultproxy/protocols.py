"""Which AWS service a request is for, and its errors as that service says them.

DynamoDB and Kinesis speak JSON: the operation is in ``X-Amz-Target``, an
error is a JSON document whose ``__type`` ends in its code. S3 speaks
REST-XML: the operation follows from the method and the path, an error is an
``<Error><Code>`` document. botocore parses both from these answers just as
from AWS's own.
"""

from __future__ import annotations

import http.client
import json
import re
import uuid
from email.message import Message
from typing import NamedTuple

from devenv.faultproxy.plan import FaultKind

THROTTLING_CODES = ("ProvisionedThroughputExceededException", "ThrottlingException")
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
_JSON_500_CODES = {"dynamodb": "InternalServerError", "kinesis": "InternalFailure"}
_S3_ERRORS = {
    FaultKind.THROTTLE: (503, "SlowDown"),
    FaultKind.ERROR_500: (500, "InternalError"),
    FaultKind.ERROR_503: (503, "ServiceUnavailable"),
}
_S3_OBJECT_OPERATIONS = {
    "PUT": "PutObject",
    "GET": "GetObject",
    "HEAD": "HeadObject",
    "DELETE": "DeleteObject",
}
_S3_BUCKET_OPERATIONS = {
    "PUT": "CreateBucket",
    "GET": "ListObjects",
    "HEAD": "HeadBucket",
    "DELETE": "DeleteBucket",
}


class ErrorAnswer(NamedTuple):
    """An error response: status, reason phrase, headers and body."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


def identify(method: str, target: str, headers: Message) -> tuple[str, str]:
    """Return the (service, operation) of a request; service "" if unknown."""
    amz_target = headers.get("X-Amz-Target", "")
    for prefix, service in _JSON_TARGET_PREFIXES.items():
        if amz_target.startswith(prefix):
            return service, amz_target.partition(".")[2]
    scope = _CREDENTIAL_SCOPE.search(headers.get("Authorization", ""))
    service = scope.group(1) if scope else ""
    if service == "s3":
        return service, s3_operation(method, target)
    return service, amz_target or method


def s3_operation(method: str, target: str) -> str:
    """Return the S3 operation of a path-style request, roughly."""
    path, _, query = target.partition("?")
    if "/" in path.lstrip("/"):
        return _S3_OBJECT_OPERATIONS.get(method, f"{method}Object")
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    return _S3_BUCKET_OPERATIONS.get(method, f"{method}Bucket")


def error_answer(service: str, kind: FaultKind, throttling_code: str) -> ErrorAnswer:
    """Return ``service``'s error for ``kind`` (throttle, 500 or 503).

    ``throttling_code`` names a JSON service's throttling error (one of
    `THROTTLING_CODES`); S3 throttles with 503 ``SlowDown``. Raises KeyError
    for a service or kind without an error answer.
    """
    request_id = uuid.uuid4().hex
    if service == "s3":
        status, code = _S3_ERRORS[kind]
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>injected by the fault proxy"
            f"</Message><RequestId>{request_id}</RequestId></Error>"
        )
        headers = [
            ("Content-Type", "application/xml"),
            ("x-amz-request-id", request_id),
        ]
        return ErrorAnswer(status, _reason(status), headers, xml.encode())
    if kind is FaultKind.THROTTLE:
        status, code = 400, throttling_code
    elif kind is FaultKind.ERROR_500:
        status, code = 500, _JSON_500_CODES[service]
    elif kind is FaultKind.ERROR_503:
        status, code = 503, "ServiceUnavailable"
    else:
        raise KeyError(kind)
    document = {
        "__type": f"{_JSON_NAMESPACES[service]}#{code}",
        "message": "injected by the fault proxy",
    }
    headers = [
        ("Content-Type", _JSON_CONTENT_TYPES[service]),
        ("x-amzn-RequestId", request_id),
    ]
    return ErrorAnswer(status, _reason(status), headers, json.dumps(document).encode())


def _reason(status: int) -> str:
    return http.client.responses.get(status, "Error")
