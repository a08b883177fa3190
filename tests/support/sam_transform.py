"""Expand template.yaml with AWS's own SAM translator, as CloudFormation does on deploy, and print
the plain CloudFormation JSON. Run by the SAM CLI's interpreter (.venv-sam), which has the
translator: `python sam_transform.py template.yaml > out.json`.

What `sam package` would change first is changed here too: CodeUri becomes an S3 object. SAM
looks up AWS managed policies by name (an IAM call on deploy); the two it needs here are public
and fixed, so they are given. The region and account are the pseudo-parameters' stand-ins."""

from __future__ import annotations

import json
import os
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

MANAGED_POLICIES = {
    "AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "AWSLambdaSQSQueueExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole",
}


class ManagedPolicies:
    def load(self) -> dict[str, str]:
        return MANAGED_POLICIES


def main() -> int:
    with open(sys.argv[1]) as f:
        template = yaml_parse(f.read())
    template["Globals"]["Function"]["CodeUri"] = "s3://sam-artifacts/bundle.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    json.dump(transform(template, {}, ManagedPolicies()), sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
