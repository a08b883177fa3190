"""Past its deadline a job on Vast.ai destroys its own instance, with the instance-scoped key
Vast injects (CONTAINER_ID, CONTAINER_API_KEY), so no idle GPU keeps billing."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def destroy_own_instance(container_id: str | None, api_key: str | None) -> bool:
    if not container_id or not api_key:
        return False
    try:
        from vastai import VastAI

        client = VastAI(api_key=api_key)  # the SDK takes its server from VAST_URL when set
        client.destroy_instance(id=int(container_id))
        logger.warning("STOPPING INSTANCE %s reason=deadline (self-destroy)", container_id)
        return True
    except Exception as exc:  # the reaper is the backstop
        logger.error("self-destroy of instance %s failed: %s", container_id, type(exc).__name__)
        return False
