"""Structured logs: one JSON object per line, secrets scrubbed before anything is written.

Presigned query strings, registered secret values (in every escaped form a line can carry them) and
secret-looking fields never reach a line. Scrubbing is linear in its input: host-written text of any
size and shape costs a scan, never a backtracking blow-up. No line is longer than MAX_LINE_CHARS.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

REDACTED = "<redacted>"
MIN_SECRET_CHARS = 6  # shorter values would redact ordinary words
HOST_TEXT_MAX_CHARS = 2000  # what a log line keeps of text a host wrote (status_msg, manifest errors)
MAX_FIELD_CHARS = 16_384  # any single string in a line: message, field or traceback
MAX_LINE_CHARS = 65_536  # a whole line; past it only the fixed fields and the message are kept
SCRUB_WINDOW_LIMITS = 4  # bounded() scrubs this many times what it keeps, never a whole huge text

# Every pattern below either fails within a few characters of where it starts or consumes what it scanned,
# so each character is looked at a bounded number of times (no quadratic rescans, no nested quantifiers).
# A backslash is consumed with the character after it: a redaction never leaves half a JSON escape behind.
_PRESIGNED = re.compile(r"(?i)(https?://[^\s?\"']+)(\?(?:[^\s\"'\\]|\\.?)*+)?")
_SECRET_WORD = r"(?:secret|password|api[_-]?key|token|signature|credential)[\w-]*+"
_SECRET_FIELDS = re.compile(
    rf"(?i)({_SECRET_WORD})"
    r"(?:((?:\\?[\"'])?\s*+[=:]\s*+(?:\\?[\"'])?)"  # `=`, `: `, `": "`, `\": \"` (a JSON-escaped object)
    r"((?:[^\s\"',}&\\]|\\.?)++)?)?"
)
_SECRET_KEY = re.compile(_SECRET_WORD, re.I)

_lock = threading.Lock()
_secrets: set[str] = set()
# One alternation of every form of every secret, longest first, and the longest form's length.
_secret_forms: tuple[re.Pattern[str], int] | None = None


def register_secret(value: str | None) -> None:
    """Values that must never be printed (API keys, signing secrets); short values are ignored."""
    global _secret_forms
    if not value or len(value) < MIN_SECRET_CHARS:
        return
    with _lock:
        _secrets.add(value)
        forms = sorted({form for secret in _secrets for form in _forms(secret)}, key=len, reverse=True)
        _secret_forms = re.compile("|".join(map(re.escape, forms))), len(forms[0])


def _forms(secret: str) -> set[str]:
    """How a secret can appear in a line: raw, JSON-escaped (ASCII-only or not), repr'd, and a JSON string
    inside a JSON string (an error body quoted in a message that the formatter dumps again)."""
    once = {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], repr(secret)[1:-1]}
    twice = {json.dumps(form, ensure_ascii=ascii_only)[1:-1] for form in once for ascii_only in (True, False)}
    return {secret} | once | twice


def scrub(text: str) -> str:
    secrets = _secret_forms
    if secrets is not None:  # first, so a field or URL redaction cannot cut a secret in two and miss it
        text = secrets[0].sub(REDACTED, text)
    text = _PRESIGNED.sub(lambda m: m[1] + "?" + REDACTED if m[2] else m[0], text)
    return _SECRET_FIELDS.sub(lambda m: m[1] + m[2] + REDACTED if m[2] and m[3] else m[0], text)


def bounded(text: object, limit: int = HOST_TEXT_MAX_CHARS) -> str:
    """Text someone else wrote, scrubbed and then cut to `limit` characters with a visible mark.

    Only its first SCRUB_WINDOW_LIMITS * `limit` characters are scrubbed, so a huge text costs what a short
    one does. Scrubbed before the cut, so a cut through a query string or a secret never leaves part of it."""
    text = str(text)
    window = limit * SCRUB_WINDOW_LIMITS
    if len(text) <= window:
        clean = scrub(text)
        if len(clean) <= limit:
            return clean
    else:
        # A secret cut by the window's end is not found whole, but it stays the scrubbed window's last
        # characters (redactions keep the order of what they leave): drop as many as its longest form.
        secrets = _secret_forms
        clean = scrub(text[:window])
        clean = clean[: len(clean) - (secrets[1] if secrets else 0)]
    return f"{clean[:limit]}… [cut from {len(text)} characters]"


class _Escapes(dict):
    """A str.translate table filled in as characters are met: printable ones (and `keep`) stay themselves,
    any other becomes `escape(code point)`. Built lazily, so a line costs one C-level pass."""

    def __init__(self, escape: Callable[[int], str], keep: str = "") -> None:
        super().__init__()
        self.escape, self.keep = escape, keep

    def __missing__(self, code: int) -> str:
        ch = chr(code)
        self[code] = ch if ch.isprintable() or ch in self.keep else self.escape(code)
        return self[code]


def _text_escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _json_escape(code: int) -> str:
    if code < 0x10000:
        return f"\\u{code:04x}"
    high, low = divmod(code - 0x10000, 0x400)
    return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"


_ONE_LINE, _LINES = _Escapes(_text_escape), _Escapes(_text_escape, keep="\n\t")
# json.dumps escapes C0 controls but leaves C1 controls (U+009B is a CSI), bidi overrides, line separators
# and lone surrogates raw; as JSON escapes they neither act on a terminal nor break a UTF-8 stream.
_JSON_SAFE = _Escapes(_json_escape)


def printable(text: object, *, lines: bool = False) -> str:
    """`text` safe to print on a terminal: ESC, BEL, CR, backspace, bidi overrides and every other
    non-printable character written as its escape (`\\x1b`); `lines` keeps newlines and tabs (a log)."""
    return str(text).translate(_LINES if lines else _ONE_LINE)


def _clean(value: Any) -> Any:
    """A field's value, scrubbed and bounded before it is dumped: a secret-named field is redacted whole."""
    if isinstance(value, str):
        return bounded(value, MAX_FIELD_CHARS)
    if isinstance(value, dict):
        return {str(k): REDACTED if _SECRET_KEY.search(str(k)) else _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return bounded(value, MAX_FIELD_CHARS)


class JsonFormatter(logging.Formatter):
    # Attributes every LogRecord has; anything else was passed with `extra=` and is kept as a field.
    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        head = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry = {**head, **{k: v for k, v in vars(record).items() if k not in self._STANDARD}}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # Scrubbed before dumping (the raw forms) and after (a secret-named key, what `default` produced).
        line = scrub(json.dumps(_clean(entry), ensure_ascii=False))
        if len(line) > MAX_LINE_CHARS:
            line = scrub(json.dumps({**_clean(head), "truncated": sorted(set(entry) - set(head))},
                                    ensure_ascii=False))
        return line.translate(_JSON_SAFE)


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
