"""VastCompute: one Vast.ai instance per job, through the `vastai` SDK, within Vast's documented limits.

The limits are Vast's own (vast-ai/docs, api-reference/openapi/yaml/*.yaml: `x-input-validation`,
`x-rate-limit`; api-reference/rate-limits-and-errors.mdx):
- create_instance takes env values of at most 256 characters (32768 in all), a label of 256, an image
  of 1024, args + onstart of 4096. Longer values go as numbered parts (vastdrop.envparts), which the
  job joins; a spec that cannot fit is refused before any create.
- each endpoint has a minimum interval per identity (create 4.5 s with a 12 s penalty, list 1 s, show
  2 s, destroy 3 s; offer search 10 a minute), and a 429 carries no Retry-After and may be plain text.
  Every call waits for its slot from a process-wide pacer (vastdrop.ratelimit), so calls do not
  collide; a 429 that happens anyway (another process on the same key) blocks that kind of call for
  the penalty and surfaces as ApiBusyError: the job waits, its attempt is not used.
- one offer search serves several launches (cached for `offer_cache_s`).

Retries are ours, not the SDK's: the client is built with `retry=1`, because the SDK re-sends a
create answered 429/502/503/504 -- and each re-send can make another billed contract. A create is
never retried blindly: after a failed create whose outcome is unknown (5xx, no answer) we look for
instances carrying the job's label that were not there before, adopt the first, destroy the extras,
and only when none exists do we create again. A failed create whose answer still names a
`new_contract` has that contract destroyed at once. We send `cancel_unavail=true`: with the SDK's
false, an offer that cannot start now becomes a stopped instance that bills storage.

Interruptible (`interruptible=True`): offers come from `search_offers(type="bid")` and are rented
with `price` = our bid (`bid_ratio` x the on-demand GPU price, never below the machine's `min_bid`,
which would make a stopped contract answered `invalid_price`). An instance the market stops reads
`is_bid` with cur_state, intended_status and next_state all "stopped" (what dstack's Vast backend
reads as an interruption): InstanceState.PREEMPTED, which the control plane destroys and relaunches.

Foreign errors are translated here: ApiBusyError (paced, throttled, daily search quota),
AccountError (out of credit, account limits, key refused: launches stop until it clears),
TransientError (5xx, network, no offer now), CapacityError (our own caps) or PermanentError (a
request the job itself made invalid). Messages carry operation names, HTTP status codes and Vast
error codes only -- never the API key, env values or server text.
"""

from __future__ import annotations

import datetime as dt
import hashlib
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
from vastdrop.envparts import MAX_TOTAL_CHARS, docker_env_length, split_values
from vastdrop.errors import (
    AccountError,
    ApiBusyError,
    CapacityError,
    PermanentError,
    TransientError,
    VastdropError,
)
from vastdrop.jobspec import JobSpec
from vastdrop.logs import register_secret, scrub
from vastdrop.pricing import Rates
from vastdrop.ratelimit import Limit, Pacer, pacer_for
from vastdrop.settings import (  # the defaults users see in the settings reference
    DEFAULT_DISK_GB,
    DEFAULT_MAX_BANDWIDTH_PER_GB,
    DEFAULT_MAX_DPH,
    DEFAULT_MAX_INSTANCES,
    DEFAULT_MAX_TOTAL_DPH,
    DEFAULT_MIN_GPU_RAM_GB,
    DEFAULT_MIN_INET_DOWN,
    DEFAULT_VAST_IMAGE,
)
from vastdrop.throughput import has_nvenc

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MIN_RELIABILITY = 0.95
# The image's base is built for CUDA 12.8 (Dockerfile): a host whose driver supports less cannot run it.
DEFAULT_MIN_CUDA = 12.8
# torch's CUDA 12.8 wheels carry kernels for compute capability 7.5 (Turing) and newer only.
DEFAULT_MIN_COMPUTE_CAP = 750
GPU_RAM_MB_PER_GB = 1000  # what the SDK's own query parser multiplies gpu_ram by (offers carry MB)

# Vast's documented per-identity limits (api-reference/openapi/yaml/<endpoint>.yaml, x-rate-limit).
VAST_LIMITS: dict[str, Limit] = {
    "create": Limit(interval_s=4.5, penalty_s=12.0),  # create_instance.yaml
    "search": Limit(count=10, period_s=60.0),  # search_offers.yaml: 10 per minute
    "list": Limit(interval_s=1.0),  # show_instances.yaml
    "show": Limit(interval_s=2.0),  # show_instance.yaml
    "destroy": Limit(interval_s=3.0),  # destroy_instance.yaml
    "logs": Limit(),  # logs.yaml states none
}
# create_instance.yaml x-input-validation (env values: vastdrop.envparts).
MAX_LABEL_CHARS = 256
MAX_IMAGE_CHARS = 1024
MAX_ARGS_CHARS = 4096  # args, args_str and onstart together
MIN_BID = 0.001  # create_instance.yaml: price >= 0.001 $/h

_RETRY_STATUS = {429, 500, 502, 503, 504}
_GONE_HINTS = ("no_such_ask", "not available", "unavailable", "already rented", "rented")
# Refusals about the account, not the job: out of credit, account limits, a suspended account.
_ACCOUNT_HINTS = ("credit", "balance", "funds", "payment", "max_instances", "instance limit", "suspend")
_CODE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_EXIT_MSG_RE = re.compile(r"exit(?:ed)?(?: with)?(?: exit)? code (-?\d+)", re.I)
# A container that could not start stays "created" with the daemon's error in status_msg.
_START_ERROR_RE = re.compile(r"error|fail|unable|cannot|denied|not found", re.I)

# actual_status as documented (cli/reference/show-instance.mdx) and as peers meet it.
_STATE_MAP: dict[str | None, InstanceState] = {
    None: InstanceState.PENDING,  # being provisioned
    "scheduling": InstanceState.PENDING,
    "created": InstanceState.LOADING,  # unless status_msg carries a start error (state_of)
    "loading": InstanceState.LOADING,
    "rebooting": InstanceState.LOADING,  # transient restart
    "running": InstanceState.RUNNING,
    "exited": InstanceState.EXITED,
    "stopped": InstanceState.EXITED,  # halted; bills storage, never finishes our job
    "frozen": InstanceState.UNHEALTHY,  # paused with memory kept, GPU billed: we never freeze
    "unknown": InstanceState.UNHEALTHY,  # no recent heartbeat from the host
    "offline": InstanceState.UNHEALTHY,  # host disconnected
}


class VastConfig(BaseModel):
    """What to rent and how much we may spend. GB are 10^9 bytes like Vast's own filters; $/h is USD."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = DEFAULT_VAST_IMAGE
    image_login: SecretStr | None = None  # "-u user -p token registry" for a private image
    disk_gb: float = Field(default=DEFAULT_DISK_GB, ge=8)  # Vast's documented minimum is 8 GB
    gpu_names: list[str] = Field(default_factory=list)  # e.g. ["RTX 4090", "RTX_3090"]; empty = any
    num_gpus: int = Field(default=1, ge=1)
    min_gpu_ram_gb: float = Field(default=DEFAULT_MIN_GPU_RAM_GB, ge=0)
    max_dph: float = Field(default=DEFAULT_MAX_DPH, gt=0)  # per instance, storage included
    min_reliability: float = Field(default=DEFAULT_MIN_RELIABILITY, ge=0, le=1)
    min_cuda: float = Field(default=DEFAULT_MIN_CUDA, ge=0)
    min_compute_cap: int = Field(default=DEFAULT_MIN_COMPUTE_CAP, ge=0)
    min_inet_down: float = Field(default=DEFAULT_MIN_INET_DOWN, ge=0)
    max_bandwidth_per_gb: float = Field(default=DEFAULT_MAX_BANDWIDTH_PER_GB, ge=0)
    verified_only: bool = True
    max_instances: int = Field(default=DEFAULT_MAX_INSTANCES, ge=1)  # our live instances at once
    max_total_dph: float = Field(default=DEFAULT_MAX_TOTAL_DPH, gt=0)  # sum over our live instances
    runtype: str | None = "args"  # "args": run the image's entrypoint, as a one-shot job wants
    args: list[str] | None = None
    onstart: str | None = None
    cancel_unavail: bool = True  # an offer that cannot start now is refused, not rented stopped
    # Interruptible (instance-types.mdx): rented at a bid of bid_ratio x the on-demand GPU price, never
    # below the machine's min_bid (such a bid makes a stopped contract); the market may stop it any time.
    interruptible: bool = False
    bid_ratio: float = Field(default=0.7, gt=0, le=1)
    offer_search_limit: int = Field(default=20, ge=1)
    offer_cache_s: float = Field(default=30.0, ge=0)  # one search serves the launches of this window
    max_offers_tried: int = Field(default=3, ge=1)  # per launch, when offers vanish under us
    create_attempts: int = Field(default=3, ge=1)  # per offer, each after a reconcile found nothing
    api_attempts: int = Field(default=5, ge=1)  # tenacity attempts for every other call
    backoff_initial_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=10.0, ge=0)
    # Pacing: the documented intervals, stretched by `api_share` when that many processes share one
    # key (the Lambda launchers), plus a margin for network jitter (the API sees arrival times).
    api_share: int = Field(default=1, ge=1)
    pace_scale: float = Field(default=1.0, gt=0)  # < 1 only for tests against a relaxed emulator
    api_margin_s: float = Field(default=0.25, ge=0)
    max_create_wait_s: float = Field(default=6.0, ge=0)  # a longer wait for a create slot: the job waits queued
    max_api_wait_s: float = Field(default=30.0, ge=0)  # any other call refused longer than this raises ApiBusyError
    account_backoff_s: float = Field(default=600.0, ge=0)  # launches pause this long after an account refusal
    reconcile_polls: int = Field(default=3, ge=1)  # show_instances looks after an ambiguous failed create
    reconcile_interval_s: float = Field(default=1.0, ge=0)
    request_timeout_s: float = Field(default=60.0, gt=0)


# Account refusals close launches for every VastCompute of the process on that key, until they clear.
_account_gates: dict[str, tuple[float, str]] = {}
_gates_lock = threading.Lock()


# -- error helpers ------------------------------------------------------------------------------------


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) if response is not None else None


def _body(exc: BaseException) -> dict[str, Any]:
    response = getattr(exc, "response", None)
    try:
        body = response.json() if response is not None else None
    except ValueError:  # Vast's 429s are often plain text
        return {}
    return body if isinstance(body, dict) else {}


def _code(body: dict[str, Any]) -> str:
    code = body.get("error")
    return code if isinstance(code, str) and _CODE_RE.match(code) else "unknown"


def _text(body: dict[str, Any]) -> str:
    return f"{body.get('error', '')} {body.get('msg', '')} {body.get('message', '')}".lower()


def _offer_gone(status: int | None, body: dict[str, Any]) -> bool:
    # invalid_price: our bid is below the machine's min_bid now (it rose since the search): next offer.
    return status in (404, 410) or _code(body) == "invalid_price" or any(hint in _text(body) for hint in _GONE_HINTS)


def _account_refusal(status: int | None, body: dict[str, Any]) -> bool:
    return status in (401, 402, 403) or any(hint in _text(body) for hint in _ACCOUNT_HINTS)


def _quota_exceeded(exc: BaseException) -> bool:
    return _status(exc) == 429 and _code(_body(exc)) == "search_quota_exceeded"


def _quota_reset(exc: BaseException) -> float:
    """Seconds until the daily search quota resets: X-RateLimit-Reset, else the next UTC midnight."""
    response = getattr(exc, "response", None)
    now = time.time()
    try:
        reset = float(response.headers["X-RateLimit-Reset"])  # type: ignore[union-attr]
    except (AttributeError, KeyError, TypeError, ValueError):
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        reset = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp()
    return max(1.0, reset - now)


def _account_error(status: int, body: dict[str, Any], text: str, config: VastConfig) -> AccountError | None:
    """A refusal of the account, not of the request (a rejected key, credit, account limits), or None."""
    if status in (401, 403):
        return AccountError(text + " (is the Vast API key valid?)", retry_after_s=config.account_backoff_s)
    if _account_refusal(status, body):
        return AccountError(text + " (the Vast account refuses: credit or limits)",
                            retry_after_s=config.account_backoff_s)
    return None


def _translate(exc: BaseException, what: str, config: VastConfig) -> VastdropError:
    """A foreign error as ours; the text holds the operation, status and error code only."""
    if isinstance(exc, VastdropError):
        return exc
    if isinstance(exc, requests.HTTPError) and _status(exc) is not None:
        status = _status(exc)
        assert status is not None
        body = _body(exc)
        code = _code(body)
        text = f"vast {what}: HTTP {status} {code}"
        if status == 429:
            return ApiBusyError(f"waiting for the Vast API: {what} throttled (HTTP 429)")
        refusal = _account_error(status, body, text, config)
        if refusal is not None:
            return refusal
        if status >= 500:
            return TransientError(text)
        return PermanentError(text)
    if isinstance(exc, (requests.RequestException, TimeoutError, ValueError)):
        return TransientError(f"vast {what}: {type(exc).__name__}")
    return PermanentError(f"vast {what}: unexpected {type(exc).__name__}")


# -- row mapping ----------------------------------------------------------------------------------------


def _stopped_by_market(row: dict[str, Any]) -> bool:
    """An interruptible instance whose current and intended states (and next, when given) read
    "stopped": outbid, or a bid too low to start. We never stop our own instances."""
    states = [row.get("cur_state"), row.get("intended_status")]
    if row.get("next_state") is not None:
        states.append(row.get("next_state"))
    return row.get("is_bid") is True and all(str(s or "").lower() == "stopped" for s in states)


def state_of(row: dict[str, Any] | None) -> InstanceState:
    """A row's documented fields -> InstanceState (a missing row or cur_state "unloaded": GONE)."""
    if row is None or str(row.get("cur_state") or "").lower() == "unloaded":
        return InstanceState.GONE
    if _stopped_by_market(row):
        return InstanceState.PREEMPTED
    status = row.get("actual_status")
    status = status.lower() if isinstance(status, str) else status
    if status == "created" and _START_ERROR_RE.search(str(row.get("status_msg") or "")):
        return InstanceState.EXITED  # "OCI runtime create failed" and the like: it will never run
    return _STATE_MAP.get(status, InstanceState.PENDING)


def _exit_code(row: dict[str, Any]) -> int | None:
    # The API documents no exit code: status_msg's text is all there is, when it says.
    match = _EXIT_MSG_RE.search(str(row.get("status_msg") or ""))
    return int(match.group(1)) if match else None


def instance_from_row(row: dict[str, Any]) -> Instance:
    state = state_of(row)
    return Instance(
        id=str(row["id"]),
        label=row.get("label"),
        state=state,
        exit_code=_exit_code(row) if state is InstanceState.EXITED else None,
        gpu_name=row.get("gpu_name"),
        dph=_float(row.get("dph_total")),
        started_at=_float(row.get("start_date")),
        # never extra_env: it holds the job's secrets
        extra={k: row.get(k) for k in ("actual_status", "intended_status", "cur_state", "status_msg", "is_bid")},
    )


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def bid_for(offer: dict[str, Any], ratio: float) -> float | None:
    """Our bid on an offer: `ratio` x its on-demand GPU price (dph_base), $/h to 4 places; None when
    that is below the machine's min_bid (the create would make a stopped contract) or unknown."""
    base, min_bid = _float(offer.get("dph_base")), _float(offer.get("min_bid"))
    if base is None or min_bid is None:
        return None
    bid = round(ratio * base, 4)
    return bid if bid >= max(min_bid, MIN_BID) else None


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
            api_key = api_key or getattr(inner, "api_key", None)
            server_url = server_url or getattr(inner, "server_url", None)
        if self.config.image_login is not None:
            register_secret(self.config.image_login.get_secret_value())
        self.client = client
        # The API's identity (key + our IP): pacers and the account gate are shared per identity.
        digest = hashlib.sha256((api_key or "").encode()).hexdigest()[:16]
        self.identity = f"{server_url or 'vast'}|{digest}"
        self._jitter = wait_random_exponential(multiplier=self.config.backoff_initial_s,
                                               max=self.config.backoff_max_s)
        self._launch_lock = threading.Lock()
        self._offers_lock = threading.Lock()
        self._offers_cache: tuple[float, list[dict[str, Any]]] | None = None
        self._offers_taken: set[Any] = set()  # rented by us or found gone since the last search

    # -- port ----------------------------------------------------------------------------------

    def launch(self, spec: JobSpec, env: dict[str, str]) -> Instance:
        register_env_secrets(env)
        label = label_for(spec.id)
        env = self._fit(label, {str(k): str(v) for k, v in env.items()})
        self._check_gate()
        wait = self.pacer("create").delay()
        if wait > self.config.max_create_wait_s:
            raise ApiBusyError(f"waiting for the Vast API: next create slot in {wait:.0f}s", retry_after_s=wait)
        with self._launch_lock:
            ours = self._our_rows()
            mine = [r for r in ours if r.get("label") == label]
            adopted = self._adopt_existing(mine, env)
            if adopted is not None:
                return adopted
            self._check_caps(ours)
            spent = sum(_float(r.get("dph_total")) or 0.0 for r in ours)
            offers = self._affordable_offers(_encoder_fits(spec, self.offers()), spent)
            known = {r["id"] for r in mine}
            return self._create(offers, label, env, known)

    def get(self, instance_id: str) -> Instance:
        try:
            iid = int(instance_id)
        except (TypeError, ValueError):
            return Instance(id=str(instance_id), label=None, state=InstanceState.GONE)
        try:
            row = self._call("show", "show_instance", self.client.show_instance, id=iid, translate=False)
        except requests.HTTPError as exc:
            if _status(exc) != 404:  # the live API may answer 404 no_such_instance instead of null
                raise _translate(exc, "show_instance", self.config) from None
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
            res = self._call("destroy", "destroy_instance", self.client.destroy_instance, id=iid, translate=False)
        except requests.HTTPError as exc:
            if _status(exc) in (404, 410) or _code(_body(exc)) == "no_such_instance":
                logger.info("vast: instance %s already gone", iid)
                return
            raise _translate(exc, "destroy_instance", self.config) from None
        if isinstance(res, dict) and res.get("success") is False:
            code = _code(res)
            if code == "no_such_instance":
                logger.info("vast: instance %s already gone", iid)
                return
            raise TransientError(f"vast destroy_instance: success=false {code}")
        logger.info("vast: destroyed instance %s", iid)

    def logs(self, instance_id: str, tail: int = 200) -> str:
        try:
            iid = int(instance_id)
        except (TypeError, ValueError):
            return ""
        try:
            text = self._call("logs", "logs", self.client.logs, instance_id=iid, tail=str(tail), translate=False)
        except requests.HTTPError as exc:
            if _status(exc) == 404:
                return ""
            raise _translate(exc, "logs", self.config) from None
        return scrub(text) if isinstance(text, str) else ""

    def offers(self) -> list[dict[str, Any]]:
        """Offers matching the filters, cheapest first, priced for the disk we rent (dph_total includes
        its storage). One search serves the launches of `offer_cache_s`; offers we rented or found gone
        meanwhile are left out. CapacityError when none matches."""
        with self._offers_lock:
            now = time.monotonic()
            cached = self._offers_cache
            fresh = cached is None or now - cached[0] > self.config.offer_cache_s
            offers = [] if fresh else [dict(o) for o in cached[1] if o["id"] not in self._offers_taken]
            if not offers:  # stale, or every cached offer is taken: ask again
                self._offers_cache = (now, self._search())
                self._offers_taken.clear()
                offers = [dict(o) for o in self._offers_cache[1]]
        if not offers:
            cfg = self.config
            gpus = ",".join(cfg.gpu_names) or "any GPU"
            raise CapacityError(  # not the job's fault: it waits for an offer, its attempt kept
                f"no offer matches: {gpus}, {cfg.num_gpus} GPU, >= {cfg.min_gpu_ram_gb:g} GB, "
                f"<= ${cfg.max_dph:g}/h with {cfg.disk_gb:g} GB disk, reliability >= {cfg.min_reliability:g}, "
                f"CUDA >= {cfg.min_cuda:g}, compute capability >= {cfg.min_compute_cap / 100:g}, "
                f"download >= {cfg.min_inet_down:g} Mbit/s, bandwidth <= ${cfg.max_bandwidth_per_gb:g}/GB"
                f"{', verified' if cfg.verified_only else ''}"
            )
        return offers

    def pacer(self, kind: str) -> Pacer:
        """The process-wide pacer of one kind of call on this key (VAST_LIMITS, stretched by api_share)."""
        base = VAST_LIMITS[kind]
        stretch = self.config.api_share * self.config.pace_scale
        limit = Limit(interval_s=base.interval_s * stretch, count=base.count,
                      period_s=base.period_s * stretch, penalty_s=base.penalty_s * self.config.pace_scale)
        return pacer_for(self.identity, kind, limit, self.config.api_margin_s)

    # -- launch steps -----------------------------------------------------------------------------

    def _fit(self, label: str, env: dict[str, str]) -> dict[str, str]:
        """The create request within Vast's documented limits, or PermanentError saying what does not fit."""
        cfg = self.config
        problems = []
        fitted = split_values(env)
        total = docker_env_length(fitted)
        if total > MAX_TOTAL_CHARS:
            problems.append(f"env is {total} characters in docker form (Vast allows {MAX_TOTAL_CHARS})")
        if len(label) > MAX_LABEL_CHARS:
            problems.append(f"label is {len(label)} characters (Vast allows {MAX_LABEL_CHARS})")
        if len(cfg.image) > MAX_IMAGE_CHARS:
            problems.append(f"image name is {len(cfg.image)} characters (Vast allows {MAX_IMAGE_CHARS})")
        args_chars = len(" ".join(cfg.args or [])) + len(cfg.onstart or "")
        if args_chars > MAX_ARGS_CHARS:
            problems.append(f"args and onstart are {args_chars} characters (Vast allows {MAX_ARGS_CHARS})")
        if problems:
            raise PermanentError("vast create_instance: the request cannot fit Vast's limits: " + "; ".join(problems))
        return fitted

    def _check_gate(self) -> None:
        with _gates_lock:
            gate = _account_gates.get(self.identity)
        if gate is not None and time.monotonic() < gate[0]:
            wait = gate[0] - time.monotonic()
            raise AccountError(f"launches paused for {wait:.0f}s more: {gate[1]}", retry_after_s=wait)

    def _close_gate(self, error: AccountError) -> AccountError:
        wait = error.retry_after_s if error.retry_after_s is not None else self.config.account_backoff_s
        with _gates_lock:
            _account_gates[self.identity] = (time.monotonic() + wait, str(error))
        logger.error("vast: the account refuses launches, pausing them for %.0fs: %s", wait, error)
        return error

    def _open_gate(self) -> None:
        with _gates_lock:
            if _account_gates.pop(self.identity, None) is not None:
                logger.info("vast: the account accepts launches again")

    def _our_rows(self) -> list[dict[str, Any]]:
        rows = self._call("list", "show_instances", self.client.show_instances)
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
        return self._adopted(keep)

    def _adopted(self, row: dict[str, Any]) -> Instance:
        inst = instance_from_row(row)
        inst.extra["adopted"] = True
        try:
            inst.rates = Rates.from_offer(row, self.config.disk_gb).to_dict()
        except ValueError:  # a row without prices: the cost falls back to its dph
            pass
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
            "compute_cap": {"gte": cfg.min_compute_cap},
            "inet_down": {"gte": cfg.min_inet_down},
            "inet_down_cost": {"lte": cfg.max_bandwidth_per_gb},
            "inet_up_cost": {"lte": cfg.max_bandwidth_per_gb},
            "disk_space": {"gte": cfg.disk_gb},
        }
        if not cfg.interruptible:  # a bid is below the on-demand price: filtered once re-priced (_search)
            q["dph_total"] = {"lte": cfg.max_dph}
        if cfg.verified_only:
            q["verified"] = {"eq": True}
        if cfg.gpu_names:
            q["gpu_name"] = {"in": [n.replace("_", " ") for n in cfg.gpu_names]}
        return q

    def _search(self) -> list[dict[str, Any]]:
        # storage: price the offers for the disk we rent, so dph_total includes its storage.
        cfg = self.config
        offers = self._call(
            "search", "search_offers", self.client.search_offers, query=self.query(), order="dph_total",
            limit=cfg.offer_search_limit, no_default=True, storage=cfg.disk_gb,
            type="bid" if cfg.interruptible else "on-demand",
        )
        offers = [o for o in offers or [] if isinstance(o, dict) and o.get("id") is not None]
        if cfg.interruptible:
            offers = [bid for bid in map(self._at_bid, offers) if bid is not None]
        offers = [o for o in offers if (_float(o.get("dph_total")) or 0.0) <= self.config.max_dph]
        offers.sort(key=lambda o: _float(o.get("dph_total")) or 0.0)
        return offers

    def _at_bid(self, offer: dict[str, Any]) -> dict[str, Any] | None:
        """An offer re-priced as we would rent it interruptible: the GPU at our bid, storage unchanged."""
        bid = bid_for(offer, self.config.bid_ratio)
        if bid is None:
            return None
        base = _float(offer.get("dph_base"))
        storage = Rates.from_offer(offer, self.config.disk_gb).storage_dph
        return {**offer, "bid": bid, "on_demand_dph_base": base, "dph_base": bid, "dph_total": bid + storage}

    def _affordable_offers(self, offers: list[dict[str, Any]], spent: float) -> list[dict[str, Any]]:
        budget = self.config.max_total_dph - spent
        fit = [o for o in offers if (_float(o.get("dph_total")) or 0.0) <= budget + 1e-9]
        if not fit:
            raise CapacityError(
                f"capacity: cheapest matching offer ${_float(offers[0].get('dph_total')) or 0.0:.3f}/h would "
                f"exceed max ${self.config.max_total_dph:.3f}/h (live instances cost ${spent:.3f}/h)"
            )
        return fit

    def _taken(self, offer: dict[str, Any]) -> None:
        with self._offers_lock:
            self._offers_taken.add(offer["id"])

    def _create(self, offers: list[dict[str, Any]], label: str, env: dict[str, str], known: set[Any]) -> Instance:
        cfg = self.config
        ambiguous = False  # a create failed in a way that may still have made a contract
        last: VastdropError | None = None
        for offer in offers[: cfg.max_offers_tried]:
            for attempt in range(1, cfg.create_attempts + 1):
                failure = self._create_once(offer, label, env)
                if isinstance(failure, Instance):
                    self._open_gate()
                    if ambiguous:
                        self._sweep(label, known, keep=failure.id)
                    return failure
                status, body, exc = failure
                if status == 429:  # refused before anything was made: wait for the penalty, attempt kept
                    wait = self.pacer("create").refused()
                    raise ApiBusyError(f"waiting for the Vast API: create throttled (HTTP 429), "
                                       f"next slot in {wait:.0f}s", retry_after_s=wait)
                self._destroy_named_contract(body, label)
                maybe_made = status is None or status >= 500
                ambiguous = ambiguous or maybe_made
                last = _create_error(status, body, exc, cfg)
                logger.warning("vast: create on offer %s failed (%s)", offer["id"], last)
                if isinstance(last, AccountError):
                    raise self._close_gate(last)
                if maybe_made:
                    found = self._reconcile(label, known, polls=cfg.reconcile_polls)
                    if found is not None:
                        return found
                if status is not None and _offer_gone(status, body):
                    self._taken(offer)
                    break  # rented by someone else meanwhile, or cannot start now: next offer
                if not isinstance(last, TransientError):
                    raise last
                if attempt < cfg.create_attempts:
                    time.sleep(self._backoff(attempt))
        raise last if last is not None else TransientError("vast create_instance: no offer could be rented")

    def _create_once(
        self, offer: dict[str, Any], label: str, env: dict[str, str]
    ) -> Instance | tuple[int | None, dict[str, Any], BaseException | None]:
        cfg = self.config
        self.pacer("create").acquire()
        try:
            res = self.client.create_instance(
                id=offer["id"], image=cfg.image, disk=cfg.disk_gb, env=dict(env), label=label,
                onstart_cmd=cfg.onstart, runtype=cfg.runtype, args=cfg.args, cancel_unavail=cfg.cancel_unavail,
                price=offer.get("bid") if cfg.interruptible else None,
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
            self._taken(offer)
            rates = Rates.from_offer(offer, cfg.disk_gb)
            dph = _float(offer.get("dph_total"))
            logger.info("vast: created instance %s on offer %s (%s, $%.3f/h with storage) label %s",
                        iid, offer["id"], offer.get("gpu_name"), dph or 0.0, label)
            return Instance(
                id=str(iid), label=label, state=InstanceState.PENDING, gpu_name=offer.get("gpu_name"),
                dph=dph, offer_id=str(offer["id"]), started_at=time.time(), rates=rates.to_dict(),
            )
        body = res if isinstance(res, dict) else {}
        return 400, body, None  # 200 but success false: rejected

    def _destroy_named_contract(self, body: dict[str, Any], label: str) -> None:
        """A failed create whose answer still names a contract: that contract exists and bills. Destroy it."""
        iid = body.get("new_contract")
        if isinstance(iid, bool) or not isinstance(iid, (int, str)) or not str(iid).isdigit():
            return
        logger.warning("vast: failed create still made contract %s (label %s); destroying it", iid, label)
        try:
            self.destroy(str(iid))
        except VastdropError as exc:  # the reaper's orphan pass destroys it later: it carries our label
            logger.error("vast: could not destroy contract %s of a failed create: %s", iid, exc)

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
                return self._adopted(keep)
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

    def _backoff(self, attempt: int) -> float:
        return float(self._jitter(_Attempt(attempt)))  # type: ignore[arg-type]

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None and _status(exc) == 429:
            return 0.0  # the pacer holds the next call back for the penalty
        return self._backoff(state.attempt_number)

    def _call(self, kind: str, what: str, fn: Callable[..., T], *args: Any, translate: bool = True,
              **kwargs: Any) -> T:
        pacer = self.pacer(kind)

        def paced() -> T:
            if not pacer.acquire(max_wait_s=self.config.max_api_wait_s):  # refused for long (a quota)
                wait = pacer.delay()
                raise ApiBusyError(f"waiting for the Vast API: {what} refused for {wait:.0f}s more",
                                   retry_after_s=wait)
            try:
                return fn(*args, **kwargs)
            except requests.HTTPError as exc:
                if _quota_exceeded(exc):
                    pacer.refused(until=time.monotonic() + _quota_reset(exc))
                elif _status(exc) == 429:
                    pacer.refused()
                raise

        retrying = Retrying(
            stop=stop_after_attempt(self.config.api_attempts),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            reraise=True,
            before_sleep=lambda s: logger.warning(
                "vast %s: %s, retry %d of %d", what, _describe(s.outcome.exception() if s.outcome else None),
                s.attempt_number, self.config.api_attempts - 1,
            ),
        )
        try:
            return retrying(paced)
        except requests.HTTPError as exc:
            if _quota_exceeded(exc):
                wait = pacer.delay()
                raise ApiBusyError(f"waiting for the Vast API: the daily offer-search quota is used up "
                                   f"(resets in {wait / 3600:.1f} h)", retry_after_s=wait) from None
            if not translate:
                raise
            raise _translate(exc, what, self.config) from None
        except Exception as exc:
            raise _translate(exc, what, self.config) from None


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    return _status(exc) in _RETRY_STATUS and not _quota_exceeded(exc)


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


def _create_error(status: int | None, body: dict[str, Any], exc: BaseException | None,
                  config: VastConfig) -> VastdropError:
    if status is None:
        return TransientError(f"vast create_instance: {type(exc).__name__ if exc else 'no answer'}")
    code = _code(body)
    text = f"vast create_instance: HTTP {status} {code}"
    refusal = _account_error(status, body, text, config)
    if refusal is not None:
        return refusal
    if status >= 500 or _offer_gone(status, body):
        return TransientError(text)
    return PermanentError(text)


def _encoder_fits(spec: JobSpec, offers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A segment that asks for NVENC cannot fall back to another encoder (its codec configuration must
    be its siblings'): it is rented only on GPUs that have one (A100, H100 and H200 have none)."""
    if spec.segment_start_s is None or "nvenc" not in spec.video_codec:
        return offers
    fit = [o for o in offers if has_nvenc(o.get("gpu_name"))]
    if not fit:
        raise CapacityError(f"no offer has NVENC, which this segment's encoder {spec.video_codec} needs")
    return fit
