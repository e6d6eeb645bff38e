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

`plan` holds what to do and what was done, `protocols` the services'
errors, `server` the proxy itself. One thread serves each client connection,
with its own keep-alive connection to the upstream: this is for tests on one
machine, not for load.
"""

from devenv.faultproxy.plan import (
    ANSWERED_KINDS,
    FAULTABLE_SERVICES,
    FaultCounts,
    FaultKind,
    FaultPlan,
    ProxiedRequest,
)
from devenv.faultproxy.server import FaultProxy

__all__ = [
    "ANSWERED_KINDS",
    "FAULTABLE_SERVICES",
    "FaultCounts",
    "FaultKind",
    "FaultPlan",
    "FaultProxy",
    "ProxiedRequest",
]
