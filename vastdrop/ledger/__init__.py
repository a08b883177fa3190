"""Pick a ledger from a URL: `sqlite:///abs/path.db` or a plain path -> SQLite, `dynamodb://table`."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from vastdrop.errors import ConfigError
from vastdrop.ledger.base import JobRecord, Ledger, TransitionError
from vastdrop.ledger.sqlite import SqliteLedger

__all__ = ["JobRecord", "Ledger", "SqliteLedger", "TransitionError", "open_ledger"]


def open_ledger(url: str, *, dynamodb_client: Any = None) -> Ledger:
    if "://" not in url:
        return SqliteLedger(url)
    scheme, rest = url.split("://", 1)
    if scheme == "sqlite":
        # File-URL style: everything after "sqlite://" is the path, so sqlite:///x.db is /x.db.
        if not rest:
            raise ConfigError(f"ledger URL {url!r} has no path")
        return SqliteLedger(unquote(rest))
    if scheme == "dynamodb":
        table = rest.strip("/")
        if not table:
            raise ConfigError(f"ledger URL {url!r} has no table name")
        from vastdrop.ledger.dynamodb import DynamoLedger  # boto3 only when asked for

        return DynamoLedger(table, client=dynamodb_client)
    raise ConfigError(f"unknown ledger URL {url!r} (want sqlite:///path, a path, or dynamodb://table)")
