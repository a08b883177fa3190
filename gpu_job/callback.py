"""The optional completion callback: POST the manifest, signed `X-Signature: v1=<hex HMAC-SHA256(body)>`.

Best effort: the manifest object is the commit point, so a failed callback is logged, never fatal.
"""

from __future__ import annotations

import logging

import requests
from pydantic import SecretStr
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from vastdrop import signing
from vastdrop.jobspec import redact_url

logger = logging.getLogger(__name__)

CALLBACK_TIMEOUT_S = 10
CALLBACK_ATTEMPTS = 4


class _Retryable(Exception):
    pass


@retry(retry=retry_if_exception_type(_Retryable), stop=stop_after_attempt(CALLBACK_ATTEMPTS),
       wait=wait_random_exponential(multiplier=0.5, max=8), reraise=True)
def _send(url: str, headers: dict[str, str], body: bytes) -> int:
    try:
        response = requests.post(url, data=body, headers=headers, timeout=CALLBACK_TIMEOUT_S)
    except requests.RequestException as exc:
        raise _Retryable(type(exc).__name__) from None
    if response.status_code == 429 or response.status_code >= 500:
        raise _Retryable(f"HTTP {response.status_code}")
    return response.status_code


def post(url: str, secret: SecretStr | None, body: bytes) -> bool:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Signature"] = signing.sign(secret.get_secret_value(), body)
    try:
        status = _send(url, headers, body)
    except _Retryable as exc:
        logger.warning("callback to %s failed: %s", redact_url(url), exc)
        return False
    ok = 200 <= status < 300
    logger.log(logging.INFO if ok else logging.WARNING, "callback answered %d", status, extra={"url": redact_url(url)})
    return ok
