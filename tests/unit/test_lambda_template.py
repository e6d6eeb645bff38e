"""The SAM template of the Lambda deployment (deploy/template.yaml).

GIVEN the template; THEN cfn-lint finds nothing in it, its tables are the
ones the code writes (schemas/dynamodb and the checkpoint table), the
event-source mapping exposes the settings users tune and reports partial
batch failures, the function's configuration is one the handler accepts,
and its role grants only what the handler and the mapping use.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file
from cfnlint.decode import decode

from consumers.aws_lambda.checkpoints import table_spec
from consumers.aws_lambda.settings import CHECKPOINT_TABLE, LambdaSettings
from spanstream.config import Settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "template.yaml"
SCHEMAS = ROOT / "schemas" / "dynamodb"
TUNABLE_MAPPING_SETTINGS = (
    "BatchSize",
    "MaximumBatchingWindowInSeconds",
    "ParallelizationFactor",
    "BisectBatchOnFunctionError",
    "MaximumRetryAttempts",
    "MaximumRecordAgeInSeconds",
    "TumblingWindowInSeconds",
)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, problems = decode(str(TEMPLATE))
    assert not problems, problems
    assert decoded is not None
    return dict(decoded)


def resources_of(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == kind
    }


def statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        statement
        for role in resources_of(template, "AWS::IAM::Role").values()
        for policy in role["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def test_cfn_lint_finds_nothing() -> None:
    matches = lint_file(TEMPLATE, config=ManualArgs(regions=["us-east-1"]))
    assert [str(match) for match in matches] == []


def test_tables_are_the_ones_the_code_writes(template: dict[str, Any]) -> None:
    tables = {
        resource["Properties"]["TableName"]["Fn::Sub"]: resource["Properties"]
        for resource in resources_of(template, "AWS::DynamoDB::Table").values()
    }
    wanted = [
        json.loads((SCHEMAS / f"{name}.json").read_text())
        for name in ("metrics", "coldstarts")
    ]
    wanted.append(table_spec(CHECKPOINT_TABLE))
    for spec in wanted:
        name = "${TablePrefix}" + spec["TableName"]
        assert name in tables, f"{name} missing from the template"
        for part in ("KeySchema", "AttributeDefinitions", "BillingMode"):
            assert tables[name][part] == spec[part], (name, part)
    assert len(tables) == len(wanted)


def test_mapping_exposes_the_tunable_settings_and_reports_partial_failures(
    template: dict[str, Any],
) -> None:
    function = template["Resources"]["SpansFunction"]["Properties"]
    mapping = function["Events"]["Spans"]["Properties"]
    for setting in TUNABLE_MAPPING_SETTINGS:
        assert setting in template["Parameters"]
        assert setting in json.dumps(mapping[setting]), setting
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # One batch per shard at a time: the unit checkpoints rely on it.
    assert template["Parameters"]["ParallelizationFactor"]["AllowedValues"] == [1]
    on_failure = mapping["DestinationConfig"]["OnFailure"]
    assert on_failure["Destination"] == {"Fn::GetAtt": ["FailureQueue", "Arn"]}


def test_function_configuration_is_accepted_by_the_handler(
    template: dict[str, Any],
) -> None:
    function = template["Resources"]["SpansFunction"]["Properties"]
    module, _, attribute = function["Handler"].rpartition(".")
    assert callable(getattr(importlib.import_module(module), attribute))
    # Deploy-time references stand in as names; every variable must be known.
    environ = {
        name: value if isinstance(value, str) else "deployed-name"
        for name, value in function["Environment"]["Variables"].items()
    }
    known = {f"SPANSTREAM_{name.upper()}" for name in Settings.__dataclass_fields__}
    spanstream_variables = {n for n in environ if n.startswith("SPANSTREAM_")}
    lambda_variables = {n for n in spanstream_variables if "_LAMBDA_" in n}
    assert spanstream_variables - lambda_variables <= known
    settings = Settings.from_env(environ)
    LambdaSettings.from_env(settings, environ)


def test_role_grants_only_what_is_used(template: dict[str, Any]) -> None:
    granted = statements(template)
    assert all(statement["Effect"] == "Allow" for statement in granted)
    actions = {action for s in granted for action in as_list(s["Action"])}
    assert actions == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "kinesis:DescribeStream",
        "kinesis:DescribeStreamSummary",
        "kinesis:GetRecords",
        "kinesis:GetShardIterator",
        "kinesis:ListShards",
        "s3:PutObject",
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "sqs:SendMessage",
    }
    for statement in granted:
        for resource in as_list(statement["Resource"]):
            assert resource != "*", statement["Sid"]
    s3 = [s for s in granted if "s3:PutObject" in as_list(s["Action"])]
    prefixes = {r["Fn::Sub"] for s in s3 for r in as_list(s["Resource"])}
    defaults = Settings()
    assert prefixes == {
        "${ArchiveBucket.Arn}/" + defaults.archive_prefix + "*",
        "${ArchiveBucket.Arn}/" + defaults.dead_letter_prefix + "*",
    }
