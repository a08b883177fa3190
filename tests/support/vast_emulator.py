"""A local emulator of the Vast.ai REST endpoints the real ``vastai`` SDK (1.9.1) calls.

It agrees with Vast's own API documentation (github.com/vast-ai/docs, mirrored for this project),
not with our client code: by default ("strict") it enforces every limit the documentation states.
Unit tests may relax it explicitly: ``VastEmulator(strict=False)``, or pass ``limits=`` (a
:class:`Limits`; ``Limits.relaxed()``, ``Limits().without_rate_limits()``, ``Limits().scaled(0.01)``).

Point the real SDK at it and drive it exactly as production code would::

    from vastai import VastAI
    with VastEmulator(command=[sys.executable, "-c", "print('hi')"]) as emu:
        vast = VastAI(api_key=emu.api_key, server_url=emu.url, retry=1)
        offer = vast.search_offers("gpu_name=RTX_4090 reliability>0.95", order="dph_total",
                                   storage=30)[0]                  # priced for 30 GB of disk
        iid = vast.create_instance(offer["id"], image="img:tag", disk=30, cancel_unavail=True,
                                   env={"K": "V"}, label="job-1")["new_contract"]
        vast.show_instance(id=iid)["actual_status"]     # None -> "loading" -> "running" -> "exited"
        vast.logs(instance_id=iid)                        # the process's stdout+stderr
        vast.destroy_instance(id=iid)                     # kills the process group; billing stops
        emu.billing(iid)                                  # GPU, storage and bandwidth, as Vast bills

What strict mode enforces (``Limits()``; every figure from the docs file named)
---------------------------------------------------------------------------------
=========================================  =================================  ===============================
limit (``Limits`` field)                   default                            source (vast-ai/docs)
=========================================  =================================  ===============================
env value (``env_value_max``)              256 characters each                create_instance.yaml
                                                                              x-input-validation ``env``
env in all (``env_total_max``)             32768, measured as Vast receives   create_instance.yaml ``env``
                                           it: ``" ".join("-e K=V", ...)``    (``max_total_length``)
label at create (``label_max``)            256                                create_instance.yaml ``label``
image (``image_max``)                      1024                               create_instance.yaml ``image``
args+args_str+onstart (``args_max``)       4096 combined (args joined by " ") create_instance.yaml ``args``
disk (``disk_min_gb``)                     >= 8.0 GB                          create_instance.yaml ``disk``
price / bid (``price_min``/``price_max``)  0.001 .. 128 $/h                   create_instance.yaml ``price``
change bid (``bid_min``/``bid_max``)      0.001 .. 32 $/h                    change_bid.yaml ``price``
label via update (``update_label_max``)    1024                               label_instance.yaml
create (``create_interval_s``/``_penalty``) one per 4.5 s; one sooner is      create_instance.yaml
                                           refused and blocks creates 12 s    x-rate-limit (threshold, penalty)
launch_instance (``launch_interval_s``)    one per 5 s                        launch_instance.yaml
search offers (``search_max_calls``/       10 per 60 s, sliding window;       search_offers.yaml x-rate-limit
  ``search_period_s``)                     POST /bundles/ + PUT /search/asks/
instance list (``list_interval_s``)        one per 1.0 s (v0 + v1 together)   show_instances.yaml
show one instance (``show_interval_s``)    one per 2.0 s                      show_instance.yaml
destroy (``destroy_interval_s``)           one per 3.0 s                      destroy_instance.yaml
update: label/start/stop                   one per 1.0 s                      manage_instance.yaml,
  (``update_interval_s``)                                                     label/start/stop_instance.yaml
reboot (``reboot_interval_s``)             one per 1.0 s                      reboot_instance.yaml
change bid (``change_bid_interval_s``)     one per 5.5 s                      change_bid.yaml x-rate-limit
logs                                       no limit (none documented)         logs.yaml
daily search quota                         off (``None``); N per identity,    the SDK's api/client.py
  (``search_quota_per_day``)               reset at the next UTC midnight     (``search_quota_exceeded``)
=========================================  =================================  ===============================

* Value limits answer 400 ``{"success": false, "error": "invalid_args", "msg": "<field>: <n>
  characters; the limit is <max> ..."}`` and create nothing (the msg names env *keys*, never values).
* Rate limits (rate-limits-and-errors.mdx) are "a minimum interval between requests for a given
  endpoint and identity"; the identity is bearer token + ``api_key`` query param + client IP (all
  clients here are 127.0.0.1, so: per key; an instance's ``CONTAINER_API_KEY`` is its own identity).
  Only requests that pass the limiter count as "previous". A refused request gets **HTTP 429 with a
  plain-text body** ``API requests too frequent: endpoint threshold=4.5`` (``Content-Type:
  text/plain``; for the per-minute search window: ``API requests too frequent``) and **no
  Retry-After** header ("The API does not currently set standard rate-limit headers"). With
  ``Limits(rate_limit_json=True)`` the body is the JSON form ``{"success": false, "error":
  "rate_limited", "msg": ...}`` the page also mentions. Every 429 the emulator sends (limits, quota,
  injected faults) is recorded in :attr:`VastEmulator.rate_limited` (route, method, path, time,
  monotonic, identity, reason).
* The search quota answers 429 ``{"success": false, "error": "search_quota_exceeded", "msg": ...}``
  with ``X-RateLimit-Reset: <unix time of the reset>`` (what the SDK's ``is_search_quota_exceeded``
  and the CLI's ``with_quota_reset`` read). ``emu.set_search_quota_reset(time.time() + 1)`` makes
  it reset in a second (then the next reset is the next UTC midnight again).

What the SDK does on the wire (read from ``vastai/api/*.py`` of vastai 1.9.1)
----------------------------------------------------------------------------
Auth is ``Authorization: Bearer <key>`` (the emulator also accepts ``?api_key=``).
Every SDK call does ``r.raise_for_status()`` and then ``r.json()``: any HTTP error status
surfaces as ``requests.exceptions.HTTPError`` with ``.response`` (status code, body, headers) --
so a plain-text 429 surfaces like any other, and ``response.json()`` on it raises ValueError.

=============================  ==========================================  ======================
SDK method                     request                                     reads
=============================  ==========================================  ======================
search_offers(query, order=,   POST /api/v0/bundles/  body = filter dict    ``offers``
  limit=, type=, storage=,     ``{field: {op: value}}`` + ``order``,
  no_default=)                 ``type``, ``limit``, ``allocated_storage``
                               (= ``storage``, default 5.0 GB)
create_instance(id, image=,    PUT /api/v0/asks/<offer_id>/  body has        whole body
  disk=, env=, label=,         ``image env disk label onstart args runtype`` (``new_contract``)
  onstart_cmd=, args=,         ``price client_id cancel_unavail`` (the SDK
  cancel_unavail=False, ...)   sends ``cancel_unavail: false`` by default)
show_instance(id)              GET /api/v0/instances/<id>/?owner=me          ``instances`` (a row,
                                                                             or null -> None)
show_instances()               GET /api/v1/instances/?select_filters=&       ``instances``,
                               order_by=&limit=25[&after_token=]             ``next_token``
logs(instance_id, tail=,       PUT /api/v0/instances/request_logs/<id>/      ``result_url``, then
  filter=)                     then GET <result_url> (no auth) until 200     polls it: text
label_instance(id, label)      PUT /api/v0/instances/<id>/ {"label": ...}    whole body
start/stop_instance(id)        PUT /api/v0/instances/<id>/ {"state": ...}    whole body
reboot_instance(id)            PUT /api/v0/instances/reboot/<id>/            whole body
destroy_instance(id)           DELETE /api/v0/instances/<id>/                whole body
launch_instance(gpu_name, ...) PUT /api/v0/launch_instance/ {"q": ..., ...}  whole body
=============================  ==========================================  ======================

Query strings: ``search_offers("gpu_ram>=20 gpu_name=RTX_4090")`` is parsed *client side*:
``_`` becomes a space, ``cuda_vers`` is aliased to ``cuda_max_good``, ``dph`` to ``dph_total``,
``gpu_ram``/``cpu_ram`` are multiplied by 1000 (offers carry MB), values stay strings except
``true/false/null`` and multiplied fields; the SDK adds ``verified=true external=false
rentable=true`` unless ``no_default=True``. ``order="dph_total"`` -> ascending,
``"dph_total-"`` -> descending; the default is ``"score-"``.

Env: ``env=`` may be a dict or a docker-style string ``"-e K=V -e K2=V2 -p 8080:8080"`` which the
SDK turns into a dict (``-p``/``-v``/``-n`` options become keys like ``"-p 8080:8080"``). The
emulator passes only valid identifier keys to the process; the row's ``extra_env`` is the
list of ``[key, value]`` pairs (the SDK turns it back into a dict).

Retries -- does ``vastai`` retry 429s internally?  **Yes.**  ``VastClient._request`` makes up to
``retry`` attempts in total (``VastAI(retry=3)`` by default, i.e. 2 retries) on HTTP
429/502/503/504, for every method including the non-idempotent create ``PUT /asks/<id>/``,
sleeping ``Retry-After`` seconds when the header is a number <= 60 (else 0.15 s, x1.5 per
retry: so against Vast's header-less 429s its retries come 0.15 s and 0.375 s later, well inside
any documented interval, and a create retried that way earns the 12 s penalty); a 429 whose body
says ``"error": "search_quota_exceeded"`` or a Retry-After > 60 is not retried. When attempts run
out the *last* response goes through ``raise_for_status()`` -> ``HTTPError`` with status 429. 500
and 404 are never retried. Transport errors (``ConnectionError``/``Timeout``) are retried too and
re-raised after the last attempt -- so a create that timed out client-side may have been sent
(and billed) more than once, and a create answered 502/503/504 after the contract was made is
re-sent, making one contract per attempt (reproduce with ``create_fails_with_contract=True`` and
``faults.create_fail_status=503``). Build ``VastAI(retry=1)`` to disable SDK retries.

Error shapes the emulator returns (JSON unless said otherwise, surfaced as ``HTTPError``):
* 401 ``{"success": false, "error": "invalid_api_key", "msg": ...}`` -- wrong/missing key.
* 403 ``{"success": false, "error": "forbidden", ...}`` -- an instance-scoped key used beyond
  its own instance (it may show, start/stop, reboot and destroy exactly that instance).
* 404 ``{"success": false, "error": "no_such_instance", "msg": "Instance N not found."}`` --
  destroy/label/logs of an unknown (or already destroyed) instance. ``show_instance`` of a
  destroyed id answers its row with ``cur_state: "unloaded"`` for ``unloaded_s`` seconds, then
  200 ``{"instances": null}`` as the live API does, which the SDK maps to ``None``.
* 404 ``{"success": false, "error": "invalid_args", "msg": "no_such_ask ..."}`` -- unknown offer
  (create_instance.yaml 404).
* 410 ``{"success": false, "error": "no_such_ask", "msg": "no_such_ask Instance type N is no longer
  available.", "ask_id": N}`` -- ``cancel_unavail`` true and the offer cannot start now
  (create_instance.yaml 410; mark an offer with ``emu.unavailable_offers.add(offer_id)``). With
  ``cancel_unavail`` false (the SDK's default) the create *succeeds* and makes a contract that sits
  ``stopped`` waiting for the GPUs, never runs the job, and bills storage until destroyed.
* 400 ``{"success": false, "error": "invalid_args", ...}`` -- value limits above, no image, disk
  larger than the offer's ``disk_space``, bad query.
* 400 ``{"success": false, "error": "insufficient_balance", "msg": "Insufficient credit: ..."}``
  -- the ``out_of_credit`` fault. Vast documents no create-time credit error; the code is the one
  Vast's docs use for a balance too low (transfer_credit.yaml 400 enum ``insufficient_balance``),
  the msg starts with the text Vast's prepay_instance.yaml gives for it ("Insufficient credit"),
  and the status is ``faults.out_of_credit_status`` (400, the create endpoint's documented error
  status; prepay documents 411). No peer (dstack, SkyPilot) handles a specific string: both treat
  any failed create as "no capacity".
* 400 ``{"success": false, "error": "max_instances_exceeded", ...}`` -- the ``max_instances`` fault.
* 429 -- rate limits and quota (above); also the ``rate_limit_next`` fault (JSON + Retry-After,
  for testing SDK retries). 500/503 -- injected faults; ``create_fails_with_contract`` gives a 500
  ``{"success": false, "error": "internal_error"}`` *after* the contract was made, carrying
  ``"new_contract": <id>`` when ``faults.create_fail_includes_id`` is set.

Emulated platform behaviour
---------------------------
* ``actual_status`` (cli/reference/show-instance.mdx): ``None`` for ``provisioning_s`` (default 0)
  -> ``"loading"`` for ``loading_s`` (default 0.2 s) -> ``"running"`` (the job process starts at
  that moment) -> ``"exited"`` when it ends (``status_msg`` says the code; a signal-killed process
  gets the docker-style code 128+signal, e.g. 137 for SIGKILL). ``intended_status`` stays
  ``"running"``; ``cur_state`` is ``"running"`` until exit or stop, then ``"stopped"``, and
  ``"unloaded"`` once destroyed. Fault switches produce the other documented states and the ones
  peers see (SkyPilot's provisioner handles each): ``set_state(iid, ...)`` / ``state_next(...)``
  with ``"unknown"`` (no heartbeat; the row says so, the job keeps running), ``"offline"`` (host
  disconnected: no GPU or storage billing), ``"frozen"`` (SIGSTOP; GPU bills), ``"rebooting"``
  (the container restarts: job killed, started again after ``duration_s``), ``"created"`` with a
  daemon error in ``status_msg`` (``"Error response from daemon: OCI runtime create failed: ..."``:
  the container never starts; storage bills), ``"running"`` (clears them).
* Rows carry only fields show_instance.yaml documents for an instance (no ``exit_code``, no
  ``ask_contract_id``; ``bundle_id`` is the offer the instance was created from, the emulator's
  reading of "the bundle this instance belongs to"). ``instance(iid)`` (the emulator-side view)
  keeps ``exit_code``, ``offer_id`` and everything else for assertions.
* The job is a real child process (own session/process group) run with a minimal env
  (PATH, HOME, PYTHONPATH=this process's sys.path, VAST_URL=<emulator url> so an SDK inside
  the job talks to the emulator) + the create ``env`` + ``CONTAINER_ID``, ``CONTAINER_API_KEY``
  and ``VAST_CONTAINERLABEL=C.<id>``, plus ``HTTP_PROXY``/``HTTPS_PROXY``/``http_proxy``/
  ``https_proxy`` = the instance's own counting forward proxy on 127.0.0.1 (``NO_PROXY``/
  ``no_proxy`` removed, so requests, urllib and boto3 send everything, local endpoints included,
  through it). stdout+stderr go to a per-instance log file served by logs.
* Billing (guides/reference/billing.mdx): GPU at ``dph_base`` $/h for every second
  ``actual_status`` is ``running`` or ``frozen`` (not while loading, exited, stopped, ...); storage
  at the offer's ``storage_cost`` ($/GB/month, search_offers.yaml) x disk GB / (30*24*3600 s) for
  every second the instance exists in any state except ``offline``; bandwidth per byte through the
  proxy: received at ``inet_down_cost``, sent at ``inet_up_cost`` ($/GB, 1 GB = 1e9 bytes).
  Search results are priced for the ``allocated_storage`` the search sent: ``dph_total = dph_base
  + storage_cost * allocated_storage / (30*24)`` (also ``storage_total_cost`` and the ``search``
  breakdown); an instance row's ``dph_total`` uses its disk. ``billing(iid)`` returns the parts,
  ``cost(iid)`` the total; ``billed_seconds(iid)`` is how long the instance existed.
* Destroy: SIGTERM to the process group, SIGKILL after ``kill_grace_s``, before answering.
* Interruptible instances (guides/instances/choosing/instance-types.mdx, create_instance.yaml
  ``price``): a create with ``price`` (the bid, $/h per machine) rents the offer as interruptible;
  its row says ``is_bid: true`` and its GPU bills at the bid. Every offer carries ``min_bid``
  (default 0.6 x ``dph_base``); ``search_offers(type="bid")`` lists the offers that have one. A bid
  below ``min_bid`` makes a contract that sits stopped and answers 400 ``invalid_price`` carrying
  ``new_contract`` (what dstack's Vast backend meets: "Vast.ai creates spot instances in the stopped
  state and returns an error if the bid is insufficient"); it bills storage until destroyed.
  Outbid ("may be paused if outbid"): the job's group gets SIGTERM, SIGKILL after ``kill_grace_s``;
  ``actual_status``, ``intended_status``, ``cur_state`` and ``next_state`` all read ``"stopped"``
  (what dstack's provisioner reads as an interruption); GPU billing stops, storage goes on until
  destroy; the emulator never resumes it. ``outbid(iid)`` does it now;
  ``faults.outbid_chance`` (0..1, drawn from ``faults.seed``) outbids that share of bid instances
  at a random moment ``faults.outbid_after_s`` (a range) after their job starts.
  ``change_bid`` (PUT /instances/bid_price/<id>/) sets a live instance's bid.
* Everything binds 127.0.0.1; ``stop()`` kills every child, the proxies and the server, and freezes
  the billing clock (instances still live then are reported by ``live_instances()``).

The emulator never logs env values (they may hold secrets); ``create_requests`` records only
env keys. ``all_instances()`` does contain the env, for assertions.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import operator
import os
import random
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
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.counting_proxy import CountingProxy

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_OFFERS", "OCI_START_ERROR", "Faults", "Limits", "VastEmulator"]

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
# ``dph_base`` is the GPU price; storage ($/GB/month) and bandwidth ($/GB) are priced apart,
# as on Vast. The cheapest rentable offer (31000005) charges nothing for bandwidth.
DEFAULT_OFFERS: list[dict[str, Any]] = [
    {"id": 31000001, "machine_id": 5101, "host_id": 901, "gpu_name": "RTX 3090", "num_gpus": 1,
     "gpu_ram": 24576, "dph_base": 0.18, "storage_cost": 0.15, "inet_up_cost": 0.01,
     "inet_down_cost": 0.005, "reliability2": 0.985, "disk_space": 120.0,
     "cuda_max_good": 12.8, "verified": True, "inet_down": 800.0, "score": 150.0,
     "geolocation": "Texas, US"},
    {"id": 31000002, "compute_cap": 890, "machine_id": 5102, "host_id": 902, "gpu_name": "RTX 4090", "num_gpus": 1,
     "gpu_ram": 24564, "dph_base": 0.35, "storage_cost": 0.2, "inet_up_cost": 0.02,
     "inet_down_cost": 0.01, "reliability2": 0.995, "disk_space": 200.0,
     "cuda_max_good": 13.0, "verified": True, "inet_down": 2000.0, "score": 260.0,
     "geolocation": "Quebec, CA"},
    {"id": 31000003, "compute_cap": 890, "machine_id": 5103, "host_id": 903, "gpu_name": "RTX 4090", "num_gpus": 1,
     "gpu_ram": 24564, "dph_base": 0.29, "storage_cost": 0.1, "inet_up_cost": 0.005,
     "inet_down_cost": 0.005, "reliability2": 0.93, "disk_space": 80.0,
     "cuda_max_good": 12.9, "verified": False, "verification": "unverified",
     "inet_down": 500.0, "score": 120.0, "geolocation": "Ohio, US"},
    {"id": 31000004, "machine_id": 5104, "host_id": 904, "gpu_name": "A100 SXM4", "num_gpus": 1,
     "gpu_ram": 81920, "dph_base": 0.95, "storage_cost": 0.3, "inet_up_cost": 0.02,
     "inet_down_cost": 0.02, "reliability2": 0.998, "disk_space": 500.0,
     "cuda_max_good": 12.8, "verified": True, "inet_down": 5000.0, "score": 300.0,
     "geolocation": "Bavaria, DE", "hosting_type": 1, "compute_cap": 800},
    {"id": 31000005, "machine_id": 5105, "host_id": 905, "gpu_name": "RTX A4000", "num_gpus": 1,
     "gpu_ram": 16376, "dph_base": 0.12, "storage_cost": 0.1, "inet_up_cost": 0.0,
     "inet_down_cost": 0.0, "reliability2": 0.97, "disk_space": 60.0,
     "cuda_max_good": 12.4, "verified": True, "inet_down": 300.0, "score": 90.0,
     "geolocation": "Ontario, CA"},
    {"id": 31000006, "compute_cap": 890, "machine_id": 5106, "host_id": 906, "gpu_name": "RTX 4090", "num_gpus": 2,
     "gpu_ram": 24564, "dph_base": 0.70, "storage_cost": 0.25, "inet_up_cost": 0.01,
     "inet_down_cost": 0.01, "reliability2": 0.99, "disk_space": 300.0,
     "cuda_max_good": 13.0, "verified": True, "inet_down": 1500.0, "score": 400.0,
     "geolocation": "Oregon, US"},
    {"id": 31000007, "machine_id": 5107, "host_id": 907, "gpu_name": "RTX 3080", "num_gpus": 1,
     "gpu_ram": 10240, "dph_base": 0.09, "storage_cost": 0.1, "reliability2": 0.98,
     "disk_space": 100.0, "cuda_max_good": 12.6, "verified": True, "rentable": False,
     "rented": True, "inet_down": 700.0, "score": 80.0, "geolocation": "Texas, US"},
]

# The daemon error a container that cannot start shows in status_msg (state "created").
OCI_START_ERROR = (
    "Error response from daemon: failed to create task for container: failed to create shim "
    "task: OCI runtime create failed: runc create failed: unable to start container process: "
    "error during container init: error running hook #0: error running hook: exit status 1, "
    "stdout: , stderr: nvidia-container-cli: initialization error: nvml error: driver not "
    "loaded: unknown"
)

_NON_FILTER_KEYS = {"order", "type", "limit", "allocated_storage", "disable_bundling"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FIRST_INSTANCE_ID = 9_000_001
_SDK_DEFAULT_STORAGE_GB = 5.0  # vastai's search_offers(storage=5.0)
_HOURS_PER_MONTH = 30 * 24.0  # storage_cost is $/GB/month; Vast's month is 30 days
_BYTES_PER_GB = 1e9


def _storage_per_hour(storage_cost: float, disk_gb: float) -> float:
    return float(storage_cost) * float(disk_gb) / _HOURS_PER_MONTH


def _normalise_offer(offer: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults. An offer given only ``dph_total`` is read as priced for the SDK's default
    5 GB search (so its GPU price ``dph_base`` is that minus 5 GB of storage)."""
    out = dict(_OFFER_DEFAULTS)
    out.update(copy.deepcopy(offer))
    if "id" not in out:
        raise ValueError("every offer needs an 'id'")
    out["id"] = int(out["id"])
    out.setdefault("machine_id", out["id"] % 100000)
    out.setdefault("host_id", out["machine_id"])
    out.setdefault("gpu_name", "RTX 4090")
    out.setdefault("gpu_ram", 24564)
    default_storage = _storage_per_hour(out["storage_cost"], _SDK_DEFAULT_STORAGE_GB)
    if "dph_base" not in out:
        out["dph_base"] = max(0.0, float(out.get("dph_total", 0.3)) - default_storage)
    out["dph_base"] = float(out["dph_base"])
    out["dph_total"] = out["dph_base"] + default_storage  # as a default search prices it
    out.setdefault("reliability", out["reliability2"])
    out.setdefault("gpu_total_ram", out["gpu_ram"] * out["num_gpus"])
    out.setdefault("min_bid", round(out["dph_base"] * 0.6, 4))
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
        present.sort(key=operator.itemgetter(name), reverse=desc)
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



def _parse_env_lenient(env: Any) -> dict[str, str]:
    try:
        return _parse_env(env)
    except _BadQuery:
        return {}


# ---------------------------------------------------------------------------
# limits, faults, state
# ---------------------------------------------------------------------------

@dataclass
class Limits:
    """What the emulator enforces; the defaults are Vast's documented figures (module doc).

    ``None`` switches a limit off. ``Limits.relaxed()`` switches every one off (what
    ``VastEmulator(strict=False)`` uses); ``without_rate_limits()`` keeps the value limits;
    ``scaled(f)`` keeps every limit but multiplies the intervals, penalty and window by ``f``.
    """

    # create_instance.yaml x-input-validation
    env_value_max: int | None = 256
    env_total_max: int | None = 32768
    label_max: int | None = 256
    image_max: int | None = 1024
    args_max: int | None = 4096
    disk_min_gb: float | None = 8.0
    price_min: float | None = 0.001
    price_max: float | None = 128.0
    # label_instance.yaml x-input-validation
    update_label_max: int | None = 1024
    # change_bid.yaml x-input-validation
    bid_min: float | None = 0.001
    bid_max: float | None = 32.0
    # x-rate-limit of each endpoint's yaml (seconds between requests of one identity)
    create_interval_s: float | None = 4.5
    create_penalty_s: float | None = 12.0
    launch_interval_s: float | None = 5.0
    search_max_calls: int | None = 10
    search_period_s: float = 60.0
    list_interval_s: float | None = 1.0
    show_interval_s: float | None = 2.0
    destroy_interval_s: float | None = 3.0
    update_interval_s: float | None = 1.0
    reboot_interval_s: float | None = 1.0
    change_bid_interval_s: float | None = 5.5
    rate_limit_json: bool = False  # 429 body: plain text (default) or {"success", "error", "msg"}
    # the SDK's search_quota_exceeded (api/client.py); searches per identity per UTC day
    search_quota_per_day: int | None = None

    _VALUE_FIELDS = ("env_value_max", "env_total_max", "label_max", "image_max", "args_max",
                     "disk_min_gb", "price_min", "price_max", "update_label_max", "bid_min", "bid_max")
    _RATE_FIELDS = ("create_interval_s", "create_penalty_s", "launch_interval_s",
                    "search_max_calls", "list_interval_s", "show_interval_s",
                    "destroy_interval_s", "update_interval_s", "reboot_interval_s", "change_bid_interval_s")
    _TIME_FIELDS = ("create_interval_s", "create_penalty_s", "launch_interval_s",
                    "search_period_s", "list_interval_s", "show_interval_s",
                    "destroy_interval_s", "update_interval_s", "reboot_interval_s",
                    "change_bid_interval_s")

    @classmethod
    def relaxed(cls) -> Limits:
        """Nothing enforced: no value limits, no rate limits, no quota."""
        return cls().without_rate_limits().without_value_limits()

    def _with(self, changes: dict[str, Any]) -> Limits:
        return dataclasses.replace(self, **changes)

    def without_rate_limits(self) -> Limits:
        return self._with({f: None for f in self._RATE_FIELDS})

    def without_value_limits(self) -> Limits:
        return self._with({f: None for f in self._VALUE_FIELDS})

    def scaled(self, factor: float) -> Limits:
        """The same limits with every interval, penalty and window multiplied by ``factor``."""
        return self._with({
            f: None if getattr(self, f) is None else getattr(self, f) * factor
            for f in self._TIME_FIELDS
        })


# route -> (rate-limit bucket, interval field, penalty field); routes absent here are unlimited
_RATE_BUCKETS: dict[str, tuple[str, str, str | None]] = {
    "create": ("create", "create_interval_s", "create_penalty_s"),
    "launch": ("launch", "launch_interval_s", None),
    "list_v0": ("list", "list_interval_s", None),
    "list_v1": ("list", "list_interval_s", None),
    "show": ("show", "show_interval_s", None),
    "destroy": ("destroy", "destroy_interval_s", None),
    "update": ("update", "update_interval_s", None),
    "reboot": ("reboot", "reboot_interval_s", None),
    "change_bid": ("change_bid", "change_bid_interval_s", None),
}
_SEARCH_ROUTES = {"search", "search_new"}


@dataclass
class _Throttle:
    last: float | None = None  # monotonic time of the last request that passed
    blocked_until: float = 0.0  # penalty
    window: deque[float] = field(default_factory=deque)


@dataclass
class Faults:
    """Fault switches; change them at any time (the emulator reads them per request)."""

    rate_limit_remaining: int = 0  # next N API requests get 429 (JSON, with Retry-After)
    retry_after_s: float | None = 0.1  # Retry-After sent with those (None: no header)
    server_error_remaining: int = 0  # next N API requests get server_error_status
    server_error_status: int = 500  # 500 is not retried by the SDK, 502/503/504 are
    stuck_loading: bool = False  # new instances never leave "loading" nor start a process
    create_fails_with_contract: bool = False  # create answers an error but the contract exists
    create_fail_status: int = 500
    create_fail_includes_id: bool = False  # ... and that error body carries "new_contract": <id>
    die_next: bool = False  # the next created instance's job gets SIGKILLed mid-run
    die_delay_s: float = 0.3  # ... this long after its process started
    max_instances: int | None = None  # creates beyond this many live instances fail
    out_of_credit: bool = False  # every create is refused: insufficient_balance
    out_of_credit_status: int = 400
    # the next created instance enters this state (see VastEmulator.state_next)
    next_state: dict[str, Any] | None = None
    outbid_chance: float = 0.0  # share of interruptible instances the market outbids
    outbid_after_s: tuple[float, float] = (0.5, 3.0)  # ... this long after their job starts
    seed: int | None = None  # the draws' seed (None: a fresh one each emulator)


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
    dph_base: float
    storage_cost: float  # $/GB/month
    inet_down_cost: float  # $/GB received
    inet_up_cost: float  # $/GB sent
    api_key: str
    workdir: Path
    log_path: Path
    created_wall: float
    created_mono: float
    provision_until: float
    loading_until: float
    stuck: bool
    cancel_unavail: bool | None = None
    status: str | None = None
    intended_status: str = "running"
    status_msg: str | None = "Provisioning"
    override_status: str | None = None  # "unknown" / "offline": shown instead of status
    override_msg: str | None = None
    override_until: float | None = None
    start_error: str | None = None  # the container will not start: state "created" + this msg
    waiting: bool = False  # cancel_unavail false on an offer that cannot start: stopped, waits
    reboot_until: float | None = None
    kill_at: float | None = None  # SIGKILL the rebooting job's group at this time
    thaw_at: float | None = None  # a timed "frozen" ends
    pending: dict[str, Any] | None = None  # a state to enter after the job starts
    pending_at: float | None = None
    proc: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    proxy: CountingProxy | None = None
    bytes_in: int = 0  # counted by proxies already closed
    bytes_out: int = 0
    started_wall: float | None = None
    started_mono: float | None = None
    exited_wall: float | None = None
    exit_code: int | None = None
    destroyed_wall: float | None = None
    destroyed_mono: float | None = None
    final_status: str | None = None  # actual_status shown after destroy
    die_delay_s: float | None = None
    die_at_mono: float | None = None
    died_by_fault: bool = False
    run_count: int = 0
    is_bid: bool = False  # rented interruptible, at a bid (dph_base is the bid)
    outbid_at: float | None = None  # the market takes the GPU at this time
    outbid: bool = False
    gpu_s: float = 0.0
    storage_s: float = 0.0
    accrued_mono: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def destroyed(self) -> bool:
        return self.destroyed_mono is not None

    @property
    def shown_status(self) -> str | None:
        if self.destroyed:
            return self.final_status
        return self.override_status if self.override_status is not None else self.status

    @property
    def shown_msg(self) -> str | None:
        return self.override_msg if self.override_status is not None else self.status_msg

    @property
    def cur_state(self) -> str:
        if self.destroyed:
            return "unloaded"
        return "stopped" if self.status in ("exited", "stopped") else "running"

    def billing_class(self) -> tuple[bool, bool]:
        """(GPU billed, storage billed) right now, per guides/reference/billing.mdx."""
        status = self.shown_status
        if self.destroyed or status == "offline":
            return False, False
        return status in ("running", "frozen"), True


class _Reply(Exception):
    """Raised inside handlers to answer with a status + JSON body (or plain ``text``)."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None,
                 *, text: str | None = None, reason: str = "") -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.text = text
        self.reason = reason


def _err(status: int, error: str, msg: str) -> _Reply:
    return _Reply(status, {"success": False, "error": error, "msg": msg})


def _invalid(msg: str) -> _Reply:
    return _err(400, "invalid_args", msg)


def _no_such_instance(iid: int) -> _Reply:
    return _err(404, "no_such_instance", f"Instance {iid} not found.")


def _next_utc_midnight(now: float) -> float:
    return (int(now // 86400) + 1) * 86400.0


def _env_flag_form(env: dict[str, str]) -> str:
    """The env as Vast receives it: docker flags (create_instance.yaml: "in Docker flag format")."""
    return " ".join(f"-e {k}={v}" if _ENV_NAME.match(k) else k for k, v in env.items())


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
    ("PUT", re.compile(r"^/api/v0/instances/reboot/(\d+)/?$"), "reboot"),
    ("DELETE", re.compile(r"^/api/v0/instances/(\d+)/?$"), "destroy"),
    ("DELETE", re.compile(r"^/api/v0/instances/?$"), "destroy_bulk"),
    ("PUT", re.compile(r"^/api/v0/instances/request_logs/(\d+)/?$"), "logs"),
    ("PUT", re.compile(r"^/api/v0/instances/bid_price/(\d+)/?$"), "change_bid"),
]
_SCOPED_ROUTES = {"show", "destroy", "update", "reboot"}  # what a CONTAINER_API_KEY may do
_RESULT_PREFIX = "/_emulator/results/"
_STATES = ("unknown", "offline", "frozen", "rebooting", "created", "running")


class VastEmulator:
    """Local Vast.ai control-plane emulator; see the module docstring.

    Args:
        api_key: the account key (generated when omitted).
        offers: offer dicts (``id`` required; missing fields get defaults). Defaults to
            :data:`DEFAULT_OFFERS`.
        command: the job's argv, or a callable ``f(info) -> argv`` where ``info`` holds
            ``id, image, env, onstart, args, runtype, label, workdir``. Default
            ``[sys.executable, "-m", "gpu_job"]``.
        strict: enforce Vast's documented limits (default). ``False`` = ``Limits.relaxed()``
            and ``unloaded_s=0``.
        limits: explicit :class:`Limits` (overrides ``strict``'s choice); ``emu.limits`` may
            also be changed at any time.
        unloaded_s: how long ``show_instance`` answers a destroyed instance's row (``cur_state``
            ``"unloaded"``) before ``{"instances": null}``; default 2.0 strict, 0 relaxed.
        loading_s / provisioning_s: how long an instance stays ``loading`` / ``None``.
        kill_grace_s: SIGTERM -> SIGKILL grace on destroy, stop and reboot.
        logs_delay_s: how long a logs ``result_url`` answers 404 before the text is ready.
        offers_single_use: if True an offer is rented by a create (hidden from search and not
            creatable) until that instance is destroyed, as on Vast.
        base_env: replaces the minimal base env given to jobs (PATH, HOME, PYTHONPATH).
        inject_vast_url: put ``VAST_URL=<emulator url>`` in the job env (the SDK's
            server-url default), so an SDK in the job talks to the emulator.
        meter_bandwidth: give each job its own counting proxy (``HTTP(S)_PROXY``) and bill
            the bytes through it; False leaves the job's network alone (bandwidth bills 0).
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
        strict: bool = True,
        limits: Limits | None = None,
        unloaded_s: float | None = None,
        loading_s: float = 0.2,
        provisioning_s: float = 0.0,
        kill_grace_s: float = 2.0,
        logs_delay_s: float = 0.0,
        offers_single_use: bool = False,
        base_env: dict[str, str] | None = None,
        inject_vast_url: bool = True,
        meter_bandwidth: bool = True,
        workdir: str | os.PathLike[str] | None = None,
        faults: Faults | None = None,
        destroy_unknown_status: int = 404,
        show_unknown_status: int = 200,
    ) -> None:
        self.api_key = api_key or "emu-" + secrets.token_hex(16)
        self.command = command if command is not None else [sys.executable, "-m", "gpu_job"]
        self.strict = strict
        self.limits = limits if limits is not None else (Limits() if strict else Limits.relaxed())
        self.unloaded_s = unloaded_s if unloaded_s is not None else (2.0 if strict else 0.0)
        self.loading_s = loading_s
        self.provisioning_s = provisioning_s
        self.kill_grace_s = kill_grace_s
        self.logs_delay_s = logs_delay_s
        self.offers_single_use = offers_single_use
        self.base_env = base_env
        self.inject_vast_url = inject_vast_url
        self.meter_bandwidth = meter_bandwidth
        self.faults = faults or Faults()
        self.destroy_unknown_status = destroy_unknown_status
        self.show_unknown_status = show_unknown_status
        self.unavailable_offers: set[int] = set()  # offers that cannot start now (cancel_unavail)
        self._rng = random.Random(self.faults.seed)  # the market's draws (outbids)

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
        self._rate_limited: list[dict[str, Any]] = []
        self._throttles: dict[tuple[Any, str], _Throttle] = {}
        self._quota_used: dict[Any, int] = {}
        self._quota_reset_at: float | None = None
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
        """Stop the server, kill every job process and proxy, freeze billing."""
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
                now = time.monotonic()
                for inst in self._instances.values():
                    self._accrue(inst, now)
                self._stopped_mono = now
            procs = [(i, i.proc) for i in self._instances.values() if i.proc is not None]
        for inst, proc in procs:
            self._kill(proc, grace=min(self.kill_grace_s, 1.0))
            with self._lock:
                self._note_exit(inst, proc)
        for inst in list(self._instances.values()):
            self._close_proxy(inst)
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

    def set_state(self, instance_id: int, state: str, *, duration_s: float | None = None,
                  status_msg: str | None = None) -> None:
        """Put a live instance into a documented state (cli/reference/show-instance.mdx).

        * ``"unknown"``: no heartbeat -- the row shows it, the job keeps running underneath.
        * ``"offline"``: host disconnected -- likewise, and neither GPU nor storage bills.
        * ``"frozen"``: the job is paused (SIGSTOP); the GPU bills.
        * ``"rebooting"``: the container restarts: the job is killed (SIGTERM, SIGKILL after
          ``kill_grace_s``) and started afresh ``duration_s`` (default 0.5 s) later.
        * ``"created"``: the container failed to start (``status_msg``, default
          :data:`OCI_START_ERROR`); only before its job started.
        * ``"running"``: ends unknown/offline/frozen.

        ``duration_s`` ends unknown/offline/frozen by itself after that long.
        """
        with self._lock:
            self._apply_state(self._live(int(instance_id)), state, duration_s, status_msg)

    def state_next(self, state: str, *, after_s: float = 0.0, duration_s: float | None = None,
                   status_msg: str | None = None) -> None:
        """The next created instance enters ``state`` (as :meth:`set_state`) ``after_s`` seconds
        after its job starts; ``"created"`` instead of starting it."""
        if state not in _STATES:
            raise ValueError(f"unknown state {state!r}; one of {_STATES}")
        with self._lock:
            self.faults.next_state = {"state": state, "after_s": after_s,
                                      "duration_s": duration_s, "status_msg": status_msg}

    def fail_container_start(self, instance_id: int | None = None, *,
                             status_msg: str = OCI_START_ERROR) -> None:
        """The container of ``instance_id`` (or of the next created instance) never starts:
        ``actual_status`` ``"created"`` with ``status_msg``; storage bills until destroyed."""
        if instance_id is None:
            self.state_next("created", status_msg=status_msg)
        else:
            self.set_state(instance_id, "created", status_msg=status_msg)

    def outbid(self, instance_id: int) -> None:
        """The market takes an interruptible instance's GPU now (module doc: Interruptible)."""
        with self._lock:
            inst = self._instances[int(instance_id)]
            if not inst.is_bid:
                raise ValueError(f"instance {instance_id} is on-demand: only interruptible ones are outbid")
            self._outbid(inst)

    def set_search_quota_reset(self, at: float) -> None:
        """When (unix time) the daily search quota resets next; afterwards: each UTC midnight."""
        with self._lock:
            self._quota_reset_at = float(at)

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

    @property
    def out_of_credit(self) -> bool:
        return self.faults.out_of_credit

    @out_of_credit.setter
    def out_of_credit(self, value: bool) -> None:
        self.faults.out_of_credit = value

    # -- inspection --------------------------------------------------------

    def set_offers(self, offers: Sequence[dict[str, Any]]) -> None:
        normalised = [_normalise_offer(o) for o in offers]
        with self._lock:
            self._offers = {o["id"]: o for o in normalised}

    @property
    def offers(self) -> list[dict[str, Any]]:
        """The offers as stored (``dph_total`` priced for the SDK's default 5 GB search)."""
        with self._lock:
            return copy.deepcopy(list(self._offers.values()))

    def _now_mono(self) -> float:
        return self._stopped_mono if self._stopped_mono is not None else time.monotonic()

    def _end_mono(self, inst: _Instance) -> float:
        if inst.destroyed_mono is not None:
            return inst.destroyed_mono
        return self._now_mono()

    def billed_seconds(self, instance_id: int) -> float:
        """Seconds the instance existed: from create until destroy (or stop() of the emulator)."""
        with self._lock:
            inst = self._instances[int(instance_id)]
            return max(0.0, self._end_mono(inst) - inst.created_mono)

    def billing(self, instance_id: int) -> dict[str, float]:
        """What Vast would bill for one instance so far (guides/reference/billing.mdx)."""
        with self._lock:
            return self._billing(self._instances[int(instance_id)])

    def cost(self, instance_id: int) -> float:
        return self.billing(instance_id)["total"]

    def total_cost(self) -> float:
        with self._lock:
            return sum(self._billing(i)["total"] for i in self._instances.values())

    def _bytes(self, inst: _Instance) -> tuple[int, int]:
        proxy = inst.proxy
        if proxy is None:
            return inst.bytes_in, inst.bytes_out
        return inst.bytes_in + proxy.bytes_in, inst.bytes_out + proxy.bytes_out

    def _billing(self, inst: _Instance) -> dict[str, float]:
        self._accrue(inst)
        bytes_in, bytes_out = self._bytes(inst)
        gpu_cost = inst.gpu_s * inst.dph_base / 3600.0
        storage_cost = inst.storage_s * _storage_per_hour(inst.storage_cost, inst.disk) / 3600.0
        bandwidth_cost = (bytes_in * inst.inet_down_cost + bytes_out * inst.inet_up_cost) / _BYTES_PER_GB
        return {
            "existed_s": max(0.0, self._end_mono(inst) - inst.created_mono),
            "gpu_s": inst.gpu_s, "storage_s": inst.storage_s,
            "bytes_in": bytes_in, "bytes_out": bytes_out,
            "gpu_cost": gpu_cost, "storage_cost": storage_cost, "bandwidth_cost": bandwidth_cost,
            "total": gpu_cost + storage_cost + bandwidth_cost,
        }

    def _snapshot(self, inst: _Instance) -> dict[str, Any]:
        bill = self._billing(inst)
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
            "cancel_unavail": inst.cancel_unavail,
            "runtype": inst.runtype,
            "dph_base": inst.dph_base,
            "dph_total": inst.dph_base + _storage_per_hour(inst.storage_cost, inst.disk),
            "actual_status": inst.shown_status,
            "intended_status": inst.intended_status,
            "cur_state": inst.cur_state,
            "status_msg": inst.shown_msg,
            "exit_code": inst.exit_code,
            "waiting": inst.waiting,
            "pid": inst.pid,
            "run_count": inst.run_count,
            "proxy_url": inst.proxy.url if inst.proxy is not None else None,
            "created_at": inst.created_wall,
            "started_at": inst.started_wall,
            "exited_at": inst.exited_wall,
            "destroyed_at": inst.destroyed_wall,
            "destroyed": inst.destroyed,
            "stuck_loading": inst.stuck,
            "died_by_fault": inst.died_by_fault,
            "is_bid": inst.is_bid,
            "outbid": inst.outbid,
            "billed_seconds": bill["existed_s"],
            "cost": bill["total"],
            "billing": bill,
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
        """Every HTTP request: method, path (no query string), route, status, time."""
        with self._lock:
            return copy.deepcopy(self._request_log)

    @property
    def rate_limited(self) -> list[dict[str, Any]]:
        """Every 429 answered: route, method, path, time, monotonic, identity, reason
        (``"interval"``, ``"penalty"``, ``"window"``, ``"quota"`` or ``"injected"``)."""
        with self._lock:
            return copy.deepcopy(self._rate_limited)

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

    # -- billing clock -----------------------------------------------------

    def _accrue(self, inst: _Instance, now: float | None = None) -> None:
        """Bill the time since the last accrual at the instance's current rate (lock held).

        Called before every change of what the instance is billed for."""
        now = self._now_mono() if now is None else now
        elapsed = now - inst.accrued_mono
        if elapsed > 0:
            gpu, storage = inst.billing_class()
            if gpu:
                inst.gpu_s += elapsed
            if storage:
                inst.storage_s += elapsed
            inst.accrued_mono = now

    def _set_status(self, inst: _Instance, status: str | None, msg: str | None) -> None:
        self._accrue(inst)
        inst.status = status
        inst.status_msg = msg

    def _set_override(self, inst: _Instance, status: str | None, msg: str | None = None,
                      until: float | None = None) -> None:
        self._accrue(inst)
        inst.override_status, inst.override_msg, inst.override_until = status, msg, until

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
            if inst.override_until is not None and now >= inst.override_until:
                self._set_override(inst, None)
            if inst.thaw_at is not None and now >= inst.thaw_at:
                self._apply_state(inst, "running", None, None)
            if inst.status is None and now >= inst.provision_until:
                self._set_status(inst, "loading", f"Pulling image {inst.image}")
            if inst.status == "loading" and not inst.stuck and now >= inst.loading_until:
                if inst.start_error is not None:
                    self._set_status(inst, "created", inst.start_error)
                else:
                    self._start_process(inst)
            if inst.status == "rebooting":
                self._tick_reboot(inst, now)
            if inst.outbid_at is not None and now >= inst.outbid_at and inst.status == "running":
                self._outbid(inst)
            if inst.outbid:
                self._tick_stopping(inst, now)
            if inst.proc is not None and inst.status in ("running", "frozen"):
                if inst.die_at_mono is not None and now >= inst.die_at_mono and not inst.died_by_fault:
                    inst.died_by_fault = True
                    self._signal_group(inst.proc, signal.SIGKILL)
                if inst.pending is not None and inst.pending_at is not None and now >= inst.pending_at:
                    pending, inst.pending = inst.pending, None
                    self._apply_state(inst, pending["state"], pending["duration_s"], pending["status_msg"])
                if inst.proc is not None and inst.proc.poll() is not None:
                    self._note_exit(inst, inst.proc)

    def _tick_stopping(self, inst: _Instance, now: float) -> None:
        """A job told to stop: SIGKILL once its grace is over, reaped once it is gone."""
        if inst.proc is not None:
            if inst.kill_at is not None and now >= inst.kill_at:
                self._signal_group(inst.proc, signal.SIGKILL)
                inst.kill_at = None
            if inst.proc.poll() is not None:
                self._note_exit(inst, inst.proc)
                inst.kill_at = None  # gone before its grace ran out: the kill must not hit a restarted job

    def _tick_reboot(self, inst: _Instance, now: float) -> None:
        self._tick_stopping(inst, now)
        if inst.proc is None and inst.reboot_until is not None and now >= inst.reboot_until:
            inst.reboot_until = None
            self._start_process(inst)

    def _outbid(self, inst: _Instance) -> None:
        """Stopped by the market (lock held; never blocks): the job is told to stop, and every
        state field reads "stopped"; storage goes on billing until destroy."""
        if inst.outbid or inst.destroyed:
            return
        inst.outbid, inst.outbid_at, inst.pending = True, None, None
        self._set_override(inst, None)
        if inst.proc is not None:
            self._signal_group(inst.proc, signal.SIGTERM)
            self._signal_group(inst.proc, signal.SIGCONT)
            inst.kill_at = time.monotonic() + self.kill_grace_s
        inst.intended_status = "stopped"
        self._set_status(inst, "stopped", "Instance stopped: outbid by a higher priority rental")

    def _apply_state(self, inst: _Instance, state: str, duration_s: float | None,
                     status_msg: str | None) -> None:
        """Enter a fault state (lock held; never blocks)."""
        now = time.monotonic()
        until = None if duration_s is None else now + duration_s
        if state == "unknown":
            self._set_override(inst, "unknown", status_msg or "No recent heartbeat from the host", until)
        elif state == "offline":
            self._set_override(
                inst, "offline", status_msg or "Host machine disconnected from Vast servers", until)
        elif state == "frozen":
            if inst.status != "running" or inst.proc is None:
                raise ValueError(f"instance {inst.id} is {inst.status!r}; only a running one can freeze")
            self._signal_group(inst.proc, signal.SIGSTOP)
            self._set_status(inst, "frozen", status_msg or "Container paused (frozen), memory preserved")
            inst.thaw_at = until
        elif state == "rebooting":
            self._set_override(inst, None)
            inst.thaw_at = None
            if inst.proc is not None:
                self._signal_group(inst.proc, signal.SIGTERM)
                self._signal_group(inst.proc, signal.SIGCONT)
                inst.kill_at = now + self.kill_grace_s
            inst.reboot_until = now + (0.5 if duration_s is None else duration_s)
            self._set_status(inst, "rebooting", status_msg or "Rebooting: docker stop/start")
        elif state == "created":
            if inst.run_count:
                raise ValueError(f"instance {inst.id} already started its container")
            inst.start_error = status_msg or OCI_START_ERROR
            if inst.status == "created":
                self._set_status(inst, "created", inst.start_error)
        elif state == "running":
            self._set_override(inst, None)
            inst.thaw_at = None
            if inst.status == "frozen":
                if inst.proc is not None:
                    self._signal_group(inst.proc, signal.SIGCONT)
                self._set_status(inst, "running", status_msg or "Container running")
        else:
            raise ValueError(f"unknown state {state!r}; one of {_STATES}")

    def _start_process(self, inst: _Instance) -> None:
        info = {
            "id": inst.id, "image": inst.image, "env": dict(inst.env), "onstart": inst.onstart,
            "args": inst.args, "runtype": inst.runtype, "label": inst.label,
            "workdir": str(inst.workdir),
        }
        argv = list(self.command(info) if callable(self.command) else self.command)
        if self.meter_bandwidth and inst.proxy is None:
            inst.proxy = CountingProxy(name=f"instance-{inst.id}").start()
        env = self._child_env(inst)
        inst.run_count += 1
        now_wall, now_mono = time.time(), time.monotonic()
        self._set_status(inst, "running", "Container running")
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
                self._set_status(inst, "exited", f"Error starting container: {exc}")
                inst.exit_code = 127
                inst.exited_wall = now_wall
                return
        inst.proc = proc
        inst.pid = proc.pid
        if inst.die_delay_s is not None:
            inst.die_at_mono = now_mono + inst.die_delay_s
        chance = self.faults.outbid_chance
        if inst.is_bid and chance > 0 and self._rng.random() < chance:
            low, high = self.faults.outbid_after_s
            inst.outbid_at = now_mono + self._rng.uniform(low, high)
        if inst.pending is not None and inst.pending_at is None:
            inst.pending_at = now_mono + float(inst.pending.get("after_s") or 0.0)
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
        if inst.proxy is not None:
            # Every byte the job moves goes through its meter: local endpoints too.
            for name in ("NO_PROXY", "no_proxy"):
                env.pop(name, None)
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
                env[name] = inst.proxy.url
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
        if not inst.destroyed and inst.status in ("running", "frozen"):
            self._set_status(inst, "exited", f"Container exited with code {inst.exit_code}")

    def _close_proxy(self, inst: _Instance) -> None:
        with self._lock:
            proxy, inst.proxy = inst.proxy, None
        if proxy is None:
            return
        proxy.close()
        with self._lock:
            inst.bytes_in += proxy.bytes_in
            inst.bytes_out += proxy.bytes_out

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
            self._signal_group(proc, signal.SIGCONT)  # a frozen (SIGSTOPped) job must see it
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
        status: int = 500
        body: dict[str, Any] | str = {}
        headers: dict[str, str] = {}
        route: str | None = None
        try:
            if method == "GET" and path.startswith(_RESULT_PREFIX):
                status, body = self._serve_result(path[len(_RESULT_PREFIX):])
            else:
                status, body, headers, route = self._dispatch(req, method, path, parts.query)
        except Exception as exc:  # a bug in the emulator: answer 500, keep serving
            logger.exception("vast emulator: %s %s", method, path)
            status, body, headers = 500, {"success": False, "error": "emulator_bug", "msg": str(exc)}, {}
        with self._lock:
            self._request_log.append(
                {"time": time.time(), "monotonic": time.monotonic(), "method": method,
                 "path": path, "route": route, "status": status}
            )
        text = isinstance(body, str)
        payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        try:
            req.send_response(status)
            req.send_header("Content-Type", "text/plain; charset=utf-8" if text else "application/json")
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
    ) -> tuple[int, dict[str, Any] | str, dict[str, str], str | None]:
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        qs = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        route: str | None = None
        groups: tuple[str, ...] = ()
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
        auth = req.headers.get("Authorization") or ""
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        identity = (bearer, qs.get("api_key", ""), req.client_address[0])
        scope: int | None = None
        out: dict[str, Any] | str
        try:
            with self._lock:
                self._tick()
                self._inject_faults()
                if route is not None:
                    self._throttle(route, identity)
            scope = self._authenticate(bearer or qs.get("api_key", ""))
            if route is None:
                raise _err(404, "not_found", f"no such endpoint: {method} {path}")
            if scope is not None and not (route in _SCOPED_ROUTES and int(groups[0]) == scope):
                raise _err(403, "forbidden", "this key is scoped to a single instance")
            if not isinstance(body, dict):
                raise _invalid("request body must be a JSON object")
            handler = getattr(self, f"_route_{route}")
            result = handler(*[int(g) for g in groups], body=body, qs=qs)
            status, out, headers = (*result, {}) if isinstance(result, tuple) else (200, result, {})
        except _Reply as reply:
            status, headers = reply.status, reply.headers
            out = reply.text if reply.text is not None else reply.body
            if status == 429:
                self._note_429(route, method, path, identity, reply.reason or "injected")
        except _BadQuery as exc:
            status, out, headers = 400, {"success": False, "error": "invalid_args", "msg": str(exc)}, {}
        self._record(route, groups, body if isinstance(body, dict) else {}, status, scope, out)
        return status, out, headers, route

    def _identity_label(self, identity: tuple[str, str, str]) -> str:
        key = identity[0] or identity[1]
        if key and secrets.compare_digest(key, self.api_key):
            return "account"
        iid = self._keys.get(key) if key else None
        return f"instance:{iid}" if iid is not None else "unknown"

    def _note_429(self, route: str | None, method: str, path: str,
                  identity: tuple[str, str, str], reason: str) -> None:
        with self._lock:
            self._rate_limited.append({
                "time": time.time(), "monotonic": time.monotonic(), "route": route,
                "method": method, "path": path, "identity": self._identity_label(identity),
                "reason": reason,
            })

    def _too_frequent(self, text: str, reason: str) -> _Reply:
        if self.limits.rate_limit_json:
            return _Reply(429, {"success": False, "error": "rate_limited", "msg": text}, reason=reason)
        return _Reply(429, {}, text=text, reason=reason)

    def _throttle(self, route: str, identity: tuple[str, str, str]) -> None:
        """Apply the documented per-endpoint, per-identity limits (lock held)."""
        lim = self.limits
        now = time.monotonic()
        if route in _SEARCH_ROUTES:
            self._throttle_search(identity, now)
            return
        if route not in _RATE_BUCKETS:
            return
        bucket, interval_field, penalty_field = _RATE_BUCKETS[route]
        interval = getattr(lim, interval_field)
        if interval is None:
            return
        penalty = getattr(lim, penalty_field) if penalty_field else None
        th = self._throttles.setdefault((identity, bucket), _Throttle())
        message = f"API requests too frequent: endpoint threshold={interval:g}"
        if now < th.blocked_until:
            raise self._too_frequent(message, "penalty")
        if th.last is not None and now - th.last < interval:
            if penalty:
                th.blocked_until = now + penalty
            raise self._too_frequent(message, "interval")
        th.last = now

    def _throttle_search(self, identity: tuple[str, str, str], now: float) -> None:
        lim = self.limits
        if lim.search_max_calls is not None:
            th = self._throttles.setdefault((identity, "search"), _Throttle())
            while th.window and now - th.window[0] >= lim.search_period_s:
                th.window.popleft()
            if len(th.window) >= lim.search_max_calls:
                raise self._too_frequent("API requests too frequent", "window")
            th.window.append(now)
        quota = lim.search_quota_per_day
        if quota is None:
            return
        wall = time.time()
        if self._quota_reset_at is None:
            self._quota_reset_at = _next_utc_midnight(wall)
        elif wall >= self._quota_reset_at:
            self._quota_used.clear()
            self._quota_reset_at = _next_utc_midnight(wall)
        used = self._quota_used.get(identity, 0)
        if used >= quota:
            raise _Reply(
                429,
                {"success": False, "error": "search_quota_exceeded",
                 "msg": f"Daily search quota of {quota} searches exceeded."},
                {"X-RateLimit-Reset": str(int(self._quota_reset_at))},
                reason="quota",
            )
        self._quota_used[identity] = used + 1

    def _inject_faults(self) -> None:
        f = self.faults
        if f.rate_limit_remaining > 0:
            f.rate_limit_remaining -= 1
            headers = {} if f.retry_after_s is None else {"Retry-After": f"{f.retry_after_s:g}"}
            raise _Reply(
                429,
                {"success": False, "error": "rate_limited",
                 "msg": "API requests too frequent endpoint threshold=3.0"},
                headers, reason="injected",
            )
        if f.server_error_remaining > 0:
            f.server_error_remaining -= 1
            raise _err(f.server_error_status, "server_error", "injected server error")

    def _authenticate(self, key: str) -> int | None:
        """Return None for the account key, the instance id for a scoped key; else 401."""
        if key and secrets.compare_digest(key, self.api_key):
            return None
        with self._lock:
            iid = self._keys.get(key) if key else None
        if iid is not None:
            return iid
        raise _err(401, "invalid_api_key", "Invalid or missing API key")

    def _record(self, route: str | None, groups: Sequence[str], body: dict[str, Any],
                status: int, scope: int | None, out: dict[str, Any] | str) -> None:
        now_wall, now_mono = time.time(), time.monotonic()
        error = out.get("error") if isinstance(out, dict) else ("rate_limited" if status == 429 else None)
        with self._lock:
            if route in ("create", "launch"):
                env = body.get("env")
                created = self._tls.created_iid
                self._create_requests.append({
                    "time": now_wall, "monotonic": now_mono,
                    "offer_id": int(groups[0]) if groups else (
                        self._instances[created].offer["id"] if created else None),
                    "label": body.get("label"), "image": body.get("image"),
                    "disk": body.get("disk"), "cancel_unavail": body.get("cancel_unavail"),
                    "price": body.get("price"),
                    "env_keys": sorted(_parse_env_lenient(env)),
                    "status": status, "error": error,
                    "instance_id": created,  # set whenever a contract was made
                })
            elif route == "destroy":
                self._destroy_requests.append({
                    "time": now_wall, "monotonic": now_mono, "instance_id": int(groups[0]),
                    "status": status, "scoped": scope is not None,
                })

    # -- routes ------------------------------------------------------------

    @staticmethod
    def _priced(offer: dict[str, Any], storage_gb: float) -> dict[str, Any]:
        """An offer as a search for ``storage_gb`` of disk shows it."""
        row = copy.deepcopy(offer)
        disk_h = _storage_per_hour(offer["storage_cost"], storage_gb)
        total = offer["dph_base"] + disk_h
        row["dph_total"] = total
        row["storage_total_cost"] = disk_h
        row["search"] = {"gpuCostPerHour": offer["dph_base"], "diskHour": disk_h, "totalHour": total,
                         "discountTotalHour": 0, "discountedTotalPerHour": total}
        row["dlperf_per_dphtotal"] = row["dlperf"] / total if total else 0
        row["flops_per_dphtotal"] = row["total_flops"] / total if total else 0
        return row

    def _search(self, q: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            storage = float(q.get("allocated_storage") or _SDK_DEFAULT_STORAGE_GB)
        except (TypeError, ValueError):
            raise _BadQuery("allocated_storage must be a number") from None
        with self._lock:
            priced = [self._priced(o, storage) for o in self._offers.values()]
        rows = [o for o in priced if _matches(o, q)]
        if q.get("type") == "bid":  # interruptible: the offers that take bids
            rows = [o for o in rows if o.get("min_bid") is not None]
        rows = _sort_rows(rows, q.get("order") or [["score", "desc"]])
        limit = q.get("limit")
        if limit:
            rows = rows[: int(limit)]
        return rows

    def _route_search(self, *, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {"offers": self._search(body)}

    def _route_search_new(self, *, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {"offers": self._search(body.get("q") or {})}

    def _route_create(self, offer_id: int, *, body: dict[str, Any], **_: Any) -> tuple[int, dict[str, Any]]:
        return self._create(offer_id, body)

    def _route_launch(self, *, body: dict[str, Any], **_: Any) -> tuple[int, dict[str, Any]]:
        self._validate_create(body)
        found = self._search(body.get("q") or {})
        if not found:
            raise _err(404, "no_such_ask", "No offers found matching the query.")
        return self._create(found[0]["id"], body)

    def _validate_create(self, body: dict[str, Any]) -> None:
        """create_instance.yaml x-input-validation (strict mode); 400 invalid_args."""
        lim = self.limits
        source = "(create_instance x-input-validation)"
        try:
            env = _parse_env(body.get("env"))
        except _BadQuery as exc:
            raise _invalid(str(exc)) from None
        if lim.env_value_max is not None:
            for key, value in env.items():
                if _ENV_NAME.match(key) and len(value) > lim.env_value_max:
                    raise _invalid(f"env {key}: value is {len(value)} characters; the limit is "
                                   f"{lim.env_value_max} per value {source}")
        flags = _env_flag_form(env)
        if lim.env_total_max is not None and len(flags) > lim.env_total_max:
            raise _invalid(f"env: {len(flags)} characters in all (as docker flags); the limit is "
                           f"{lim.env_total_max} {source}")
        for name, limit in (("label", lim.label_max), ("image", lim.image_max)):
            text = body.get(name)
            if limit is not None and text is not None and len(str(text)) > limit:
                raise _invalid(f"{name}: {len(str(text))} characters; the limit is {limit} {source}")
        if lim.args_max is not None:
            args = body.get("args")
            args_text = " ".join(map(str, args)) if isinstance(args, list) else str(args or "")
            combined = len(args_text) + len(str(body.get("args_str") or "")) + len(str(body.get("onstart") or ""))
            if combined > lim.args_max:
                raise _invalid(f"args + args_str + onstart: {combined} characters combined; the limit "
                               f"is {lim.args_max} {source}")
        disk = body.get("disk")
        if lim.disk_min_gb is not None and isinstance(disk, (int, float)) and disk < lim.disk_min_gb:
            raise _invalid(f"disk: {disk:g} GB is below the minimum of {lim.disk_min_gb:g} GB {source}")
        price = body.get("price")
        if price is not None and isinstance(price, (int, float)):
            low, high = lim.price_min, lim.price_max
            if (low is not None and price < low) or (high is not None and price > high):
                raise _invalid(f"price: {price:g} $/h is outside [{low:g}, {high:g}] {source}")

    def _create(self, offer_id: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self._validate_create(body)
        image = body.get("image")
        if not image and not body.get("template_hash_id"):
            raise _invalid("image or template_hash_id is required")
        env_all = _parse_env(body.get("env"))
        env = {k: v for k, v in env_all.items() if _ENV_NAME.match(k)}
        docker_opts = {k: v for k, v in env_all.items() if not _ENV_NAME.match(k)}
        try:
            raw_disk: Any = body.get("disk")
            disk = float(10 if raw_disk is None else raw_disk)
        except (TypeError, ValueError):
            raise _invalid("disk must be a number") from None
        target = body.get("target_state") or "running"
        cancel_unavail = body.get("cancel_unavail")
        if cancel_unavail is None:  # documented default: true for on-demand with target running
            cancel_unavail = body.get("price") is None and target == "running"
        with self._lock:
            offer = self._offers.get(offer_id)
            if offer is None or (self.offers_single_use and offer.get("rented")):
                raise _err(404, "invalid_args",
                           f"no_such_ask Instance type by id {offer_id} is not available.")
            if disk > float(offer["disk_space"]):
                raise _invalid(f"disk {disk:g} > {float(offer['disk_space']):g}")
            if self.faults.out_of_credit:
                raise _err(self.faults.out_of_credit_status, "insufficient_balance",
                           "Insufficient credit: your account balance is too low to rent this "
                           "instance. Add credit to continue.")
            live = sum(1 for i in self._instances.values() if not i.destroyed)
            if self.faults.max_instances is not None and live >= self.faults.max_instances:
                raise _err(400, "max_instances_exceeded",
                           f"You may have at most {self.faults.max_instances} instances.")
            unavailable = offer_id in self.unavailable_offers
            if unavailable and cancel_unavail:
                raise _Reply(410, {"success": False, "error": "no_such_ask",
                                   "msg": f"no_such_ask Instance type {offer_id} is no longer available.",
                                   "ask_id": offer_id})
            inst = self._new_instance(offer, body, image, env, docker_opts, disk, bool(cancel_unavail))
            price = body.get("price")
            if isinstance(price, (int, float)) and not isinstance(price, bool):
                inst.is_bid, inst.dph_base = True, float(price)  # interruptible: the GPU bills at the bid
                min_bid = offer.get("min_bid")
                if min_bid is None or float(price) < float(min_bid):
                    inst.intended_status = "stopped"
                    self._set_status(inst, "stopped", "Bid below the machine's minimum: stopped until it wins")
                    self._tls.created_iid = inst.id
                    return 400, {"success": False, "error": "invalid_price", "new_contract": inst.id,
                                 "msg": f"Your bid ${float(price):.4f}/h is below this machine's minimum bid"
                                        + (f" ${float(min_bid):.4f}/h" if min_bid is not None else "")
                                        + "; the instance was created stopped."}
            if unavailable:
                inst.waiting = True
                self._set_status(inst, "stopped", "Waiting for the machine's GPUs to become free: the "
                                 "instance is stopped until they are (cancel_unavail=false)")
            elif target == "stopped":
                inst.intended_status = "stopped"
                self._set_status(inst, "stopped", "Created stopped (target_state=stopped)")
            self._tick()
            logger.debug("created instance %s from offer %s label=%r env keys=%s",
                         inst.id, offer_id, inst.label, sorted(env))
            self._tls.created_iid = inst.id
            if self.faults.create_fails_with_contract:
                failure: dict[str, Any] = {
                    "success": False, "error": "internal_error",
                    "msg": "Internal server error while creating the instance.",
                }
                if self.faults.create_fail_includes_id:
                    failure["new_contract"] = inst.id
                return self.faults.create_fail_status, failure
            return 200, {"success": True, "new_contract": inst.id}

    def _new_instance(self, offer: dict[str, Any], body: dict[str, Any], image: str | None,
                      env: dict[str, str], docker_opts: dict[str, str], disk: float,
                      cancel_unavail: bool) -> _Instance:
        """Make and register a contract (lock held)."""
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
            dph_base=float(offer["dph_base"]), storage_cost=float(offer["storage_cost"]),
            inet_down_cost=float(offer["inet_down_cost"]), inet_up_cost=float(offer["inet_up_cost"]),
            api_key="inst-" + secrets.token_hex(16),
            workdir=workdir, log_path=workdir / "container.log",
            created_wall=now_wall, created_mono=now_mono, accrued_mono=now_mono,
            provision_until=now_mono + self.provisioning_s,
            loading_until=now_mono + self.provisioning_s + self.loading_s,
            stuck=self.faults.stuck_loading, cancel_unavail=cancel_unavail,
            extra={"price": body.get("price")},
        )
        if self.faults.die_next:
            self.faults.die_next = False
            inst.die_delay_s = self.faults.die_delay_s
        pending, self.faults.next_state = self.faults.next_state, None
        if pending is not None and pending["state"] == "created":
            inst.start_error = pending["status_msg"] or OCI_START_ERROR
        elif pending is not None:
            inst.pending = pending
        self._instances[iid] = inst
        self._keys[inst.api_key] = iid
        if self.offers_single_use:
            offer["rented"], offer["rentable"] = True, False
        return inst

    def _row(self, inst: _Instance) -> dict[str, Any]:
        """An instance as show_instance(s) answers it: only fields show_instance.yaml documents."""
        o = inst.offer
        status = inst.shown_status
        started = inst.started_wall
        end = inst.exited_wall if inst.status in ("exited", "stopped") else None
        disk_h = _storage_per_hour(inst.storage_cost, inst.disk)
        gpu_h = inst.dph_base if status in ("running", "frozen") else 0.0
        return {
            "id": inst.id,
            "label": inst.label,
            "actual_status": status,
            "intended_status": inst.intended_status,
            "cur_state": inst.cur_state,
            "next_state": inst.cur_state,
            "status_msg": inst.shown_msg,
            "image_uuid": inst.image,
            "image_args": inst.args or [],
            "image_runtype": inst.runtype,
            "extra_env": [[k, v] for k, v in inst.env.items()],
            "onstart": inst.onstart,
            "jupyter_token": None,
            "template_id": None,
            "template_hash_id": None,
            "template_name": None,
            "disk_space": inst.disk,
            "dph_base": inst.dph_base,
            "dph_total": inst.dph_base + disk_h,
            "storage_cost": inst.storage_cost,
            "storage_total_cost": disk_h,
            "search": {"gpuCostPerHour": inst.dph_base, "diskHour": disk_h,
                       "totalHour": inst.dph_base + disk_h, "discountTotalHour": 0,
                       "discountedTotalPerHour": inst.dph_base + disk_h},
            "instance": {"gpuCostPerHour": gpu_h, "diskHour": disk_h, "totalHour": gpu_h + disk_h,
                         "discountTotalHour": 0, "discountedTotalPerHour": gpu_h + disk_h},
            "min_bid": o.get("min_bid"),
            "is_bid": inst.is_bid,
            "gpu_name": o.get("gpu_name"),
            "num_gpus": o.get("num_gpus"),
            "gpu_ram": o.get("gpu_ram"),
            "gpu_totalram": o.get("gpu_total_ram"),
            "cpu_cores": o.get("cpu_cores"),
            "cpu_cores_effective": o.get("cpu_cores_effective"),
            "cpu_ram": o.get("cpu_ram"),
            "dlperf": o.get("dlperf"),
            "total_flops": o.get("total_flops"),
            "score": o.get("score"),
            "reliability2": o.get("reliability2"),
            "verification": o.get("verification"),
            "external": o.get("external"),
            "hosting_type": o.get("hosting_type"),
            "static_ip": o.get("static_ip"),
            "direct_port_count": o.get("direct_port_count"),
            "geolocation": o.get("geolocation"),
            "machine_id": o.get("machine_id"),
            "host_id": o.get("host_id"),
            "bundle_id": o.get("id"),
            "start_date": inst.created_wall,
            "end_date": None,
            "duration": o.get("duration"),
            "uptime_mins": ((end or time.time()) - started) / 60.0 if started else None,
            "public_ipaddr": "127.0.0.1",
            "local_ipaddrs": "127.0.0.1",
            "ssh_host": "127.0.0.1",
            "ssh_port": None,
            "ports": {},
            "time_remaining": "",
        }

    def _live(self, iid: int) -> _Instance:
        inst = self._instances.get(iid)
        if inst is None or inst.destroyed:
            raise _no_such_instance(iid)
        return inst

    def _route_show(self, iid: int, **_: Any) -> dict[str, Any]:
        with self._lock:
            inst = self._instances.get(iid)
            gone = inst is None or (
                inst.destroyed and time.monotonic() - inst.destroyed_mono >= self.unloaded_s)  # type: ignore[operator]
            if gone:
                if self.show_unknown_status != 200:
                    raise _err(self.show_unknown_status, "no_such_instance",
                               f"Instance {iid} not found.")
                return {"instances": None}
            return {"instances": self._row(inst)}  # type: ignore[arg-type]

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
        label_max = self.limits.update_label_max
        if "label" in body and label_max is not None and len(str(body["label"] or "")) > label_max:
            raise _invalid(f"label: {len(str(body['label']))} characters; the limit is {label_max} "
                           "(label_instance x-input-validation)")
        with self._lock:
            inst = self._live(iid)
            if "label" in body:
                inst.label = body["label"]
            state = body.get("state")
            if state == "stopped":
                inst.intended_status = "stopped"
                to_kill = inst.proc
                self._set_status(inst, "stopped", "Stopped by user")
            elif state == "running" and inst.status in ("stopped", "exited"):
                inst.intended_status = "running"
                if not inst.waiting or inst.offer["id"] not in self.unavailable_offers:
                    inst.waiting = False
                    inst.proc = None
                    inst.loading_until = time.monotonic() + self.loading_s
                    self._set_status(inst, "loading", f"Pulling image {inst.image}")
        if to_kill is not None:
            self._kill(to_kill)
            with self._lock:
                if inst.proc is to_kill:
                    rc = to_kill.poll()
                    inst.proc = None
                    inst.exit_code = None if rc is None else _exit_code(rc)
                    inst.exited_wall = time.time()
        return {"success": True}

    def _route_change_bid(self, iid: int, *, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        price = body.get("price")
        if not isinstance(price, (int, float)) or isinstance(price, bool):
            raise _invalid("Please set a bid price >= 0.001.")
        low, high = self.limits.bid_min, self.limits.bid_max
        if (low is not None and price < low) or (high is not None and price > high):
            raise _invalid(f"price: {price:g} $/h is outside [{low:g}, {high:g}] (change_bid x-input-validation)")
        with self._lock:
            inst = self._live(iid)
            if not inst.is_bid:
                raise _invalid(f"instance {iid} is not an interruptible instance")
            self._accrue(inst)
            inst.dph_base = float(price)
        return {"success": True}

    def _route_reboot(self, iid: int, **_: Any) -> dict[str, Any]:
        with self._lock:
            inst = self._live(iid)
            if inst.status in ("running", "frozen", "exited"):
                self._apply_state(inst, "rebooting", None, None)
        return {"success": True}

    def _destroy(self, iid: int) -> None:
        with self._lock:
            inst = self._live(iid)
            self._accrue(inst)
            running = inst.proc is not None and inst.proc.poll() is None
            inst.final_status = "exited" if running else inst.shown_status
            inst.destroyed_wall, inst.destroyed_mono = time.time(), time.monotonic()
            inst.status_msg = "Destroyed"
            inst.override_status = inst.override_msg = None
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
        self._close_proxy(inst)
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
