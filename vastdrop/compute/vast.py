"""VastCompute: one Vast.ai instance per job, through the `vastai` SDK.

Retries are ours, not the SDK's: the client is built with `retry=1`, because the SDK re-sends a
create answered 502/503/504 -- and each re-send can make another billed contract. Every other call
is retried with tenacity (429, 5xx, connection errors; jittered exponential backoff; a small
Retry-After is honoured). A create is never retried blindly: after any failed create we look for
instances carrying the job's label that were not there before, adopt the first, destroy the extras,
and only when none exists do we create again.

Foreign errors are translated here: TransientError (throttled, 5xx, network, no offer now, over our
caps) or PermanentError (ConfigError for a rejected key, bad request). Messages carry operation
names, HTTP status codes and Vast error codes only -- never the API key, env values or server text.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from vastai import VastAI

from vastdrop.compute import register_env_secrets
from vastdrop.compute.base import Instance, InstanceState, job_id_from_label, label_for
from vastdrop.errors import (
    CapacityError,
    ConfigError,
    PermanentError,
    TransientError,
    VastdropError,
)
from vastdrop.jobspec import JobSpec
from vastdrop.logs import register_secret, scrub
from vastdrop.settings import (  # the defaults users see in the settings reference
    DEFAULT_MAX_DPH,
    DEFAULT_MAX_INSTANCES,
    DEFAULT_MAX_TOTAL_DPH,
    DEFAULT_MIN_GPU_RAM_GB,
    DEFAULT_VAST_IMAGE,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_DISK_GB = 30.0
DEFAULT_MIN_RELIABILITY = 0.95
# The image's base is built for CUDA 12.8 (Dockerfile): a host whose driver supports less cannot run it.
DEFAULT_MIN_CUDA = 12.8
GPU_RAM_MB_PER_GB = 1000  # what the SDK's own query parser multiplies gpu_ram by (offers carry MB)

_RETRY_STATUS = {429, 500, 502, 503, 504}
_GONE_HINTS = ("no_such_ask", "not available", "unavailable", "already rented", "rented")
_CODE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_EXIT_MSG_RE = re.compile(r"exit(?:ed)?(?: with)?(?: exit)? code (-?\d+)", re.I)

_STATE_MAP: dict[str | None, InstanceState] = {
    None: InstanceState.PENDING,
    "scheduling": InstanceState.PENDING,
    "created": InstanceState.LOADING,
    "loading": InstanceState.LOADING,
    "running": InstanceState.RUNNING,
    "exited": InstanceState.EXITED,
    "stopped": InstanceState.EXITED,
    "offline": InstanceState.EXITED,
}


class VastConfig(BaseModel):
    """What to rent and how much we may spend. GB are 10^9 bytes like Vast's own filters; $/h is USD."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = DEFAULT_VAST_IMAGE
    image_login: SecretStr | None = None  # "-u user -p token registry" for a private image
    disk_gb: float = Field(default=DEFAULT_DISK_GB, gt=0)
    gpu_names: list[str] = Field(default_factory=list)  # e.g. ["RTX 4090", "RTX_3090"]; empty = any
    num_gpus: int = Field(default=1, ge=1)
    min_gpu_ram_gb: float = Field(default=DEFAULT_MIN_GPU_RAM_GB, ge=0)
    max_dph: float = Field(default=DEFAULT_MAX_DPH, gt=0)  # per instance
    min_reliability: float = Field(default=DEFAULT_MIN_RELIABILITY, ge=0, le=1)
    min_cuda: float = Field(default=DEFAULT_MIN_CUDA, ge=0)
    verified_only: bool = True
    max_instances: int = Field(default=DEFAULT_MAX_INSTANCES, ge=1)  # our live instances at once
    max_total_dph: float = Field(default=DEFAULT_MAX_TOTAL_DPH, gt=0)  # sum over our live instances
    runtype: str | None = "args"  # "args": run the image's entrypoint, as a one-shot job wants
    args: list[str] | None = None
    onstart: str | None = None
    offer_search_limit: int = Field(default=20, ge=1)
    max_offers_tried: int = Field(default=3, ge=1)  # per launch, when offers vanish under us
    create_attempts: int = Field(default=3, ge=1)  # per offer, each after a reconcile found nothing
    api_attempts: int = Field(default=5, ge=1)  # tenacity attempts for every other call
    backoff_initial_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=10.0, ge=0)
    max_retry_after_s: float = Field(default=30.0, ge=0)  # a longer Retry-After: give up, TransientError
    reconcile_polls: int = Field(default=3, ge=1)  # show_instances looks after an ambiguous failed create
    reconcile_interval_s: float = Field(default=1.0, ge=0)
    request_timeout_s: float = Field(default=60.0, gt=0)


# -- error helpers ------------------------------------------------------------------------------------


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) if response is not None else None


def _body(exc: BaseException) -> dict[str, Any]:
    response = getattr(exc, "response", None)
    try:
        body = response.json() if response is not None else None
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _code(body: dict[str, Any]) -> str:
    code = body.get("error")
    return code if isinstance(code, str) and _CODE_RE.match(code) else "unknown"


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    try:
        return float(response.headers["Retry-After"]) if response is not None else None
    except (KeyError, TypeError, ValueError):
        return None


def _offer_gone(status: int | None, body: dict[str, Any]) -> bool:
    text = f"{body.get('error', '')} {body.get('msg', '')}".lower()
    return status == 404 or any(hint in text for hint in _GONE_HINTS)


class _Retryable:
    def __init__(self, config: VastConfig) -> None:
        self.config = config

    def __call__(self, exc: BaseException) -> bool:
        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return True
        status = _status(exc)
        if status not in _RETRY_STATUS:
            return False
        if status == 429:
            if _code(_body(exc)) == "search_quota_exceeded":
                return False  # resets at UTC midnight
            ra = _retry_after(exc)
            return ra is None or ra <= self.config.max_retry_after_s
        return True


def _translate(exc: BaseException, what: str) -> VastdropError:
    """A foreign error as ours; the text holds the operation, status and error code only."""
    if isinstance(exc, VastdropError):
        return exc
    if isinstance(exc, requests.HTTPError) and _status(exc) is not None:
        status = _status(exc)
        assert status is not None
        code = _code(_body(exc))
        text = f"vast {what}: HTTP {status} {code}"
        if status in (401, 403):
            return ConfigError(text + " (is the Vast API key valid?)")
        if status == 429 or status >= 500 or code == "max_instances_exceeded":
            return TransientError(text)
        return PermanentError(text)
    if isinstance(exc, (requests.RequestException, TimeoutError, ValueError)):
        return TransientError(f"vast {what}: {type(exc).__name__}")
    return PermanentError(f"vast {what}: unexpected {type(exc).__name__}")


# -- row mapping ----------------------------------------------------------------------------------------


def state_of(row: dict[str, Any] | None) -> InstanceState:
    """actual_status -> InstanceState (None: not yet loading; a missing row: GONE)."""
    if row is None:
        return InstanceState.GONE
    status = row.get("actual_status")
    status = status.lower() if isinstance(status, str) else status
    return _STATE_MAP.get(status, InstanceState.PENDING)


def _exit_code(row: dict[str, Any]) -> int | None:
    code = row.get("exit_code")
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    match = _EXIT_MSG_RE.search(str(row.get("status_msg") or ""))
    return int(match.group(1)) if match else None


def instance_from_row(row: dict[str, Any]) -> Instance:
    state = state_of(row)
    offer = row.get("ask_contract_id")
    return Instance(
        id=str(row["id"]),
        label=row.get("label"),
        state=state,
        exit_code=_exit_code(row) if state is InstanceState.EXITED else None,
        gpu_name=row.get("gpu_name"),
        dph=_float(row.get("dph_total")),
        offer_id=None if offer is None else str(offer),
        started_at=_float(row.get("start_date")),
        # never extra_env: it holds the job's secrets
        extra={k: row.get(k) for k in ("actual_status", "intended_status", "cur_state", "status_msg")},
    )


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


# -- the adapter -------------------------------------------------------------------------------------------


class VastCompute:
    name = "vast"

    def __init__(
        self,
        client: VastAI | None = None,
        *,
        api_key: str | None = None,
        server_url: str | None = None,
        config: VastConfig | None = None,
    ) -> None:
        self.config = config or VastConfig()
        register_secret(api_key)
        if client is None:
            client = VastAI(api_key=api_key, server_url=server_url, retry=1)
        inner = getattr(client, "client", None)
        if inner is not None:
            inner.retry = 1  # the SDK must never re-send a create: retries are ours
            inner.timeout = self.config.request_timeout_s
            register_secret(getattr(inner, "api_key", None))
        if self.config.image_login is not None:
            register_secret(self.config.image_login.get_secret_value())
        self.client = client
        self._retryable = _Retryable(self.config)
        self._jitter = wait_random_exponential(multiplier=self.config.backoff_initial_s,
                                               max=self.config.backoff_max_s)
        self._launch_lock = threading.Lock()

    # -- port ----------------------------------------------------------------------------------

    def launch(self, spec: JobSpec, env: dict[str, str]) -> Instance:
        register_env_secrets(env)
        env = {str(k): str(v) for k, v in env.items()}
        label = label_for(spec.id)
        with self._launch_lock:
            ours = self._our_rows()
            mine = [r for r in ours if r.get("label") == label]
            adopted = self._adopt_existing(mine, env)
            if adopted is not None:
                return adopted
            self._check_caps(ours)
            spent = sum(_float(r.get("dph_total")) or 0.0 for r in ours)
            offers = self._affordable_offers(self._search(), spent)
            known = {r["id"] for r in mine}
            return self._create(offers, label, env, known)

    def get(self, instance_id: str) -> Instance:
        try:
            iid = int(instance_id)
        except (TypeError, ValueError):
            return Instance(id=str(instance_id), label=None, state=InstanceState.GONE)
        try:
            row = self._call("show_instance", self.client.show_instance, id=iid, translate=False)
        except requests.HTTPError as exc:
            if _status(exc) != 404:  # the live API may answer 404 no_such_instance instead of null
                raise _translate(exc, "show_instance") from None
            row = None
        if row is None:
            return Instance(id=str(instance_id), label=None, state=InstanceState.GONE)
        return instance_from_row(row)

    def list_ours(self) -> list[Instance]:
        return [instance_from_row(r) for r in self._our_rows()]

    def destroy(self, instance_id: str) -> None:
        try:
            iid = int(instance_id)
        except (TypeError, ValueError):
            return  # not a Vast id: nothing of ours can carry it
        try:
            res = self._call("destroy_instance", self.client.destroy_instance, id=iid, translate=False)
        except requests.HTTPError as exc:
            if _status(exc) == 404 or _code(_body(exc)) == "no_such_instance":
                logger.info("vast: instance %s already gone", iid)
                return
            raise _translate(exc, "destroy_instance") from None
        if isinstance(res, dict) and res.get("success") is False:
            code = _code(res)
            if code == "no_such_instance":
                logger.info("vast: instance %s already gone", iid)
                return
            raise PermanentError(f"vast destroy_instance: success=false {code}")
        logger.info("vast: destroyed instance %s", iid)

    def logs(self, instance_id: str, tail: int = 200) -> str:
        try:
            iid = int(instance_id)
        except (TypeError, ValueError):
            return ""
        try:
            text = self._call("logs", self.client.logs, instance_id=iid, tail=str(tail), translate=False)
        except requests.HTTPError as exc:
            if _status(exc) == 404:
                return ""
            raise _translate(exc, "logs") from None
        return scrub(text) if isinstance(text, str) else ""

    # -- launch steps -----------------------------------------------------------------------------

    def _our_rows(self) -> list[dict[str, Any]]:
        rows = self._call("show_instances", self.client.show_instances)
        return [r for r in rows or [] if job_id_from_label(r.get("label")) is not None]

    def _adopt_existing(self, mine: list[dict[str, Any]], env: dict[str, str]) -> Instance | None:
        """A live instance already carrying this job's label and attempt (a watcher that died between
        create and recording it) is adopted instead of renting a second one; duplicates destroyed."""
        attempt = env.get("JOB_ATTEMPT")
        same = [
            r for r in mine
            if state_of(r) in (InstanceState.PENDING, InstanceState.LOADING, InstanceState.RUNNING)
            and _row_env(r).get("JOB_ATTEMPT") == attempt
        ]
        if not same:
            return None
        same.sort(key=lambda r: r["id"])
        keep, extras = same[0], same[1:]
        logger.warning("vast: adopting existing instance %s labelled %s", keep["id"], keep.get("label"))
        self._destroy_extras(extras)
        inst = instance_from_row(keep)
        inst.extra["adopted"] = True
        return inst

    def _check_caps(self, ours: list[dict[str, Any]]) -> None:
        cfg = self.config
        if len(ours) >= cfg.max_instances:
            raise CapacityError(f"capacity: {len(ours)} of max {cfg.max_instances} instances live")
        spent = sum(_float(r.get("dph_total")) or 0.0 for r in ours)
        if spent >= cfg.max_total_dph:
            raise CapacityError(f"capacity: live instances cost ${spent:.3f}/h of max ${cfg.max_total_dph:.3f}/h")

    def query(self) -> dict[str, Any]:
        """The offer filter, in the form the SDK's own parser produces (sent as is with no_default)."""
        cfg = self.config
        q: dict[str, Any] = {
            "external": {"eq": False},
            "rentable": {"eq": True},
            "rented": {"eq": False},
            "num_gpus": {"eq": cfg.num_gpus},
            "gpu_ram": {"gte": cfg.min_gpu_ram_gb * GPU_RAM_MB_PER_GB},
            "reliability": {"gte": cfg.min_reliability},
            "cuda_max_good": {"gte": cfg.min_cuda},
            "dph_total": {"lte": cfg.max_dph},
            "disk_space": {"gte": cfg.disk_gb},
        }
        if cfg.verified_only:
            q["verified"] = {"eq": True}
        if cfg.gpu_names:
            q["gpu_name"] = {"in": [n.replace("_", " ") for n in cfg.gpu_names]}
        return q

    def _search(self) -> list[dict[str, Any]]:
        offers = self._call(
            "search_offers", self.client.search_offers, query=self.query(), order="dph_total",
            limit=self.config.offer_search_limit, no_default=True,
        )
        offers = [o for o in offers or [] if isinstance(o, dict) and o.get("id") is not None]
        offers = [o for o in offers if (_float(o.get("dph_total")) or 0.0) <= self.config.max_dph]
        offers.sort(key=lambda o: _float(o.get("dph_total")) or 0.0)
        if not offers:
            cfg = self.config
            gpus = ",".join(cfg.gpu_names) or "any GPU"
            raise TransientError(
                f"no offer matches: {gpus}, {cfg.num_gpus} GPU, >= {cfg.min_gpu_ram_gb:g} GB, "
                f"<= ${cfg.max_dph:g}/h, reliability >= {cfg.min_reliability:g}, CUDA >= {cfg.min_cuda:g}, "
                f"disk >= {cfg.disk_gb:g} GB{', verified' if cfg.verified_only else ''}"
            )
        return offers

    def _affordable_offers(self, offers: list[dict[str, Any]], spent: float) -> list[dict[str, Any]]:
        budget = self.config.max_total_dph - spent
        fit = [o for o in offers if (_float(o.get("dph_total")) or 0.0) <= budget + 1e-9]
        if not fit:
            raise CapacityError(
                f"capacity: cheapest matching offer ${_float(offers[0].get('dph_total')) or 0.0:.3f}/h would "
                f"exceed max ${self.config.max_total_dph:.3f}/h (live instances cost ${spent:.3f}/h)"
            )
        return fit

    def _create(self, offers: list[dict[str, Any]], label: str, env: dict[str, str], known: set[Any]) -> Instance:
        cfg = self.config
        ambiguous = False  # a create failed in a way that may still have made a contract
        last: VastdropError | None = None
        for offer in offers[: cfg.max_offers_tried]:
            for attempt in range(1, cfg.create_attempts + 1):
                failure = self._create_once(offer, label, env)
                if isinstance(failure, Instance):
                    if ambiguous:
                        self._sweep(label, known, keep=failure.id)
                    return failure
                status, body, exc = failure
                maybe_made = status is None or status >= 500
                ambiguous = ambiguous or maybe_made
                last = _create_error(status, body, exc)
                logger.warning("vast: create on offer %s failed (%s); reconciling by label %s",
                               offer["id"], last, label)
                found = self._reconcile(label, known, polls=cfg.reconcile_polls if maybe_made else 1)
                if found is not None:
                    return found
                if status is not None and _offer_gone(status, body):
                    break  # rented by someone else meanwhile: next offer
                if not isinstance(last, TransientError) or _code(body) == "max_instances_exceeded":
                    raise last
                retry_after = _retry_after(exc) if exc is not None else None
                if retry_after is not None and retry_after > cfg.max_retry_after_s:
                    raise last  # throttled for long: the caller comes back later
                if attempt < cfg.create_attempts:
                    time.sleep(self._backoff(attempt, exc))
        raise last if last is not None else TransientError("vast create_instance: no offer could be rented")

    def _create_once(
        self, offer: dict[str, Any], label: str, env: dict[str, str]
    ) -> Instance | tuple[int | None, dict[str, Any], BaseException | None]:
        cfg = self.config
        try:
            res = self.client.create_instance(
                id=offer["id"], image=cfg.image, disk=cfg.disk_gb, env=dict(env), label=label,
                onstart_cmd=cfg.onstart, runtype=cfg.runtype, args=cfg.args,
                login=cfg.image_login.get_secret_value() if cfg.image_login else None,
            )
        except requests.HTTPError as exc:
            return _status(exc), _body(exc), exc
        except requests.RequestException as exc:  # timeout, connection, bad JSON: outcome unknown
            return None, {}, exc
        except ValueError as exc:  # the SDK refused our arguments before sending anything
            raise PermanentError(f"vast create_instance: invalid arguments ({type(exc).__name__})") from None
        if isinstance(res, dict) and res.get("success") and res.get("new_contract") is not None:
            iid = res["new_contract"]
            dph = _float(offer.get("dph_total"))
            logger.info("vast: created instance %s on offer %s (%s, $%.3f/h) label %s",
                        iid, offer["id"], offer.get("gpu_name"), dph or 0.0, label)
            return Instance(
                id=str(iid), label=label, state=InstanceState.PENDING, gpu_name=offer.get("gpu_name"),
                dph=dph, offer_id=str(offer["id"]), started_at=time.time(),
            )
        body = res if isinstance(res, dict) else {}
        return 400, body, None  # 200 but success false: rejected, no contract

    def _reconcile(self, label: str, known: set[Any], polls: int) -> Instance | None:
        """After a failed create: an instance with our label that was not there before is ours."""
        for i in range(polls):
            if i:
                time.sleep(self.config.reconcile_interval_s)
            try:
                rows = self._our_rows()
            except TransientError:
                # We cannot tell whether the create made a contract: creating again could double it.
                # The next launch adopts it by label; the reaper's list_ours sees it too.
                raise TransientError("vast create_instance: outcome unknown (cannot list instances)") from None
            new = [r for r in rows if r.get("label") == label and r["id"] not in known]
            new.sort(key=lambda r: r["id"])
            if new:
                keep, extras = new[0], new[1:]
                logger.warning("vast: failed create still made instance %s; adopting it", keep["id"])
                self._destroy_extras(extras)
                inst = instance_from_row(keep)
                inst.extra["adopted"] = True
                return inst
        return None

    def _sweep(self, label: str, known: set[Any], keep: str) -> None:
        """After a success that followed an ambiguous failure: a late contract from it is an extra."""
        try:
            rows = self._our_rows()
        except TransientError:
            logger.error("vast: could not check for duplicate instances labelled %s", label)
            return
        self._destroy_extras([r for r in rows if r.get("label") == label and r["id"] not in known
                              and str(r["id"]) != keep])

    def _destroy_extras(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            logger.warning("vast: destroying duplicate instance %s labelled %s", row["id"], row.get("label"))
            try:
                self.destroy(str(row["id"]))
            except VastdropError as exc:
                logger.error("vast: could not destroy duplicate instance %s: %s", row["id"], exc)

    # -- calls --------------------------------------------------------------------------------------

    def _backoff(self, attempt: int, exc: BaseException | None) -> float:
        ra = _retry_after(exc) if exc is not None else None
        if ra is not None and 0 <= ra <= self.config.max_retry_after_s:
            return ra
        return float(self._jitter(_Attempt(attempt)))  # type: ignore[arg-type]

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return self._backoff(state.attempt_number, exc)

    def _call(self, what: str, fn: Callable[..., T], *args: Any, translate: bool = True, **kwargs: Any) -> T:
        retrying = Retrying(
            stop=stop_after_attempt(self.config.api_attempts),
            wait=self._wait,
            retry=retry_if_exception(self._retryable),
            reraise=True,
            before_sleep=lambda s: logger.warning(
                "vast %s: %s, retry %d of %d", what, _describe(s.outcome.exception() if s.outcome else None),
                s.attempt_number, self.config.api_attempts - 1,
            ),
        )
        try:
            return retrying(fn, *args, **kwargs)
        except Exception as exc:
            if not translate and isinstance(exc, requests.HTTPError):
                raise
            raise _translate(exc, what) from None


class _Attempt:
    """The one field tenacity's wait strategies read from a RetryCallState."""

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no result"
    status = _status(exc)
    return f"HTTP {status} {_code(_body(exc))}" if status is not None else type(exc).__name__


def _row_env(row: dict[str, Any]) -> dict[str, Any]:
    env = row.get("extra_env")
    if isinstance(env, dict):
        return env
    if isinstance(env, list):
        return {p[0]: p[1] for p in env if isinstance(p, (list, tuple)) and len(p) == 2}
    return {}


def _create_error(status: int | None, body: dict[str, Any], exc: BaseException | None) -> VastdropError:
    if status is None:
        return TransientError(f"vast create_instance: {type(exc).__name__ if exc else 'no answer'}")
    code = _code(body)
    text = f"vast create_instance: HTTP {status} {code}"
    if code == "max_instances_exceeded":
        return CapacityError(f"capacity: Vast account instance limit ({text})")
    if status in (401, 403):
        return ConfigError(text + " (is the Vast API key valid?)")
    if status == 429 or status >= 500 or _offer_gone(status, body):
        return TransientError(text)
    return PermanentError(text)
