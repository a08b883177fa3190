"""template.yaml's stack, stood up on loopback: what CloudFormation would create (ledger table,
queues with their dead-letter queue, the secret the user creates) on moto's server, and each
function's environment resolved from the template itself -- so a renamed variable on either side
fails the tests. Also the event payloads AWS hands to Lambda (API Gateway HTTP API 2.0, SQS batch,
EventBridge schedule), built from the recorded samples in tests/events/.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "tests" / "events"
ACCOUNT = "123456789012"
WEBHOOK_SECRET = "0123456789abcdefghijABCDEFGHIJ01"  # B2 wants exactly 32 letters and digits
CALLBACK_SECRET = "callback-secret-for-tests"


@cache
def template() -> dict[str, Any]:
    from cfnlint.decode import decode

    decoded, matches = decode(str(REPO / "template.yaml"))
    assert decoded is not None, matches
    return decoded


def resolve(value: Any, refs: dict[str, Any]) -> Any:
    """Evaluate the intrinsic functions template.yaml uses, with `refs` for Ref/GetAtt/${...}.
    Returns None for AWS::NoValue."""
    if isinstance(value, str | int | float):
        return value
    if isinstance(value, list):
        return [resolve(v, refs) for v in value]
    ((fn, arg),) = value.items()
    if fn == "Ref":
        return None if arg == "AWS::NoValue" else refs[arg]
    if fn == "Fn::GetAtt":
        return refs[".".join(arg)]
    if fn == "Fn::Sub":
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(refs[m.group(1)]), arg)
    if fn == "Fn::If":
        cond, then, other = arg
        return resolve(then if resolve(template()["Conditions"][cond], refs) else other, refs)
    if fn == "Fn::Not":
        return not resolve(arg[0], refs)
    if fn == "Fn::Equals":
        left, right = resolve(arg, refs)
        return str(left) == str(right)
    raise NotImplementedError(fn)


def environment_variables(function: str | None = None) -> dict[str, Any]:
    """A function's environment as SAM merges it (Globals, then the function's own); without a
    function, every variable any function gets (one process plays all four in the tests)."""
    resources = template()["Resources"]
    names = [function] if function else [n for n, r in resources.items() if r["Type"] == "AWS::Serverless::Function"]
    merged = dict(template()["Globals"]["Function"]["Environment"]["Variables"])
    for name in names:
        merged.update(resources[name]["Properties"].get("Environment", {}).get("Variables", {}))
    return merged


@dataclass
class Stack:
    """The deployed stack's resources on moto, and the functions' environment."""

    env: dict[str, str]
    table: str
    launch_queue_url: str
    completion_queue_url: str
    dlq_url: str
    secret_id: str
    sqs: Any
    secret_values: dict[str, str] = field(repr=False, default_factory=dict)


def deploy(moto: Any, seaweed: Any, bucket: str, *, vast_url: str, vast_api_key: str,
           callback_url: str, parameters: dict[str, Any] | None = None) -> Stack:
    """Create the resources and resolve the Globals environment with these parameters."""
    from vastdrop.ledger.dynamodb import create_table

    stack = f"vd{uuid.uuid4().hex[:10]}"
    table = f"{stack}-JobsTable"
    create_table(moto.client("dynamodb"), table)
    sqs = moto.client("sqs")
    dlq = sqs.create_queue(QueueName=f"{stack}-DeadLetterQueue")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queues = {}
    for name in ("LaunchQueue", "CompletionQueue"):
        props = template()["Resources"][name]["Properties"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": props["RedrivePolicy"]["maxReceiveCount"]}
        queues[name] = sqs.create_queue(QueueName=f"{stack}-{name}", Attributes={
            "VisibilityTimeout": str(props["VisibilityTimeout"]), "RedrivePolicy": json.dumps(redrive)})["QueueUrl"]
    secret_name = f"{stack}/secret"
    secret_values = {
        "webhook_secret": WEBHOOK_SECRET, "callback_secret": CALLBACK_SECRET, "vast_api_key": vast_api_key,
        # The bucket's own key, as a B2 application key would be: not the functions' AWS identity.
        "s3_access_key_id": seaweed.access_key, "s3_secret_access_key": seaweed.secret_key,
    }
    moto.client("secretsmanager").create_secret(Name=secret_name, SecretString=json.dumps(secret_values))

    params = {name: p.get("Default") for name, p in template()["Parameters"].items()}
    params.update({"BucketName": bucket, "SecretName": secret_name, "S3EndpointUrl": seaweed.endpoint_url,
                   "S3Region": seaweed.region, "VastImage": "vastdrop/gpu-job:test"})
    params.update(parameters or {})
    refs = {**params, "AWS::Region": moto.region, "AWS::URLSuffix": "amazonaws.com", "AWS::AccountId": ACCOUNT,
            "JobsTable": table, "LaunchQueue": queues["LaunchQueue"],
            "CompletionQueue": queues["CompletionQueue"], "HttpApi": "api0123456"}
    env = {}
    for name, value in environment_variables().items():
        resolved = resolve(value, refs)
        if resolved is not None:
            env[name] = str(resolved)
    # What differs on loopback: the Vast API (the emulator) and the public callback URL (a relay
    # to the completion function); and AWS's own endpoints, which Lambda would not need.
    env.update({
        "WATCHER_VAST_SERVER_URL": vast_url,
        "WATCHER_CALLBACK_URL": callback_url,
        "AWS_ACCESS_KEY_ID": moto.access_key, "AWS_SECRET_ACCESS_KEY": moto.secret_key,
        "AWS_DEFAULT_REGION": moto.region, "AWS_REGION": moto.region,
        "AWS_ENDPOINT_URL_DYNAMODB": moto.endpoint_url, "AWS_ENDPOINT_URL_SQS": moto.endpoint_url,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto.endpoint_url,
    })
    return Stack(env=env, table=table, launch_queue_url=queues["LaunchQueue"],
                 completion_queue_url=queues["CompletionQueue"], dlq_url=dlq, secret_id=secret_name, sqs=sqs,
                 secret_values=secret_values)


# -- events, as AWS delivers them ------------------------------------------------------------------


def _sample(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def http_event(path: str, body: bytes, headers: dict[str, str], *, base64_body: bool = False) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) request, as the function receives it."""
    event = _sample("apigw_v2_post.json")
    now = time.time()
    event["routeKey"] = f"POST {path}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["routeKey"] = event["routeKey"]
    event["requestContext"]["requestId"] = uuid.uuid4().hex[:16] + "="
    event["requestContext"]["timeEpoch"] = int(now * 1000)
    event["headers"] = {**event["headers"], "content-length": str(len(body)), **{k.lower(): v for k, v in headers.items()}}
    event["isBase64Encoded"] = base64_body
    event["body"] = base64.b64encode(body).decode() if base64_body else body.decode()
    return event


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """An SQS batch as the event source mapping hands it to the function (from ReceiveMessage output)."""
    template_record = _sample("sqs_batch.json")["Records"][0]
    records = []
    for m in messages:
        record = copy.deepcopy(template_record)
        record.update(messageId=m["MessageId"], receiptHandle=m["ReceiptHandle"], body=m["Body"],
                      md5OfBody=hashlib.md5(m["Body"].encode()).hexdigest(), eventSourceARN=queue_arn)
        record["attributes"].update({k: v for k, v in m.get("Attributes", {}).items() if k in record["attributes"]})
        records.append(record)
    return {"Records": records}


def receive(stack: Stack, queue_url: str) -> dict[str, Any]:
    """Take what is waiting in a queue, as the event source mapping would, as one SQS event."""
    out = stack.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                    AttributeNames=["All"])
    arn = stack.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return sqs_event(out.get("Messages", []), arn)


def delete(stack: Stack, queue_url: str, event: dict[str, Any], failures: list[dict[str, str]]) -> None:
    """What the event source mapping does after the function returns: delete the successes."""
    failed = {f["itemIdentifier"] for f in failures}
    for record in event["Records"]:
        if record["messageId"] not in failed:
            stack.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"])


def scheduled_event() -> dict[str, Any]:
    """An EventBridge Scheduler 'Scheduled Event' for the reaper's rate(2 minutes) rule."""
    event = _sample("eventbridge_scheduled.json")
    event["id"] = str(uuid.uuid4())
    event["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return event


def signed_b2(*events: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """A B2 event-notification delivery of `events` and its signature header, as B2 sends them."""
    from vastdrop import signing

    body = json.dumps({"events": list(events)}).encode()
    return body, {"X-Bz-Event-Notification-Signature": signing.sign(WEBHOOK_SECRET, body)}


def b2_event(bucket: str, key: str, size: int, *, event_type: str = "b2:ObjectCreated:Upload",
             rule: str = "vastdrop-input") -> dict[str, Any]:
    """One B2 event notification, shaped like tests/events/b2_object_created.json."""
    event = copy.deepcopy(_sample("b2_object_created.json")["events"][0])
    event.update(bucketName=bucket, objectName=key, objectSize=size, eventType=event_type, matchedRuleName=rule,
                 eventId=uuid.uuid4().hex, eventTimestamp=int(time.time() * 1000))
    return event


def s3_event(bucket: str, key: str, size: int, etag: str) -> dict[str, Any]:
    """An S3 event notification (ObjectCreated:Put) as S3 invokes a function with it."""
    event = _sample("s3_object_created.json")
    record = event["Records"][0]
    record["eventTime"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    record["s3"]["bucket"].update(name=bucket, arn=f"arn:aws:s3:::{bucket}")
    # S3 percent-encodes keys in notifications (spaces as '+').
    from urllib.parse import quote_plus

    record["s3"]["object"].update(key=quote_plus(key, safe="/"), size=size, eTag=etag.strip('"'))
    return event
