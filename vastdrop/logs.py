"""Structured logs: one JSON object per line, secrets scrubbed before anything is written.

Presigned query strings, registered secret values and AWS-style secret fields never reach a line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import IO

_PRESIGNED = re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*")
_SECRET_FIELDS = re.compile(
    r"(?i)((?:secret|password|api[_-]?key|token|signature|credential)[\w-]*[\"']?\s*[=:]\s*[\"']?)([^\s\"',}&]+)"
)
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Values that must never be printed (API keys, signing secrets); short values are ignored."""
    if value and len(value) >= 6:
        _secrets.add(value)


def scrub(text: str) -> str:
    text = _PRESIGNED.sub(r"\1?<redacted>", text)
    text = _SECRET_FIELDS.sub(r"\1<redacted>", text)
    for secret in _secrets:
        text = text.replace(secret, "<redacted>")
    return text


class JsonFormatter(logging.Formatter):
    # Attributes every LogRecord has; anything else was passed with `extra=` and is kept as a field.
    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return scrub(json.dumps(entry, default=str, ensure_ascii=False))


def configure(stream: IO[str] | None = None, file_path: str | None = None, level: int = logging.INFO) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level)
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if file_path:
        handlers.append(logging.FileHandler(file_path, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3", "libav"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class ContextLogger(logging.LoggerAdapter):
    """A logger that stamps every line with fixed fields (job id, key) and keeps per-call `extra`."""

    def process(self, msg, kwargs):
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs
