"""On Vast.ai the job destroys its own instance as its very last act, so no second of an idle GPU
or of its storage is billed after the work is done. Vast injects CONTAINER_ID and CONTAINER_API_KEY
in every instance; that key is scoped to the instance and may start, stop or destroy exactly it.

The destroy is bounded (a short request timeout, at most one retry, a hard cap on the whole) and
never raises: the control plane's own destroy stays the guarantee. On Vast the destroy also ends
this process (the container is stopped), usually before the answer arrives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = (1.0, 2.0)  # connect, read: the destroy endpoint answers at once
RETRY_PAUSE_429_S = 3.0  # destroy_instance.yaml: one call per 3 s per identity; 429s carry no Retry-After
RETRY_PAUSE_CONNECTION_S = 0.5
TOTAL_BUDGET_S = 6.0  # the whole self-destroy, retry included, never takes longer than this


@dataclass(frozen=True)
class OwnInstance:
    """This job's Vast instance, with an SDK client made ready while the job runs (importing the
    SDK takes about 0.35 s, which should not sit between the manifest and the destroy)."""

    instance_id: int
    client: Any  # vastai.VastAI

    def announce(self, reason: str) -> None:
        """The one line saying the job is about to destroy its instance (reason: done or deadline);
        logged before the job's log is uploaded, so that log records it."""
        logger.warning("STOPPING INSTANCE %s reason=%s (self-destroy)", self.instance_id, reason)

    def destroy(self) -> bool:
        """Destroy the instance; True when Vast accepted it (or it was already gone). Never raises,
        never takes longer than TOTAL_BUDGET_S."""
        outcome: list[bool] = []
        worker = threading.Thread(target=lambda: outcome.append(self._destroy()), name="self-destroy",
                                  daemon=True)
        try:
            worker.start()
            worker.join(TOTAL_BUDGET_S)
        except BaseException as exc:  # noqa: BLE001 (never let the last act change the exit)
            logger.error("self-destroy of instance %s failed: %s", self.instance_id, type(exc).__name__)
            return False
        if not outcome:
            logger.error("self-destroy of instance %s took over %ss: left to the control plane",
                         self.instance_id, TOTAL_BUDGET_S)
            return False
        return outcome[0]

    def _destroy(self) -> bool:
        import requests

        for attempt in (1, 2):
            try:
                self.client.destroy_instance(id=self.instance_id)
                return True
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status == 404:  # already gone: what we wanted
                    return True
                if status != 429 or attempt == 2:
                    return self._failed(f"HTTP {status}")
                pause = RETRY_PAUSE_429_S
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == 2:
                    return self._failed(type(exc).__name__)
                pause = RETRY_PAUSE_CONNECTION_S
            except Exception as exc:  # noqa: BLE001 (the control plane is the backstop)
                return self._failed(type(exc).__name__)
            time.sleep(pause)
        return False

    def _failed(self, why: str) -> bool:
        # The reason only: an SDK error's text may carry the URL, never the key (it is a header).
        logger.error("self-destroy of instance %s failed: %s; left to the control plane", self.instance_id, why)
        return False


def own_instance(environ: Mapping[str, str]) -> OwnInstance | None:
    """This job's instance when it runs on Vast (CONTAINER_ID and CONTAINER_API_KEY set), else None.
    Never raises."""
    container_id, api_key = environ.get("CONTAINER_ID"), environ.get("CONTAINER_API_KEY")
    if not container_id or not api_key:
        return None
    try:
        instance_id = int(container_id)
        from vastai import VastAI

        # The SDK's default server is VAST_URL when set (vastai/api/client.py), read at its import;
        # passing it here keeps that true whenever the environment was rewritten after the import.
        client = VastAI(api_key=api_key, server_url=environ.get("VAST_URL") or None, retry=1)
        client.client.timeout = REQUEST_TIMEOUT_S
    except Exception as exc:  # noqa: BLE001
        logger.error("cannot prepare the self-destroy of instance %s: %s", container_id, type(exc).__name__)
        return None
    return OwnInstance(instance_id, client)
