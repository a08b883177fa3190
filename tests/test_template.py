"""template.yaml as a deployable stack: valid (cfn-lint), wired to the code (handlers, settings
names, build recipe), least privilege per function, no secret in the template, queues sized to
their consumers."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from handlers import lambda_entry
from tests.support.stack import REPO, environment_variables, template
from vastdrop.settings import SECRET_FIELDS, ControlSettings

FUNCTIONS = {"WebhookFunction": "webhook", "LauncherFunction": "launcher", "CompletionFunction": "completion",
             "ReaperFunction": "reaper"}
SECRET_WORDS = re.compile(r"secret|password|token|api_?key|access_?key", re.I)


def _resources(kind: str) -> dict[str, dict]:
    return {name: r for name, r in template()["Resources"].items() if r["Type"] == kind}


def _function_props(name: str) -> dict:
    return {**template()["Globals"]["Function"], **template()["Resources"][name]["Properties"]}


def _policy_kinds(name: str) -> set[str]:
    return {next(iter(p)) for p in template()["Resources"][name]["Properties"].get("Policies", [])}


def test_cfn_lint_passes():
    cfn_lint = Path(sys.executable).with_name("cfn-lint")  # the console script of the dev extra
    # Informational findings too (explicit deletion policies, retention periods).
    proc = subprocess.run([str(cfn_lint), "--include-checks", "I", "--", str(REPO / "template.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_function_runs_a_lambda_entry_point():
    assert set(_resources("AWS::Serverless::Function")) == set(FUNCTIONS)
    for name, entry in FUNCTIONS.items():
        assert _function_props(name)["Handler"] == f"handlers.lambda_entry.{entry}"
        assert callable(getattr(lambda_entry, entry))


def test_every_environment_variable_is_a_setting_and_none_is_a_secret():
    variables = environment_variables()
    fields = set(ControlSettings.model_fields)
    for name in variables:
        if name.startswith("WATCHER_"):
            assert name.removeprefix("WATCHER_").lower() in fields, f"{name} is read by nothing"
            assert name.removeprefix("WATCHER_").lower() not in SECRET_FIELDS, f"{name} belongs in the secret"
        else:
            assert name == "AWS_ENDPOINT_URL_S3", name  # botocore's own setting for the bucket's endpoint
    assert "WATCHER_SECRET_ID" in variables
    assert "resolve:secretsmanager" not in (REPO / "template.yaml").read_text()  # would land in the env


def test_no_parameter_carries_a_secret():
    for name in template()["Parameters"]:
        if SECRET_WORDS.search(name):
            assert name == "SecretName", f"parameter {name} looks like a secret: put it in the secret instead"


def test_least_privilege_per_function():
    assert _policy_kinds("WebhookFunction") == {"SQSSendMessagePolicy", "AWSSecretsManagerGetSecretValuePolicy"}
    for name in ("LauncherFunction", "CompletionFunction", "ReaperFunction"):
        assert _policy_kinds(name) == {"DynamoDBCrudPolicy", "AWSSecretsManagerGetSecretValuePolicy"}, name
    for name in FUNCTIONS:
        for policy in template()["Resources"][name]["Properties"]["Policies"]:
            ((kind, args),) = policy.items()
            if kind == "AWSSecretsManagerGetSecretValuePolicy":  # this one secret, not every secret
                assert args["SecretArn"]["Fn::Sub"].endswith(":secret:${SecretName}-??????")
            if kind == "DynamoDBCrudPolicy":
                assert args == {"TableName": {"Ref": "JobsTable"}}


def test_queues_feed_their_functions_with_partial_batch_failures_and_a_dead_letter_queue():
    consumers = {}
    for name in FUNCTIONS:
        for event in template()["Resources"][name]["Properties"].get("Events", {}).values():
            if event["Type"] == "SQS":
                assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
                consumers[event["Properties"]["Queue"]["Fn::GetAtt"][0]] = name
    assert consumers == {"LaunchQueue": "LauncherFunction", "CompletionQueue": "CompletionFunction"}
    for queue, function in consumers.items():
        props = template()["Resources"][queue]["Properties"]
        assert props["VisibilityTimeout"] >= 6 * _function_props(function)["Timeout"], queue
        assert props["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}


def test_routes_schedule_and_outputs():
    routes = {}
    for name in FUNCTIONS:
        for event in template()["Resources"][name]["Properties"].get("Events", {}).values():
            if event["Type"] == "HttpApi":
                routes[(event["Properties"]["Method"], event["Properties"]["Path"])] = name
            if event["Type"] == "Schedule":
                assert name == "ReaperFunction"
                period_s = int(re.match(r"rate\((\d+) minutes\)", event["Properties"]["Schedule"]).group(1)) * 60
                assert _function_props(name)["Timeout"] < period_s
    assert routes == {("POST", "/webhook"): "WebhookFunction", ("POST", "/callback"): "CompletionFunction"}
    assert _function_props("WebhookFunction")["Timeout"] <= 10  # B2 waits a few seconds only
    outputs = template()["Outputs"]
    assert outputs["WebhookUrl"]["Value"]["Fn::Sub"].endswith("/webhook")
    for launching in ("LauncherFunction", "ReaperFunction"):  # the two that start jobs tell them where
        assert environment_variables(launching)["WATCHER_CALLBACK_URL"] == outputs["CallbackUrl"]["Value"]


def test_functions_behind_the_api_do_not_refer_to_it():
    """The API's routes refer to WebhookFunction and CompletionFunction; if either referred back
    (say, the callback URL in its environment), CloudFormation would refuse the circular dependency."""
    for name, routed in ((n, r) for n, r in template()["Resources"].items() if r["Type"] == "AWS::Serverless::Function"):
        events = routed["Properties"].get("Events", {}).values()
        if any(e["Type"] == "HttpApi" for e in events):
            assert "HttpApi" not in str(environment_variables(name)), name


def test_ledger_table_is_on_demand_with_ttl():
    (table,) = _resources("AWS::DynamoDB::Table").values()
    assert table["Properties"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["Properties"]["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


def test_build_recipe_covers_every_function_and_ships_only_the_control_plane():
    code_dir = REPO / template()["Globals"]["Function"]["CodeUri"]
    makefile = (code_dir / "Makefile").read_text()
    for name in FUNCTIONS:
        assert template()["Resources"][name]["Metadata"] == {"BuildMethod": "makefile"}
        assert f"build-{name}" in makefile
    runtime = template()["Globals"]["Function"]["Runtime"]
    assert f"LAMBDA_PYTHON ?= {runtime.removeprefix('python')}\n" in makefile  # wheels for that runtime
    for package in ("handlers", "vastdrop"):
        assert (code_dir / package).resolve() == REPO / package
    assert sorted(p.name for p in code_dir.iterdir() if p.is_dir()) == ["handlers", "vastdrop"]


@pytest.mark.parametrize("requirements", ["requirements.txt", "requirements-sdk-only.txt"])
def test_lambda_requirements_agree_with_pyproject(requirements):
    """The Lambda bundle installs what pyproject.toml asks for, in versions it allows."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {Requirement(r).name: Requirement(r) for r in project}
    lines = (REPO / "serverless" / requirements).read_text().splitlines()
    for line in (ln.split("#")[0].strip() for ln in lines):
        if not line:
            continue
        req = Requirement(line)
        if req.name in wanted:
            pins = [s.version for s in req.specifier if s.operator == "=="]
            for version in pins:
                assert wanted[req.name].specifier.contains(version), f"{req} vs pyproject's {wanted[req.name]}"
        else:
            assert req.name == "python-dateutil", f"{req.name} is not a project dependency"


def test_parameter_defaults_are_the_settings_defaults():
    """A parameter passed straight to a setting defaults to what the watcher defaults to."""
    checked = 0
    for var, value in environment_variables().items():
        if not (isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in template()["Parameters"]):
            continue
        param = template()["Parameters"][value["Ref"]]
        field = ControlSettings.model_fields[var.removeprefix("WATCHER_").lower()]
        if field.default is not None:
            assert type(field.default)(param["Default"]) == field.default, (value["Ref"], field.default)
            checked += 1
    assert checked >= 7
