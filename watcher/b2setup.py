"""`setup-b2`: create or merge the bucket's event-notification rules with b2sdk.

Two rules, both signed with the webhook secret and pointed at the webhook URL: object-created events
under the input prefix (new jobs) and under the staging prefix `<output>/.attempts/` (a job's own
manifest; the handler ignores its other objects). Rules of other names are kept as they are; ours are
replaced in place. Also one lifecycle rule: staging left behind by a crash expires (README,
"Staging and lifecycle rules").
"""

from __future__ import annotations

import re
from typing import Any

from vastdrop.errors import ConfigError
from vastdrop.layout import Layout
from vastdrop.settings import ControlSettings

B2_SECRET_RE = re.compile(r"^[A-Za-z0-9]{32}$")  # what B2 accepts as an HMAC signing secret
CREATED_EVENTS = ["b2:ObjectCreated:*"]
# Longer than any attempt lives (job_timeout_s + url_expiry_margin_s are hours): staging that the
# completion handler did not remove (a crash between publish and cleanup) is hidden, then deleted.
STAGING_HIDE_AFTER_DAYS = 2
STAGING_DELETE_AFTER_DAYS = 1


def desired_rules(rule_name: str, url: str, secret: str, input_prefix: str, output_prefix: str) -> list[dict]:
    def rule(suffix: str, prefix: str) -> dict[str, Any]:
        return {
            "name": f"{rule_name}-{suffix}",
            "eventTypes": list(CREATED_EVENTS),
            "isEnabled": True,
            "objectNamePrefix": prefix,
            "targetConfiguration": {"targetType": "webhook", "url": url, "hmacSha256SigningSecret": secret},
        }

    return [rule("input", input_prefix), rule("manifests", Layout(input_prefix, output_prefix).staging_root)]


def staging_lifecycle_rule(output_prefix: str) -> dict[str, Any]:
    return {"fileNamePrefix": Layout(output_prefix=output_prefix).staging_root,
            "daysFromUploadingToHiding": STAGING_HIDE_AFTER_DAYS,
            "daysFromHidingToDeleting": STAGING_DELETE_AFTER_DAYS}


def merge_lifecycle(existing: list[dict], ours: dict) -> list[dict]:
    return [r for r in existing if r.get("fileNamePrefix") != ours["fileNamePrefix"]] + [ours]


def merge_rules(existing: list[dict], ours: list[dict]) -> list[dict]:
    names = {r["name"] for r in ours}
    kept = [{k: v for k, v in r.items() if k not in ("isSuspended", "suspensionReason")}
            for r in existing if r["name"] not in names]
    return kept + ours


def setup_notification_rule(settings: ControlSettings, *, bucket_name: str, url: str, rule_name: str,
                            input_prefix: str, output_prefix: str, api: Any = None) -> dict:
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    if not B2_SECRET_RE.match(secret):
        raise ConfigError("B2 needs the webhook secret to be exactly 32 letters and digits")
    if not url.startswith("https://"):
        raise ConfigError("B2 delivers event notifications to https:// URLs only")
    if api is None:
        api = _authorized_api(settings)
    bucket = api.get_bucket_by_name(bucket_name)
    ours = desired_rules(rule_name, url, secret, input_prefix, output_prefix)
    bucket.set_notification_rules(merge_rules(list(bucket.get_notification_rules()), ours))
    lifecycle = staging_lifecycle_rule(output_prefix)
    bucket.update(lifecycle_rules=merge_lifecycle(list(bucket.lifecycle_rules or []), lifecycle))
    return {"name": rule_name, "rules": [r["name"] for r in ours], "lifecycle": lifecycle}


def _authorized_api(settings: ControlSettings) -> Any:
    from b2sdk.v2 import B2Api, InMemoryAccountInfo

    if not settings.b2_key_id or not settings.b2_application_key:
        raise ConfigError("set WATCHER_B2_KEY_ID and WATCHER_B2_APPLICATION_KEY")
    api = B2Api(InMemoryAccountInfo())
    api.authorize_account("production", settings.b2_key_id, settings.b2_application_key.get_secret_value())
    return api
