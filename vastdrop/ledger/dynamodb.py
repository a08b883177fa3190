"""The DynamoDB ledger: one item per job (key job_id), every write a conditional write.

Atomicity comes from DynamoDB itself: a PutItem/UpdateItem with a ConditionExpression is evaluated and
applied as one step per item, so of several writers expecting the same state exactly one succeeds;
the rest get ConditionalCheckFailedException, which we return as None ("someone else moved it").

Choices:
- `list` and `find_by_instance` Scan with a filter and ConsistentRead. A GSI would only be
  eventually consistent (a watcher could miss the write it just made) and the table stays small
  because finished jobs expire through the TTL attribute `expires_at`.
- `params` is stored as a JSON string: a DynamoDB map would turn 2.0 into 2 and lose the
  float/int distinction; the ledger never queries inside params.
- top-level floats are stored as Decimal (boto3 refuses float) via repr(), which round-trips exactly.
- None fields are left out of the item (or REMOVEd on update) and read back as the dataclass default.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from vastdrop.errors import PermanentError, TransientError
from vastdrop.ledger.base import JSON_FIELDS, JobRecord, check_changes, check_transition
from vastdrop.states import JobState

TTL_ATTRIBUTE = "expires_at"  # epoch seconds; DynamoDB deletes the item some time after it
SECONDS_PER_DAY = 86_400
DEFAULT_TTL_DAYS = 30.0
TABLE_WAIT_DELAY_S = 1  # poll interval while a new table becomes ACTIVE
TABLE_WAIT_ATTEMPTS = 120

# Numbers come back as Decimal; these go back to int, every other number to float.
INT_FIELDS = frozenset(f.name for f in fields(JobRecord) if str(f.type).startswith("int"))

# Worth retrying: capacity/throttling, and the server's own failures (5xx are checked separately).
TRANSIENT_CODES = frozenset({
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
})
CONDITION_FAILED = "ConditionalCheckFailedException"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def create_table(client: Any, table_name: str) -> None:
    """Create the ledger table (on-demand, key job_id) and enable TTL on `expires_at`. Idempotent."""
    with _translated("create_table"):
        try:
            client.create_table(
                TableName=table_name,
                AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if _code(exc) != "ResourceInUseException":  # already exists (or being created)
                raise
        client.get_waiter("table_exists").wait(
            TableName=table_name,
            WaiterConfig={"Delay": TABLE_WAIT_DELAY_S, "MaxAttempts": TABLE_WAIT_ATTEMPTS},
        )
        ttl = client.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
        # Enabling twice is a ValidationException, so only ask when it is not on already.
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            client.update_time_to_live(
                TableName=table_name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
            )


class DynamoLedger:
    create_table = staticmethod(create_table)

    def __init__(self, table_name: str, client: Any = None, ttl_days: float = DEFAULT_TTL_DAYS) -> None:
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self.table_name = table_name
        self.client = client
        self.ttl_days = ttl_days

    def claim(self, record: JobRecord) -> bool:
        item = {k: _to_attr(k, v) for k, v in record.to_dict().items() if v is not None}
        if record.state.is_terminal():
            item[TTL_ATTRIBUTE] = _to_attr(TTL_ATTRIBUTE, self._expires_at())
        done = self._call(
            "put_item",
            TableName=self.table_name,
            Item=item,
            ConditionExpression="attribute_not_exists(job_id)",
        )
        return done is not None

    def get(self, job_id: str) -> JobRecord | None:
        resp = self._call(
            "get_item", TableName=self.table_name, Key=_key(job_id), ConsistentRead=True
        )
        item = (resp or {}).get("Item")  # get_item has no condition, so resp is never None
        return None if item is None else _decode(item)

    def transition(
        self, job_id: str, expected: JobState, target: JobState, **changes: Any
    ) -> JobRecord | None:
        check_transition(job_id, expected, target, changes)
        # Terminal records get a TTL; a replay back to QUEUED must drop it again or the job vanishes.
        ttl = self._expires_at() if JobState(target).is_terminal() else None
        changes = {**changes, "state": JobState(target).value, TTL_ATTRIBUTE: ttl}
        return self._write(job_id, "state", JobState(expected).value, changes)

    def update(self, job_id: str, expected_version: int, **changes: Any) -> JobRecord | None:
        check_changes(changes)
        return self._write(job_id, "version", expected_version, changes)

    def list(self, states: set[JobState] | None = None) -> list[JobRecord]:
        if states is not None and not states:
            return []
        kwargs: dict[str, Any] = {}
        if states is not None:
            values = {f":s{i}": _to_attr("state", JobState(s).value) for i, s in enumerate(states)}
            kwargs = {
                "FilterExpression": f"#s IN ({', '.join(values)})",
                "ExpressionAttributeNames": {"#s": "state"},
                "ExpressionAttributeValues": values,
            }
        records = [_decode(item) for item in self._scan(**kwargs)]
        return sorted(records, key=lambda r: (r.created_at, r.job_id))

    def find_by_instance(self, instance_id: str) -> JobRecord | None:
        items = self._scan(
            FilterExpression="instance_id = :i",
            ExpressionAttributeValues={":i": _to_attr("instance_id", instance_id)},
        )
        records = [_decode(item) for item in items]
        # Instance ids are unique per launch; if a stale item still names one, the newest write wins.
        return max(records, key=lambda r: r.updated_at, default=None)

    # ---- helpers ---------------------------------------------------------------------------

    def _expires_at(self) -> int:
        return int(time.time() + self.ttl_days * SECONDS_PER_DAY)

    def _write(self, job_id: str, guard: str, guard_value: Any, changes: dict[str, Any]) -> JobRecord | None:
        """One conditional UpdateItem: set (or REMOVE, for None) fields and bump version."""
        changes = {"updated_at": time.time(), **changes}
        names = {"#g": guard, "#version": "version"}
        values = {":g": _to_attr(guard, guard_value), ":one": _to_attr("version", 1)}
        sets, removes = ["#version = #version + :one"], []
        for i, (name, value) in enumerate(changes.items()):
            names[f"#f{i}"] = name
            if value is None:
                removes.append(f"#f{i}")
            else:
                values[f":f{i}"] = _to_attr(name, value)
                sets.append(f"#f{i} = :f{i}")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        resp = self._call(
            "update_item",
            TableName=self.table_name,
            Key=_key(job_id),
            UpdateExpression=expression,
            # Also fails on a missing item, so a write never creates a half-empty record.
            ConditionExpression="#g = :g",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return None if resp is None else _decode(resp["Attributes"])

    def _scan(self, **kwargs: Any) -> Iterable[dict[str, Any]]:
        pages = self.client.get_paginator("scan").paginate(
            TableName=self.table_name, ConsistentRead=True, **kwargs
        )
        with _translated("scan"):
            return [item for page in pages for item in page.get("Items", [])]

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any] | None:
        """Run one client call; None if its ConditionExpression failed (a lost race, not an error)."""
        with _translated(operation):
            try:
                return getattr(self.client, operation)(**kwargs)
            except ClientError as exc:
                if _code(exc) == CONDITION_FAILED:
                    return None
                raise


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn botocore's errors into TransientError (retry) or PermanentError (don't)."""
    what = f"dynamodb {action}"
    try:
        yield
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if _code(exc) in TRANSIENT_CODES or status >= 500:
            raise TransientError(f"{what}: {exc}") from exc
        raise PermanentError(f"{what}: {exc}") from exc
    except (BotoConnectionError, HTTPClientError) as exc:  # network: refused, reset, timed out
        raise TransientError(f"{what}: {exc}") from exc
    except BotoCoreError as exc:  # no credentials, bad parameters, ...
        raise PermanentError(f"{what}: {exc}") from exc


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _key(job_id: str) -> dict[str, Any]:
    return {"job_id": {"S": job_id}}


def _to_attr(name: str, value: Any) -> dict[str, Any]:
    if name in JSON_FIELDS and (value is not None or name == "params"):
        return {"S": json.dumps(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PermanentError(f"{name}={value!r}: DynamoDB cannot store NaN or infinity")
        value = Decimal(repr(value))  # repr is the shortest string that reads back as the same float
    return _serializer.serialize(value)


def _decode(item: dict[str, Any]) -> JobRecord:
    data = {k: _deserializer.deserialize(v) for k, v in item.items()}
    for name, value in data.items():
        if isinstance(value, Decimal):
            data[name] = int(value) if name in INT_FIELDS else float(value)
    data["params"] = json.loads(data.get("params", "{}"))
    for name in JSON_FIELDS - {"params"}:
        if isinstance(data.get(name), str):
            data[name] = json.loads(data[name])
    return JobRecord.from_dict(data)
