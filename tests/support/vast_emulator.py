"""A local emulator of the Vast.ai REST endpoints the real ``vastai`` SDK (1.9.1) calls.

Point the real SDK at it and drive it exactly as production code would::

    from vastai import VastAI
    with VastEmulator(command=[sys.executable, "-c", "print('hi')"]) as emu:
        vast = VastAI(api_key=emu.api_key, server_url=emu.url)
        offer = vast.search_offers("gpu_name=RTX_4090 reliability>0.95", order="dph_total")[0]
        iid = vast.create_instance(offer["id"], image="img:tag", disk=20,
                                   env={"K": "V"}, label="job-1")["new_contract"]
        vast.show_instance(id=iid)["actual_status"]     # None -> "loading" -> "running" -> "exited"
        vast.logs(instance_id=iid)                        # the process's stdout+stderr
        vast.destroy_instance(id=iid)                     # kills the process group; billing stops

What the SDK does on the wire (read from ``vastai/api/*.py`` of vastai 1.9.1)
----------------------------------------------------------------------------
Auth is ``Authorization: Bearer <key>`` (the emulator also accepts ``?api_key=``).
Every SDK call does ``r.raise_for_status()`` and then ``r.json()``: any HTTP error status
surfaces as ``requests.exceptions.HTTPError`` with ``.response`` (status code, JSON body,
headers). Nothing is printed; SDK methods return parsed JSON.

=============================  ==========================================  ======================
SDK method                     request                                     reads
=============================  ==========================================  ======================
search_offers(query, order=,   POST /api/v0/bundles/  body = filter dict    ``offers``
  limit=, type=, no_default=)  ``{field: {op: value}}`` + ``order``,
                               ``type``, ``limit``, ``allocated_storage``
create_instance(id, image=,    PUT /api/v0/asks/<offer_id>/  body has        whole body
  disk=, env=, label=,         ``image env disk label onstart args runtype`` (``new_contract``)
  onstart_cmd=, args=, ...)    ``price client_id`` ...
show_instance(id)              GET /api/v0/instances/<id>/?owner=me          ``instances`` (a row,
                                                                             or null -> None)
show_instances()               GET /api/v1/instances/?select_filters=&       ``instances``,
                               order_by=&limit=25[&after_token=]             ``next_token``
logs(instance_id, tail=,       PUT /api/v0/instances/request_logs/<id>/      ``result_url``, then
  filter=)                     then GET <result_url> (no auth) until 200     polls it: text
label_instance(id, label)      PUT /api/v0/instances/<id>/ {"label": ...}    whole body
destroy_instance(id)           DELETE /api/v0/instances/<id>/                whole body
launch_instance(gpu_name, ...) PUT /api/v0/launch_instance/ {"q": ..., ...}  whole body
=============================  ==========================================  ======================

Query strings: ``search_offers("gpu_ram>=20 gpu_name=RTX_4090")`` is parsed *client side*:
``_`` becomes a space, ``cuda_vers`` is aliased to ``cuda_max_good``, ``dph`` to ``dph_total``,
``gpu_ram``/``cpu_ram`` are multiplied by 1000 (offers carry MB), values stay strings except
``true/false/null`` and multiplied fields; the SDK adds ``verified=true external=false
rentable=true rented=false`` unless ``no_default=True``. ``order="dph_total"`` -> ascending,
``"dph_total-"`` -> descending; the default is ``"score-"``.

Env: ``env=`` may be a dict or a docker-style string ``"-e K=V -e K2=V2 -p 8080:8080"`` which the
SDK turns into a dict (``-p``/``-v``/``-n`` options become keys like ``"-p 8080:8080"``). The
emulator passes only valid identifier keys to the process; the row's ``extra_env`` is the
list of ``[key, value]`` pairs (the SDK turns it back into a dict).

Retries -- does ``vastai`` retry 429s internally?  **Yes.**  ``VastClient._request`` makes up to
``retry`` attempts in total (``VastAI(retry=3)`` by default, i.e. 2 retries) on HTTP
429/502/503/504, for every method including the non-idempotent create ``PUT /asks/<id>/``,
sleeping ``Retry-After`` seconds when the header is a number <= 60 (else 0.15 s, x1.5 per
retry); a 429 whose body says ``"error": "search_quota_exceeded"`` or a Retry-After > 60 is
not retried. When attempts run out the *last* response goes through ``raise_for_status()``
-> ``HTTPError`` with status 429. 500 and 404 are never retried. Transport errors
(``ConnectionError``/``Timeout``) are retried too and re-raised after the last attempt --
so a create that timed out client-side may have been sent (and billed) more than once, and a
create answered 502/503/504 after the contract was made is re-sent, making one contract per
attempt (reproduce with ``create_fails_with_contract=True`` and ``faults.create_fail_status=503``:
three live instances, one HTTPError 503). Build ``VastAI(retry=1)`` to disable SDK retries.

Error shapes the emulator returns (all JSON, surfaced as ``HTTPError``):
* 401 ``{"success": false, "error": "invalid_api_key", "msg": ...}`` -- wrong/missing key.
* 403 ``{"success": false, "error": "forbidden", ...}`` -- an instance-scoped key used beyond
  its own instance.
* 404 ``{"success": false, "error": "no_such_instance", "msg": "Instance N not found."}`` --
  destroy/label/logs of an unknown (or already destroyed) instance. ``show_instance`` of an
  unknown/destroyed id instead returns 200 ``{"instances": null}`` as the live API does right
  after a destroy, which the SDK maps to ``None``.
* 404 ``{"success": false, "error": "invalid_args", "msg": "no_such_ask ..."}`` -- unknown offer.
* 400 ``{"success": false, "error": "invalid_args", ...}`` -- bad create args (no image, disk
  larger than the offer's ``disk_space``), bad query; ``"max_instances_exceeded"`` when the
  ``max_instances`` fault is hit.
* 429 (+ ``Retry-After``), 500/503 -- injected faults; ``create_fails_with_contract`` gives a
  500 ``{"success": false, "error": "internal_error"}`` *after* the contract was made.

Emulated platform behaviour
---------------------------
* ``actual_status``: ``None`` for ``provisioning_s`` (default 0) -> ``"loading"`` for
  ``loading_s`` (default 0.2 s) -> ``"running"`` (the job process starts at that moment) ->
  ``"exited"`` when it ends (``exit_code`` and ``status_msg`` set; a signal-killed process gets
  the docker-style code 128+signal, e.g. 137 for SIGKILL). ``intended_status`` stays
  ``"running"``; ``cur_state`` is ``"running"`` until exit, then ``"stopped"``.
* The job is a real child process (own session/process group) run with a minimal env
  (PATH, HOME, PYTHONPATH=this process's sys.path, VAST_URL=<emulator url> so an SDK inside
  the job talks to the emulator) + the create ``env`` + ``CONTAINER_ID``, ``CONTAINER_API_KEY``
  (an instance-scoped key the emulator accepts only for GET/DELETE of that instance) and
  ``VAST_CONTAINERLABEL=C.<id>``. stdout+stderr go to a per-instance log file served by logs.
* Billing: ``dph_total/3600`` per second from create until destroy, whatever the status
  (loading, running, exited, stuck) -- Vast bills until destroyed.
* Destroy: SIGTERM to the process group, SIGKILL after ``kill_grace_s``, before answering.
* Everything binds 127.0.0.1; ``stop()`` kills every child and the server, and freezes the
  billing clock (instances still live then are reported by ``live_instances()``).

The emulator never logs env values (they may hold secrets); ``create_requests`` records only
env keys. ``all_instances()`` does contain the env, for assertions.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_OFFERS", "Faults", "VastEmulator"]

_OFFER_DEFAULTS: dict[str, Any] = {
    "num_gpus": 1,
    "verified": True,
    "verification": "verified",
    "external": False,
    "rentable": True,
    "rented": False,
    "reliability2": 0.99,
    "disk_space": 100.0,
    "cuda_max_good": 13.0,
    "driver_version": "580.95.05",
    "inet_down": 1000.0,
    "inet_up": 500.0,
    "cpu_cores": 16,
    "cpu_cores_effective": 8.0,
    "cpu_ram": 64000,
    "compute_cap": 860,
    "direct_port_count": 10,
    "static_ip": False,
    "hosting_type": 0,
    "geolocation": "Nowhere, ZZ",
    "storage_cost": 0.1,
    "inet_up_cost": 0.0,
    "inet_down_cost": 0.0,
    "score": 100.0,
    "dlperf": 20.0,
    "total_flops": 40.0,
    "duration": 30 * 86400.0,
    "start_date": None,
    "end_date": None,
}

# Seven varied offers: two identical GPU models at different prices/reliability, an
# unverified one, a rented one (hidden by the SDK's default filters), a multi-GPU box.
DEFAULT_OFFERS: list[dict[str, Any]] = [
    {"id": 31000001, "machine_id": 5101, "host_id": 901, "gpu_name": "RTX 3090", "num_gpus": 1,
     "gpu_ram": 24576, "dph_total": 0.18, "reliability2": 0.985, "disk_space": 120.0,
     "cuda_max_good": 12.8, "verified": True, "inet_down": 800.0, "score": 150.0,
     "geolocation": "Texas, US"},
    {"id": 31000002, "machine_id": 5102, "host_id": 902, "gpu_name": "RTX 4090", "num_gpus": 1,
     "gpu_ram": 24564, "dph_total": 0.35, "reliability2": 0.995, "disk_space": 200.0,
     "cuda_max_good": 13.0, "verified": True, "inet_down": 2000.0, "score": 260.0,
     "geolocation": "Quebec, CA"},
    {"id": 31000003, "machine_id": 5103, "host_id": 903, "gpu_name": "RTX 4090", "num_gpus": 1,
     "gpu_ram": 24564, "dph_total": 0.29, "reliability2": 0.93, "disk_space": 80.0,
     "cuda_max_good": 12.9, "verified": False, "verification": "unverified",
     "inet_down": 500.0, "score": 120.0, "geolocation": "Ohio, US"},
    {"id": 31000004, "machine_id": 5104, "host_id": 904, "gpu_name": "A100 SXM4", "num_gpus": 1,
     "gpu_ram": 81920, "dph_total": 0.95, "reliability2": 0.998, "disk_space": 500.0,
     "cuda_max_good": 12.8, "verified": True, "inet_down": 5000.0, "score": 300.0,
     "geolocation": "Bavaria, DE", "hosting_type": 1},
    {"id": 31000005, "machine_id": 5105, "host_id": 905, "gpu_name": "RTX A4000", "num_gpus": 1,
     "gpu_ram": 16376, "dph_total": 0.12, "reliability2": 0.97, "disk_space": 60.0,
     "cuda_max_good": 12.4, "verified": True, "inet_down": 300.0, "score": 90.0,
     "geolocation": "Ontario, CA"},
    {"id": 31000006, "machine_id": 5106, "host_id": 906, "gpu_name": "RTX 4090", "num_gpus": 2,
     "gpu_ram": 24564, "dph_total": 0.70, "reliability2": 0.99, "disk_space": 300.0,
     "cuda_max_good": 13.0, "verified": True, "inet_down": 1500.0, "score": 400.0,
     "geolocation": "Oregon, US"},
    {"id": 31000007, "machine_id": 5107, "host_id": 907, "gpu_name": "RTX 3080", "num_gpus": 1,
     "gpu_ram": 10240, "dph_total": 0.09, "reliability2": 0.98, "disk_space": 100.0,
     "cuda_max_good": 12.6, "verified": True, "rentable": False, "rented": True,
     "inet_down": 700.0, "score": 80.0, "geolocation": "Texas, US"},
]

_NON_FILTER_KEYS = {"order", "type", "limit", "allocated_storage", "disable_bundling"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FIRST_INSTANCE_ID = 9_000_001


def _normalise_offer(offer: dict[str, Any]) -> dict[str, Any]:
    out = dict(_OFFER_DEFAULTS)
    out.update(copy.deepcopy(offer))
    if "id" not in out:
        raise ValueError("every offer needs an 'id'")
    out["id"] = int(out["id"])
    out.setdefault("ask_contract_id", out["id"])
    out.setdefault("machine_id", out["id"] % 100000)
    out.setdefault("host_id", out["machine_id"])
    out.setdefault("gpu_name", "RTX 4090")
    out.setdefault("gpu_ram", 24564)
    out.setdefault("dph_total", 0.3)
    out.setdefault("reliability", out["reliability2"])
    out.setdefault("dph_base", out["dph_total"])
    out.setdefault("gpu_total_ram", out["gpu_ram"] * out["num_gpus"])
    out.setdefault("min_bid", round(out["dph_total"] * 0.6, 4))
    out.setdefault("dlperf_per_dphtotal", out["dlperf"] / out["dph_total"] if out["dph_total"] else 0)
    out.setdefault("flops_per_dphtotal", out["total_flops"] / out["dph_total"] if out["dph_total"] else 0)
    return out


# ---------------------------------------------------------------------------
# filter / order helpers (the backend side of the SDK's query format)
# ---------------------------------------------------------------------------

class _BadQuery(ValueError):
    pass


def _coerce(query_value: Any, like: Any) -> Any:
    """Coerce a query value (often a string) to the type of the stored value."""
    if query_value is None:
        return None
    if isinstance(like, bool):
        if isinstance(query_value, bool):
            return query_value
        if isinstance(query_value, (int, float)):
            return bool(query_value)
        text = str(query_value).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise _BadQuery(f"not a boolean: {query_value!r}")
    if isinstance(like, (int, float)):
        try:
            return float(query_value)
        except (TypeError, ValueError):
            raise _BadQuery(f"not a number: {query_value!r}") from None
    if isinstance(like, str):
        return str(query_value)
    return query_value


def _match_one(value: Any, op: str, operand: Any) -> bool:
    if op in ("in", "notin", "nin"):
        items = operand if isinstance(operand, list) else [operand]
        hit = value is not None and any(_coerce(x, value) == value for x in items)
        return hit if op == "in" else not hit
    if op not in ("eq", "neq", "gt", "gte", "lt", "lte"):
        raise _BadQuery(f"unknown operator {op!r}")
    if value is None or operand is None:
        same = value is None and operand is None
        if op == "eq":
            return same
        if op == "neq":
            return not same
        return False
    want = _coerce(operand, value)
    have = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if op == "eq":
        return have == want
    if op == "neq":
        return have != want
    try:
        if op == "gt":
            return have > want
        if op == "gte":
            return have >= want
        if op == "lt":
            return have < want
        return have <= want
    except TypeError:
        raise _BadQuery(f"cannot order-compare {value!r} with {operand!r}") from None


def _matches(row: dict[str, Any], filters: dict[str, Any]) -> bool:
    for fld, cond in filters.items():
        if fld in _NON_FILTER_KEYS or not isinstance(cond, dict):
            continue
        if fld not in row:
            return False  # the backend cannot satisfy a filter on a column it lacks
        for op, operand in cond.items():
            if not _match_one(row[fld], op, operand):
                return False
    return True


def _sort_rows(rows: list[dict[str, Any]], order: Sequence[Any]) -> list[dict[str, Any]]:
    keys: list[tuple[str, bool]] = []
    for item in order or []:
        if isinstance(item, dict):
            keys.append((str(item.get("col")), str(item.get("dir", "asc")).lower() == "desc"))
        elif isinstance(item, (list, tuple)) and item:
            direction = str(item[1]).lower() if len(item) > 1 else "asc"
            keys.append((str(item[0]), direction == "desc"))
        elif isinstance(item, str):
            keys.append((item, False))
    out = list(rows)
    for name, desc in reversed(keys):
        present = [r for r in out if r.get(name) is not None]
        missing = [r for r in out if r.get(name) is None]
        present.sort(key=lambda r, n=name: r[n], reverse=desc)
        out = present + missing  # rows without the column go last either way
    return out


def _parse_env(env: Any) -> dict[str, str]:
    if env is None:
        return {}
    if isinstance(env, dict):
        return {str(k): "" if v is None else str(v) for k, v in env.items()}
    if isinstance(env, str):  # docker style, for non-SDK clients
        out: dict[str, str] = {}
        tokens = shlex.split(env)
        for flag, value in zip(tokens, tokens[1:], strict=False):
            if flag == "-e" and "=" in value:
                k, v = value.split("=", 1)
                out[k] = v
        return out
    raise _BadQuery("env must be an object or a string")


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


# ---------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------

@dataclass
class Faults:
    """Fault switches; change them at any time (the emulator reads them per request)."""

    rate_limit_remaining: int = 0  # next N API requests get 429
    retry_after_s: float | None = 0.1  # Retry-After sent with a 429 (None: no header)
    server_error_remaining: int = 0  # next N API requests get server_error_status
    server_error_status: int = 500  # 500 is not retried by the SDK, 502/503/504 are
    stuck_loading: bool = False  # new instances never leave "loading" nor start a process
    create_fails_with_contract: bool = False  # create answers an error but the contract exists
    create_fail_status: int = 500
    die_next: bool = False  # the next created instance's job gets SIGKILLed mid-run
    die_delay_s: float = 0.3  # ... this long after its process started
    max_instances: int | None = None  # creates beyond this many live instances fail


@dataclass
class _Instance:
    id: int
    offer: dict[str, Any]
    label: str | None
    image: str | None
    env: dict[str, str]
    docker_opts: dict[str, str]
    onstart: str | None
    args: Any
    runtype: str | None
    disk: float
    dph_total: float
    api_key: str
    workdir: Path
    log_path: Path
    created_wall: float
    created_mono: float
    provision_until: float
    loading_until: float
    stuck: bool
    status: str | None = None
    intended_status: str = "running"
    status_msg: str | None = "Provisioning"
    proc: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    started_wall: float | None = None
    started_mono: float | None = None
    exited_wall: float | None = None
    exit_code: int | None = None
    destroyed_wall: float | None = None
    destroyed_mono: float | None = None
    die_delay_s: float | None = None
    die_at_mono: float | None = None
    died_by_fault: bool = False
    run_count: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def destroyed(self) -> bool:
        return self.destroyed_mono is not None


class _Reply(Exception):
    """Raised inside handlers to answer with a status + JSON body."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def _err(status: int, error: str, msg: str) -> _Reply:
    return _Reply(status, {"success": False, "error": error, "msg": msg})


def _no_such_instance(iid: int) -> _Reply:
    return _err(404, "no_such_instance", f"Instance {iid} not found.")


class _Handler(BaseHTTPRequestHandler):
    server_version = "VastEmulator/1.0"
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self.server.emulator._handle(self, "GET")  # type: ignore[attr-defined]

    def do_POST(self) -> None:  # noqa: N802
        self.server.emulator._handle(self, "POST")  # type: ignore[attr-defined]

    def do_PUT(self) -> None:  # noqa: N802
        self.server.emulator._handle(self, "PUT")  # type: ignore[attr-defined]

    def do_DELETE(self) -> None:  # noqa: N802
        self.server.emulator._handle(self, "DELETE")  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # The request line may carry ?api_key=...; log only the path.
        logger.debug("%s %s", self.command, urlsplit(self.path).path)


_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/api/v0/bundles/?$"), "search"),
    ("PUT", re.compile(r"^/api/v0/search/asks/?$"), "search_new"),
    ("PUT", re.compile(r"^/api/v0/asks/(\d+)/?$"), "create"),
    ("PUT", re.compile(r"^/api/v0/launch_instance/?$"), "launch"),
    ("GET", re.compile(r"^/api/v0/instances/?$"), "list_v0"),
    ("GET", re.compile(r"^/api/v1/instances/?$"), "list_v1"),
    ("GET", re.compile(r"^/api/v0/instances/(\d+)/?$"), "show"),
    ("PUT", re.compile(r"^/api/v0/instances/(\d+)/?$"), "update"),
    ("DELETE", re.compile(r"^/api/v0/instances/(\d+)/?$"), "destroy"),
    ("DELETE", re.compile(r"^/api/v0/instances/?$"), "destroy_bulk"),
    ("PUT", re.compile(r"^/api/v0/instances/request_logs/(\d+)/?$"), "logs"),
]
_RESULT_PREFIX = "/_emulator/results/"


class VastEmulator:
    """Local Vast.ai control-plane emulator; see the module docstring.

    Args:
        api_key: the account key (generated when omitted).
        offers: offer dicts (``id`` required; missing fields get defaults). Defaults to
            :data:`DEFAULT_OFFERS`.
        command: the job's argv, or a callable ``f(info) -> argv`` where ``info`` holds
            ``id, image, env, onstart, args, runtype, label, workdir``. Default
            ``[sys.executable, "-m", "gpu_job"]``.
        loading_s / provisioning_s: how long an instance stays ``loading`` / ``None``.
        kill_grace_s: SIGTERM -> SIGKILL grace on destroy and stop.
        logs_delay_s: how long a logs ``result_url`` answers 404 before the text is ready.
        offers_single_use: if True an offer is rented by a create (hidden from search and not
            creatable) until that instance is destroyed, as on Vast.
        base_env: replaces the minimal base env given to jobs (PATH, HOME, PYTHONPATH).
        inject_vast_url: put ``VAST_URL=<emulator url>`` in the job env (the SDK's
            server-url default), so an SDK in the job talks to the emulator.
        workdir: where per-instance dirs/logs go; a temp dir (removed by stop()) if omitted.
        destroy_unknown_status: status for destroying an unknown/destroyed instance; 404
            (default) or 200 -- both answer ``{"success": false, "error": "no_such_instance"}``,
            and both have been seen from the live API, so a control plane should accept either.
        show_unknown_status: 200 (default) answers ``{"instances": null}`` for an unknown id
            (the SDK returns None); anything else answers that status + ``no_such_instance``.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        offers: Sequence[dict[str, Any]] | None = None,
        command: Sequence[str] | Callable[[dict[str, Any]], Sequence[str]] | None = None,
        loading_s: float = 0.2,
        provisioning_s: float = 0.0,
        kill_grace_s: float = 2.0,
        logs_delay_s: float = 0.0,
        offers_single_use: bool = False,
        base_env: dict[str, str] | None = None,
        inject_vast_url: bool = True,
        workdir: str | os.PathLike[str] | None = None,
        faults: Faults | None = None,
        destroy_unknown_status: int = 404,
        show_unknown_status: int = 200,
    ) -> None:
        self.api_key = api_key or "emu-" + secrets.token_hex(16)
        self.command = command if command is not None else [sys.executable, "-m", "gpu_job"]
        self.loading_s = loading_s
        self.provisioning_s = provisioning_s
        self.kill_grace_s = kill_grace_s
        self.logs_delay_s = logs_delay_s
        self.offers_single_use = offers_single_use
        self.base_env = base_env
        self.inject_vast_url = inject_vast_url
        self.faults = faults or Faults()
        self.destroy_unknown_status = destroy_unknown_status
        self.show_unknown_status = show_unknown_status

        self._lock = threading.RLock()
        self._offers: dict[int, dict[str, Any]] = {}
        self.set_offers(DEFAULT_OFFERS if offers is None else offers)
        self._instances: dict[int, _Instance] = {}
        self._keys: dict[str, int] = {}  # instance-scoped key -> instance id
        self._next_id = _FIRST_INSTANCE_ID
        self._results: dict[str, tuple[float, str]] = {}
        self._create_requests: list[dict[str, Any]] = []
        self._destroy_requests: list[dict[str, Any]] = []
        self._request_log: list[dict[str, Any]] = []
        self._stopped_mono: float | None = None
        self._tls = threading.local()

        self._own_workdir = workdir is None
        self._workdir_arg = workdir
        self.workdir: Path | None = None
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop_event = threading.Event()
        self.url = ""
        self.port = 0

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> VastEmulator:
        if self._server is not None:
            return self
        if self._own_workdir:
            self.workdir = Path(tempfile.mkdtemp(prefix="vast-emu-"))
        else:
            self.workdir = Path(self._workdir_arg)  # type: ignore[arg-type]
            self.workdir.mkdir(parents=True, exist_ok=True)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        self.port = server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop_event.clear()
        self._stopped_mono = None
        serve = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name="vast-emu-http", daemon=True,
        )
        reaper = threading.Thread(target=self._reaper, name="vast-emu-reaper", daemon=True)
        self._threads = [serve, reaper]
        serve.start()
        reaper.start()
        return self

    def stop(self) -> None:
        """Stop the server, kill every job process (SIGTERM, then SIGKILL), freeze billing."""
        self._stop_event.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []
        with self._lock:
            if self._stopped_mono is None:
                self._stopped_mono = time.monotonic()
            procs = [(i, i.proc) for i in self._instances.values() if i.proc is not None]
        for inst, proc in procs:
            self._kill(proc, grace=min(self.kill_grace_s, 1.0))
            with self._lock:
                self._note_exit(inst, proc)
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> VastEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- fault switches ----------------------------------------------------

    def rate_limit_next(self, n: int, retry_after: float | None = None) -> None:
        """The next ``n`` API requests get 429 (+ Retry-After ``retry_after`` or the default)."""
        with self._lock:
            self.faults.rate_limit_remaining = n
            if retry_after is not None:
                self.faults.retry_after_s = retry_after

    def server_error_next(self, n: int, status: int = 500) -> None:
        """The next ``n`` API requests get ``status`` (500: not retried by the SDK; 503: retried)."""
        with self._lock:
            self.faults.server_error_remaining = n
            self.faults.server_error_status = status

    def die_mid_job(
        self, instance_id: int | None = None, *, next: bool = False, delay_s: float | None = None
    ) -> None:
        """SIGKILL a job ``delay_s`` after its process starts (or after now, if running).

        ``instance_id`` targets an existing instance; ``next=True`` the next one created.
        """
        delay = self.faults.die_delay_s if delay_s is None else delay_s
        with self._lock:
            if next:
                self.faults.die_next = True
                self.faults.die_delay_s = delay
            if instance_id is not None:
                inst = self._instances[int(instance_id)]
                inst.die_delay_s = delay
                if inst.started_mono is not None:
                    inst.die_at_mono = time.monotonic() + delay

    @property
    def stuck_loading(self) -> bool:
        return self.faults.stuck_loading

    @stuck_loading.setter
    def stuck_loading(self, value: bool) -> None:
        self.faults.stuck_loading = value

    @property
    def create_fails_with_contract(self) -> bool:
        return self.faults.create_fails_with_contract

    @create_fails_with_contract.setter
    def create_fails_with_contract(self, value: bool) -> None:
        self.faults.create_fails_with_contract = value

    @property
    def max_instances(self) -> int | None:
        return self.faults.max_instances

    @max_instances.setter
    def max_instances(self, value: int | None) -> None:
        self.faults.max_instances = value

    # -- inspection --------------------------------------------------------

    def set_offers(self, offers: Sequence[dict[str, Any]]) -> None:
        normalised = [_normalise_offer(o) for o in offers]
        with self._lock:
            self._offers = {o["id"]: o for o in normalised}

    @property
    def offers(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._offers.values()))

    def _end_mono(self, inst: _Instance) -> float:
        if inst.destroyed_mono is not None:
            return inst.destroyed_mono
        if self._stopped_mono is not None:
            return self._stopped_mono
        return time.monotonic()

    def billed_seconds(self, instance_id: int) -> float:
        with self._lock:
            inst = self._instances[int(instance_id)]
            return max(0.0, self._end_mono(inst) - inst.created_mono)

    def cost(self, instance_id: int) -> float:
        with self._lock:
            inst = self._instances[int(instance_id)]
            return self.billed_seconds(instance_id) * inst.dph_total / 3600.0

    def total_cost(self) -> float:
        with self._lock:
            return sum(self.cost(i) for i in self._instances)

    def _snapshot(self, inst: _Instance) -> dict[str, Any]:
        billed = max(0.0, self._end_mono(inst) - inst.created_mono)
        return {
            "id": inst.id,
            "offer_id": inst.offer["id"],
            "label": inst.label,
            "image": inst.image,
            "env": dict(inst.env),
            "docker_opts": dict(inst.docker_opts),
            "onstart": inst.onstart,
            "args": inst.args,
            "disk": inst.disk,
            "price": inst.extra.get("price"),
            "runtype": inst.runtype,
            "dph_total": inst.dph_total,
            "actual_status": inst.status,
            "intended_status": inst.intended_status,
            "status_msg": inst.status_msg,
            "exit_code": inst.exit_code,
            "pid": inst.pid,
            "created_at": inst.created_wall,
            "started_at": inst.started_wall,
            "exited_at": inst.exited_wall,
            "destroyed_at": inst.destroyed_wall,
            "destroyed": inst.destroyed,
            "stuck_loading": inst.stuck,
            "died_by_fault": inst.died_by_fault,
            "billed_seconds": billed,
            "cost": billed * inst.dph_total / 3600.0,
            "log_path": str(inst.log_path),
            "workdir": str(inst.workdir),
        }

    def instance(self, instance_id: int) -> dict[str, Any]:
        """Emulator-side view of one instance (destroyed ones included)."""
        with self._lock:
            self._tick()
            return self._snapshot(self._instances[int(instance_id)])

    def all_instances(self) -> list[dict[str, Any]]:
        """Every instance ever created, destroyed ones included, oldest first."""
        with self._lock:
            self._tick()
            return [self._snapshot(i) for i in self._instances.values()]

    def live_instances(self) -> list[dict[str, Any]]:
        """Instances not destroyed (still billing, unless the emulator was stopped)."""
        return [s for s in self.all_instances() if not s["destroyed"]]

    def pid(self, instance_id: int) -> int | None:
        with self._lock:
            return self._instances[int(instance_id)].pid

    def instance_api_key(self, instance_id: int) -> str:
        with self._lock:
            return self._instances[int(instance_id)].api_key

    def read_log(self, instance_id: int) -> str:
        with self._lock:
            path = self._instances[int(instance_id)].log_path
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def create_requests(self) -> list[dict[str, Any]]:
        """Every create call (PUT /asks/<id>/, launch_instance) with its answer status."""
        with self._lock:
            return copy.deepcopy(self._create_requests)

    @property
    def destroy_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._destroy_requests)

    @property
    def request_log(self) -> list[dict[str, Any]]:
        """Every HTTP request: method, path (no query string), status, time."""
        with self._lock:
            return copy.deepcopy(self._request_log)

    def wait_for_status(self, instance_id: int, status: str | None, timeout: float = 5.0) -> dict[str, Any]:
        """Block until the instance's actual_status is ``status``; return its snapshot."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.instance(instance_id)
            if snap["actual_status"] == status:
                return snap
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"instance {instance_id} is {snap['actual_status']!r}, not {status!r}"
                )
            time.sleep(0.01)

    # -- state machine -----------------------------------------------------

    def _reaper(self) -> None:
        while not self._stop_event.wait(0.02):
            try:
                with self._lock:
                    self._tick()
            except Exception:  # keep reaping whatever one instance does
                logger.exception("vast emulator reaper")

    def _tick(self) -> None:
        """Advance every live instance's status (call with the lock held)."""
        if self._stopped_mono is not None:
            return
        now = time.monotonic()
        for inst in self._instances.values():
            if inst.destroyed:
                continue
            if inst.status is None and now >= inst.provision_until:
                inst.status = "loading"
                inst.status_msg = f"Pulling image {inst.image}"
            if inst.status == "loading" and not inst.stuck and now >= inst.loading_until:
                self._start_process(inst)
            if inst.status == "running" and inst.proc is not None:
                if inst.die_at_mono is not None and now >= inst.die_at_mono and not inst.died_by_fault:
                    inst.died_by_fault = True
                    self._signal_group(inst.proc, signal.SIGKILL)
                if inst.proc.poll() is not None:
                    self._note_exit(inst, inst.proc)

    def _start_process(self, inst: _Instance) -> None:
        info = {
            "id": inst.id, "image": inst.image, "env": dict(inst.env), "onstart": inst.onstart,
            "args": inst.args, "runtype": inst.runtype, "label": inst.label,
            "workdir": str(inst.workdir),
        }
        argv = list(self.command(info) if callable(self.command) else self.command)
        env = self._child_env(inst)
        inst.run_count += 1
        now_wall, now_mono = time.time(), time.monotonic()
        inst.status = "running"
        inst.status_msg = "Container running"
        inst.started_wall, inst.started_mono = now_wall, now_mono
        inst.exit_code = inst.exited_wall = None
        with open(inst.log_path, "ab") as log:
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=env, cwd=inst.workdir, start_new_session=True,
                )
            except OSError as exc:
                log.write(f"vast-emulator: cannot start job: {exc}\n".encode())
                inst.status = "exited"
                inst.exit_code = 127
                inst.exited_wall = now_wall
                inst.status_msg = f"Error starting container: {exc}"
                return
        inst.proc = proc
        inst.pid = proc.pid
        if inst.die_delay_s is not None:
            inst.die_at_mono = now_mono + inst.die_delay_s
        logger.debug("instance %s started pid %s (env keys: %s)", inst.id, proc.pid, sorted(inst.env))

    def _child_env(self, inst: _Instance) -> dict[str, str]:
        if self.base_env is not None:
            env = dict(self.base_env)
        else:
            paths: list[str] = []
            for p in [*sys.path, *os.environ.get("PYTHONPATH", "").split(os.pathsep)]:
                if p and os.path.abspath(p) not in paths:
                    paths.append(os.path.abspath(p))
            env = {
                "PATH": os.environ.get("PATH", os.defpath),
                "HOME": os.environ.get("HOME", str(inst.workdir)),
                "PYTHONPATH": os.pathsep.join(paths),
            }
        if self.inject_vast_url and self.url:
            env["VAST_URL"] = self.url
        env.update(inst.env)
        env["CONTAINER_ID"] = str(inst.id)
        env["CONTAINER_API_KEY"] = inst.api_key
        env["VAST_CONTAINERLABEL"] = f"C.{inst.id}"
        return env

    def _note_exit(self, inst: _Instance, proc: subprocess.Popen[bytes]) -> None:
        rc = proc.poll()
        if rc is None or inst.proc is not proc:
            return
        inst.proc = None
        inst.exit_code = _exit_code(rc)
        inst.exited_wall = time.time()
        if not inst.destroyed and inst.status == "running":
            inst.status = "exited"
            inst.status_msg = f"Container exited with code {inst.exit_code}"

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill(self, proc: subprocess.Popen[bytes], grace: float | None = None) -> None:
        """SIGTERM the process group, SIGKILL it after the grace period, reap the leader."""
        grace = self.kill_grace_s if grace is None else grace
        if proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(proc, signal.SIGKILL)  # stragglers in the group, if any
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            logger.error("job pid %s survived SIGKILL", proc.pid)

    # -- HTTP plumbing -----------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(req.path)
        path = parts.path
        status, body, headers, raw = 500, {}, {}, None
        try:
            if method == "GET" and path.startswith(_RESULT_PREFIX):
                status, raw = self._serve_result(path[len(_RESULT_PREFIX):])
            else:
                status, body, headers = self._dispatch(req, method, path, parts.query)
        except Exception as exc:  # a bug in the emulator: answer 500, keep serving
            logger.exception("vast emulator: %s %s", method, path)
            status, body, headers = 500, {"success": False, "error": "emulator_bug", "msg": str(exc)}, {}
        with self._lock:
            self._request_log.append(
                {"time": time.time(), "method": method, "path": path, "status": status}
            )
        payload = raw.encode() if raw is not None else json.dumps(body).encode()
        try:
            req.send_response(status)
            req.send_header("Content-Type", "text/plain; charset=utf-8" if raw is not None else "application/json")
            req.send_header("Content-Length", str(len(payload)))
            for k, v in headers.items():
                req.send_header(k, v)
            req.end_headers()
            req.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _serve_result(self, token: str) -> tuple[int, str]:
        with self._lock:
            entry = self._results.get(token)
        if entry is None or time.monotonic() < entry[0]:
            return 404, "NoSuchKey"
        return 200, entry[1]

    def _dispatch(
        self, req: BaseHTTPRequestHandler, method: str, path: str, query: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        qs = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        route, groups = None, ()
        for m, pattern, name in _ROUTES:
            match = pattern.match(path)
            if match and m == method:
                route, groups = name, match.groups()
                break
        body: Any = None
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            pass
        self._tls.created_iid = None
        scope: int | None = None
        try:
            with self._lock:
                self._tick()
                self._inject_faults()
            scope = self._authenticate(req, qs)
            if route is None:
                raise _err(404, "not_found", f"no such endpoint: {method} {path}")
            if scope is not None and not (route in ("show", "destroy") and int(groups[0]) == scope):
                raise _err(403, "forbidden", "this key is scoped to a single instance")
            if not isinstance(body, dict):
                raise _err(400, "invalid_args", "request body must be a JSON object")
            handler = getattr(self, f"_route_{route}")
            result = handler(*[int(g) for g in groups], body=body, qs=qs)
            status, out, headers = (*result, {}) if isinstance(result, tuple) else (200, result, {})
        except _Reply as reply:
            status, out, headers = reply.status, reply.body, reply.headers
        except _BadQuery as exc:
            status, out, headers = 400, {"success": False, "error": "invalid_args", "msg": str(exc)}, {}
        self._record(route, groups, body if isinstance(body, dict) else {}, status, scope)
        return status, out, headers

    def _inject_faults(self) -> None:
        f = self.faults
        if f.rate_limit_remaining > 0:
            f.rate_limit_remaining -= 1
            headers = {} if f.retry_after_s is None else {"Retry-After": f"{f.retry_after_s:g}"}
            raise _Reply(
                429,
                {"success": False, "error": "rate_limited",
                 "msg": "API requests too frequent endpoint threshold=3.0"},
                headers,
            )
        if f.server_error_remaining > 0:
            f.server_error_remaining -= 1
            raise _err(f.server_error_status, "server_error", "injected server error")

    def _authenticate(self, req: BaseHTTPRequestHandler, qs: dict[str, str]) -> int | None:
        """Return None for the account key, the instance id for a scoped key; else 401."""
        auth = req.headers.get("Authorization") or ""
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else qs.get("api_key", "")
        if key and secrets.compare_digest(key, self.api_key):
            return None
        with self._lock:
            iid = self._keys.get(key) if key else None
        if iid is not None:
            return iid
        raise _err(401, "invalid_api_key", "Invalid or missing API key")

    def _record(self, route: str | None, groups: Sequence[str], body: dict[str, Any],
                status: int, scope: int | None) -> None:
        now_wall, now_mono = time.time(), time.monotonic()
        with self._lock:
            if route in ("create", "launch"):
                env = body.get("env")
                created = self._tls.created_iid
                self._create_requests.append({
                    "time": now_wall, "monotonic": now_mono,
                    "offer_id": int(groups[0]) if groups else (
                        self._instances[created].offer["id"] if created else None),
                    "label": body.get("label"), "image": body.get("image"),
                    "disk": body.get("disk"),
                    "env_keys": sorted(env) if isinstance(env, dict) else [],
                    "status": status,
                    "instance_id": created,  # set whenever a contract was made
                })
            elif route == "destroy":
                self._destroy_requests.append({
                    "time": now_wall, "monotonic": now_mono, "instance_id": int(groups[0]),
                    "status": status, "scoped": scope is not None,
                })

    # -- routes ------------------------------------------------------------

    def _search(self, q: dict[str, Any]) -> list[dict[str, Any]]:
        with self._lock:
            rows = [o for o in self._offers.values() if _matches(o, q)]
            rows = _sort_rows(rows, q.get("order") or [["score", "desc"]])
            limit = q.get("limit")
            if limit:
                rows = rows[: int(limit)]
            return copy.deepcopy(rows)

    def _route_search(self, *, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {"offers": self._search(body)}

    def _route_search_new(self, *, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {"offers": self._search(body.get("q") or {})}

    def _route_create(self, offer_id: int, *, body: dict[str, Any], **_: Any) -> tuple[int, dict[str, Any]]:
        return self._create(offer_id, body)

    def _route_launch(self, *, body: dict[str, Any], **_: Any) -> tuple[int, dict[str, Any]]:
        found = self._search(body.get("q") or {})
        if not found:
            raise _err(404, "no_such_ask", "No offers found matching the query.")
        return self._create(found[0]["id"], body)

    def _create(self, offer_id: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        image = body.get("image")
        if not image and not body.get("template_hash_id"):
            raise _err(400, "invalid_args", "image or template_hash_id is required")
        env_all = _parse_env(body.get("env"))
        env = {k: v for k, v in env_all.items() if _ENV_NAME.match(k)}
        docker_opts = {k: v for k, v in env_all.items() if not _ENV_NAME.match(k)}
        try:
            disk = float(body.get("disk") if body.get("disk") is not None else 10)
        except (TypeError, ValueError):
            raise _err(400, "invalid_args", "disk must be a number") from None
        with self._lock:
            offer = self._offers.get(offer_id)
            if offer is None or (self.offers_single_use and offer.get("rented")):
                raise _err(404, "invalid_args",
                           f"no_such_ask Instance type by id {offer_id} is not available.")
            if disk > float(offer["disk_space"]):
                raise _err(400, "invalid_args", f"disk {disk:g} > {float(offer['disk_space']):g}")
            live = sum(1 for i in self._instances.values() if not i.destroyed)
            if self.faults.max_instances is not None and live >= self.faults.max_instances:
                raise _err(400, "max_instances_exceeded",
                           f"You may have at most {self.faults.max_instances} instances.")
            iid = self._next_id
            self._next_id += 1
            assert self.workdir is not None
            workdir = self.workdir / f"instance-{iid}"
            workdir.mkdir(parents=True, exist_ok=True)
            now_wall, now_mono = time.time(), time.monotonic()
            inst = _Instance(
                id=iid, offer=copy.deepcopy(offer), label=body.get("label"), image=image,
                env=env, docker_opts=docker_opts, onstart=body.get("onstart"),
                args=body.get("args"), runtype=body.get("runtype"), disk=disk,
                dph_total=float(offer["dph_total"]), api_key="inst-" + secrets.token_hex(16),
                workdir=workdir, log_path=workdir / "container.log",
                created_wall=now_wall, created_mono=now_mono,
                provision_until=now_mono + self.provisioning_s,
                loading_until=now_mono + self.provisioning_s + self.loading_s,
                stuck=self.faults.stuck_loading,
                extra={"price": body.get("price")},
            )
            if self.faults.die_next:
                self.faults.die_next = False
                inst.die_delay_s = self.faults.die_delay_s
            self._instances[iid] = inst
            self._keys[inst.api_key] = iid
            if self.offers_single_use:
                offer["rented"], offer["rentable"] = True, False
            self._tick()
            logger.debug("created instance %s from offer %s label=%r env keys=%s",
                         iid, offer_id, inst.label, sorted(env))
            self._tls.created_iid = iid
            if self.faults.create_fails_with_contract:
                return self.faults.create_fail_status, {
                    "success": False, "error": "internal_error",
                    "msg": "Internal server error while creating the instance.",
                }
            return 200, {"success": True, "new_contract": iid}

    def _row(self, inst: _Instance) -> dict[str, Any]:
        o = inst.offer
        status = inst.status
        cur_state = "stopped" if status in ("exited", "stopped") else "running"
        started = inst.started_wall
        end = inst.exited_wall if status in ("exited", "stopped") else None
        return {
            "id": inst.id,
            "label": inst.label,
            "actual_status": status,
            "intended_status": inst.intended_status,
            "cur_state": cur_state,
            "next_state": cur_state,
            "status_msg": inst.status_msg,
            "exit_code": inst.exit_code,  # emulator extra
            "image_uuid": inst.image,
            "image": inst.image,  # emulator extra; the API's own field is image_uuid
            "image_args": inst.args or [],
            "image_runtype": inst.runtype,
            "onstart": inst.onstart,
            "extra_env": [[k, v] for k, v in inst.env.items()],
            "disk_space": inst.disk,
            "dph_total": inst.dph_total,
            "dph_base": o.get("dph_base"),
            "storage_cost": o.get("storage_cost"),
            "min_bid": o.get("min_bid"),
            "is_bid": False,
            "gpu_name": o.get("gpu_name"),
            "num_gpus": o.get("num_gpus"),
            "gpu_ram": o.get("gpu_ram"),
            "gpu_totalram": o.get("gpu_total_ram"),
            "cpu_cores": o.get("cpu_cores"),
            "cpu_ram": o.get("cpu_ram"),
            "cuda_max_good": o.get("cuda_max_good"),
            "driver_version": o.get("driver_version"),
            "reliability2": o.get("reliability2"),
            "verification": o.get("verification"),
            "inet_up": o.get("inet_up"),
            "inet_down": o.get("inet_down"),
            "geolocation": o.get("geolocation"),
            "machine_id": o.get("machine_id"),
            "host_id": o.get("host_id"),
            "ask_contract_id": o.get("id"),
            "start_date": inst.created_wall,
            "end_date": None,
            "uptime_mins": ((end or time.time()) - started) / 60.0 if started else None,
            "public_ipaddr": "127.0.0.1",
            "local_ipaddrs": "127.0.0.1",
            "ssh_host": "127.0.0.1",
            "ssh_port": None,
            "ports": {},
            "template_id": None,
            "template_hash_id": None,
        }

    def _live(self, iid: int) -> _Instance:
        inst = self._instances.get(iid)
        if inst is None or inst.destroyed:
            raise _no_such_instance(iid)
        return inst

    def _route_show(self, iid: int, **_: Any) -> dict[str, Any]:
        with self._lock:
            inst = self._instances.get(iid)
            if inst is None or inst.destroyed:
                if self.show_unknown_status != 200:
                    raise _err(self.show_unknown_status, "no_such_instance",
                               f"Instance {iid} not found.")
                return {"instances": None}
            return {"instances": self._row(inst)}

    def _rows(self) -> list[dict[str, Any]]:
        return [self._row(i) for i in self._instances.values() if not i.destroyed]

    def _route_list_v0(self, **_: Any) -> dict[str, Any]:
        with self._lock:
            return {"instances": self._rows()}

    def _route_list_v1(self, *, qs: dict[str, str], **_: Any) -> dict[str, Any]:
        def arg(name: str, default: Any) -> Any:
            if name not in qs:
                return default
            try:
                return json.loads(qs[name])
            except ValueError:
                return qs[name]

        filters = arg("select_filters", {}) or {}
        order = arg("order_by", [{"col": "id", "dir": "asc"}])
        limit = int(arg("limit", 25) or 25)
        after = arg("after_token", None)
        if not isinstance(filters, dict):
            raise _BadQuery("select_filters must be an object")
        with self._lock:
            rows = [r for r in self._rows() if _matches(r, filters)]
        rows = _sort_rows(rows, order if isinstance(order, list) else [])
        start = int(str(after).lstrip("o")) if after not in (None, "") else 0
        page = rows[start : start + limit]
        nxt = f"o{start + limit}" if start + limit < len(rows) else None
        labels: dict[str, int] = {}
        for r in rows:
            if r["label"]:
                labels[r["label"]] = labels.get(r["label"], 0) + 1
        return {"instances": page, "next_token": nxt, "total_instances": len(rows),
                "label_counts": labels}

    def _route_update(self, iid: int, *, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        to_kill = None
        with self._lock:
            inst = self._live(iid)
            if "label" in body:
                inst.label = body["label"]
            state = body.get("state")
            if state == "stopped":
                inst.intended_status = "stopped"
                to_kill = inst.proc
                inst.status = "stopped"
                inst.status_msg = "Stopped by user"
            elif state == "running" and inst.status in ("stopped", "exited"):
                now = time.monotonic()
                inst.intended_status = "running"
                inst.proc = None
                inst.status = "loading"
                inst.status_msg = f"Pulling image {inst.image}"
                inst.loading_until = now + self.loading_s
        if to_kill is not None:
            self._kill(to_kill)
            with self._lock:
                if inst.proc is to_kill:
                    rc = to_kill.poll()
                    inst.proc = None
                    inst.exit_code = None if rc is None else _exit_code(rc)
                    inst.exited_wall = time.time()
        return {"success": True}

    def _destroy(self, iid: int) -> None:
        with self._lock:
            inst = self._live(iid)
            inst.destroyed_wall, inst.destroyed_mono = time.time(), time.monotonic()
            inst.status_msg = "Destroyed"
            proc = inst.proc
            self._keys.pop(inst.api_key, None)
            offer = self._offers.get(inst.offer["id"])
            if self.offers_single_use and offer is not None:
                offer["rented"], offer["rentable"] = False, True
        if proc is not None:
            self._kill(proc)
            with self._lock:
                if inst.proc is proc:
                    rc = proc.poll()
                    inst.proc = None
                    if rc is not None:
                        inst.exit_code = _exit_code(rc)
                        inst.exited_wall = time.time()
        logger.debug("destroyed instance %s", iid)

    def _route_destroy(self, iid: int, **_: Any) -> tuple[int, dict[str, Any]]:
        try:
            self._destroy(iid)
        except _Reply as reply:
            if reply.status == 404 and self.destroy_unknown_status != 404:
                return self.destroy_unknown_status, reply.body
            raise
        return 200, {"success": True, "msg": "Instance destroyed successfully"}

    def _route_destroy_bulk(self, *, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        done, missing = [], []
        for raw_id in body.get("instance_ids") or []:
            try:
                self._destroy(int(raw_id))
                done.append(int(raw_id))
            except _Reply:
                missing.append(int(raw_id))
        return {"success": True, "destroyed": done, "not_found": missing}

    def _route_logs(self, iid: int, *, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        with self._lock:
            inst = self._live(iid)
            path = inst.log_path
        text = path.read_text(errors="replace") if path.exists() else ""
        lines = text.splitlines(keepends=True)
        if body.get("filter"):
            lines = [ln for ln in lines if str(body["filter"]) in ln]
        try:
            tail = int(body.get("tail") or 1000)
        except (TypeError, ValueError):
            raise _BadQuery("tail must be an integer") from None
        text = "".join(lines[-tail:]) if tail > 0 else ""
        token = secrets.token_hex(12)
        with self._lock:
            self._results[token] = (time.monotonic() + self.logs_delay_s, text)
        return {"success": True, "result_url": f"{self.url}{_RESULT_PREFIX}{token}",
                "msg": "Logs will be uploaded to the result_url shortly."}
