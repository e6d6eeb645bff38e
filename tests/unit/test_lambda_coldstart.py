"""Importing the Lambda handler: what its init does, and what it loads.

GIVEN a fresh interpreter with dummy credentials and every endpoint on a
closed loopback port; WHEN it imports ``consumers.aws_lambda.handler`` while
socket connects, DNS look-ups and botocore client creations are recorded;
THEN outside Lambda (and under ``sam local``) nothing is built, inside Lambda
the three clients are built in the init phase without opening a socket, and
every module the import and the init load is one the Lambda package ships.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
import sysconfig
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, socket, sys
startup = set(sys.modules)
import botocore.session

seen = {"connect": [], "getaddrinfo": [], "create_client": []}
real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
real_getaddrinfo = socket.getaddrinfo
real_create_client = botocore.session.Session.create_client

def connect(self, address):
    seen["connect"].append(repr(address))
    return real_connect(self, address)

def connect_ex(self, address):
    seen["connect"].append(repr(address))
    return real_connect_ex(self, address)

def getaddrinfo(host, *args, **kwargs):
    seen["getaddrinfo"].append(repr(host))
    return real_getaddrinfo(host, *args, **kwargs)

def create_client(self, service_name, *args, **kwargs):
    seen["create_client"].append(service_name)
    return real_create_client(self, service_name, *args, **kwargs)

socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
socket.getaddrinfo = getaddrinfo
botocore.session.Session.create_client = create_client

import consumers.aws_lambda.handler

seen["modules"] = {
    name: getattr(module, "__file__", None)
    for name, module in sys.modules.items()
    if name not in startup
}
print(json.dumps(seen))
"""

#: Imported when installed, skipped when not: neither is in the Lambda package.
OPTIONAL_MODULES = {
    # spanstream.extension: without it, every stage runs its Python reference
    "spanstream_native",
    # botocore.httpsession: without it, botocore's own CA bundle is used
    "certifi",
}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def import_handler(**environ: str) -> dict[str, Any]:
    """Return what importing the handler in a fresh interpreter did."""
    dropped = ("AWS_", "SPANSTREAM_", "POWERTOOLS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        SPANSTREAM_ENDPOINT_URL=f"http://127.0.0.1:{closed_port()}",
        **environ,
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return seen


@cache
def inside_lambda() -> dict[str, Any]:
    return import_handler(AWS_LAMBDA_FUNCTION_NAME="spanstream-spans")


def shipped_roots() -> list[Path]:
    """Return where the modules of the Lambda package come from.

    ``make lambda-package`` installs requirements.txt with its dependencies
    and copies spanstream/ and consumers/; Lambda's runtime adds the
    standard library.
    """
    # "stdlib" is the base interpreter's, with lib-dynload; in a venv,
    # "platstdlib" is the venv's own lib/ (site-packages and all).
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    roots = [ROOT / "spanstream", ROOT / "consumers", stdlib]
    for dist in required_distributions():
        for top in {file.parts[0] for file in dist.files or []}:
            if top != ".." and not top.endswith((".dist-info", ".data")):
                roots.append(Path(str(dist.locate_file(top))).resolve())
    return roots


def required_distributions() -> list[importlib.metadata.Distribution]:
    """Return the installed distributions requirements.txt pulls in."""
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    pending = [line for line in lines if line.strip() and not line.startswith("#")]
    found: dict[str, importlib.metadata.Distribution] = {}
    while pending:
        requirement = pending.pop()
        if "extra ==" in requirement:
            continue
        match = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert match is not None, requirement
        name = re.sub(r"[-_.]+", "-", match.group()).lower()
        if name in found:
            continue
        try:
            found[name] = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # for another platform or Python: not importable here either
        pending += found[name].requires or []
    return list(found.values())


def test_import_outside_lambda_builds_no_client_and_opens_no_socket() -> None:
    seen = import_handler()

    assert seen["create_client"] == []
    assert seen["connect"] == []
    assert seen["getaddrinfo"] == []


def test_import_under_sam_local_builds_no_client() -> None:
    seen = import_handler(AWS_LAMBDA_FUNCTION_NAME="spanstream", AWS_SAM_LOCAL="true")

    assert seen["create_client"] == []


def test_init_inside_lambda_builds_the_clients_without_connecting() -> None:
    seen = inside_lambda()

    assert sorted(seen["create_client"]) == ["dynamodb", "kinesis", "s3"]
    assert seen["connect"] == []
    assert seen["getaddrinfo"] == []


def test_init_loads_only_modules_the_lambda_package_ships() -> None:
    roots = shipped_roots()

    outside = sorted(
        name
        for name, file in inside_lambda()["modules"].items()
        if file is not None
        and name.split(".")[0] not in OPTIONAL_MODULES
        and not any(Path(file).resolve().is_relative_to(root) for root in roots)
    )

    assert outside == []
