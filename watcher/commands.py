"""The CLI's commands; each takes the parsed args and the settings and returns an exit code."""

from __future__ import annotations

import dataclasses
import sys
import time

from handlers import jobs
from handlers.created import ObjectEvent, on_object_created
from vastdrop.compose import build_deps
from vastdrop.errors import NotFoundError
from vastdrop.logs import printable
from vastdrop.settings import ControlSettings
from vastdrop.states import JobState
from watcher import driver
from watcher.mediaprobe import probe_for_segments
from watcher.status import render


def _deps(settings: ControlSettings):
    """The control plane's dependencies, with the watcher's media probe (PyAV) for segments."""
    return dataclasses.replace(build_deps(settings), probe=probe_for_segments)


def run(args, settings: ControlSettings) -> int:
    deps = _deps(settings)
    server = _start_server(deps, settings) if args.serve else None
    try:
        if args.once:
            ok = driver.run_once(deps, settings.tick_s)
            print(render(deps.ledger.list()))
            return 0 if ok else 1
        print(f"watching {deps.inputs.url(deps.inputs.prefix)} (Ctrl-C to stop)", file=sys.stderr)
        driver.run_forever(deps, poll=not args.no_poll, poll_interval_s=settings.poll_interval_s,
                           tick_s=settings.tick_s)
        return 0
    finally:
        if server:
            server.stop()


def replay(args, settings: ControlSettings) -> int:
    deps = _deps(settings)
    key = args.key
    if not key.startswith(deps.inputs.prefix):
        key = deps.inputs.prefix + key.lstrip("/")
    if deps.inputs.head(key) is None:
        print(f"error: no object {key!r} in {deps.inputs.root}", file=sys.stderr)
        return 2
    outcome = on_object_created(ObjectEvent(key, source="replay"), deps, force=args.force)
    if outcome.action == "skipped":
        print(f"skipped: {outcome.reason}", file=sys.stderr)
        return 2
    record = deps.ledger.get(outcome.job_id)
    if outcome.action == "duplicate" and record and record.state == JobState.SUCCEEDED:
        print(f"{key}: already succeeded (job {outcome.job_id}); use --force to process it again", file=sys.stderr)
        return 0
    print(f"{key}: {outcome.action} (job {outcome.job_id})", file=sys.stderr)
    if args.no_wait:
        return 0
    states = driver.wait_for([outcome.job_id], deps, settings.tick_s)
    print(render([deps.ledger.get(outcome.job_id)]))
    return 0 if states[outcome.job_id] == JobState.SUCCEEDED else 1


def status(args, settings: ControlSettings) -> int:
    deps = _deps(settings)
    print(render(deps.ledger.list()))
    return 0


def plan(args, settings: ControlSettings) -> int:
    """A dry run: launches nothing, writes nothing to the ledger (watcher/plan.py)."""
    import json

    from watcher import plan as planner

    result = planner.estimate(_deps(settings))
    print(json.dumps(planner.to_json(result), indent=2) if args.json else planner.render(result))
    return 0


def serve(args, settings: ControlSettings) -> int:
    deps = _deps(settings)
    server = _start_server(deps, settings)
    print(f"serving POST /webhook and /callback on http://{settings.host}:{server.port} (Ctrl-C to stop)",
          file=sys.stderr)
    try:
        while True:
            driver.safe_reap(deps)
            time.sleep(settings.tick_s)
    finally:
        server.stop()


def logs(args, settings: ControlSettings) -> int:
    deps = _deps(settings)
    record = deps.ledger.get(args.job) or _by_key(deps, args.job)
    job_id = record.job_id if record else args.job
    # Both logs were written on the host: printed with their control characters escaped.
    text = deps.outputs.get_bytes(deps.layout.log_key(job_id))
    if text is not None:
        sys.stdout.write(printable(text.decode(errors="replace"), lines=True))
        return 0
    if record and record.instance_id and not record.state.is_terminal():
        sys.stdout.write(printable(deps.compute.logs(record.instance_id), lines=True))
        return 0
    print(f"no log for {args.job!r} yet", file=sys.stderr)
    return 1


def destroy(args, settings: ControlSettings) -> int:
    deps = _deps(settings)
    record = deps.ledger.find_by_instance(args.instance)
    try:
        jobs.stop_instance(record, args.instance, deps, "destroyed by user")
    except NotFoundError:
        pass
    print(f"destroyed {args.instance}", file=sys.stderr)
    return 0


def setup_b2(args, settings: ControlSettings) -> int:
    from watcher.b2setup import setup_notification_rule

    if not settings.webhook_secret:
        print("error: set WATCHER_WEBHOOK_SECRET (the rule signs events with it)", file=sys.stderr)
        return 2
    from vastdrop.location import Location

    rule = setup_notification_rule(settings, bucket_name=args.bucket, url=args.url, rule_name=args.rule_name,
                                   input_prefix=Location.parse(settings.input).prefix,
                                   output_prefix=Location.parse(settings.output).prefix)
    print(f"B2 event notification rule {rule['name']!r} -> {args.url}", file=sys.stderr)
    return 0


def _start_server(deps, settings: ControlSettings):
    from watcher.server import EventServer

    return EventServer(deps, settings.host, settings.port,
                       settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
                       settings.callback_secret.get_secret_value() if settings.callback_secret else None).start()


def _by_key(deps, key: str):
    return next((r for r in deps.ledger.list() if r.key == key or r.key == deps.inputs.prefix + key), None)

