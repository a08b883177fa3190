"""`python -m watcher`: run, replay, status, serve, logs, destroy, setup-b2.

Every flag also reads from WATCHER_<FLAG> (e.g. WATCHER_COMPUTE=vast); with nothing set, the
embedded default processes ./bucket/input/ into ./bucket/output/ with local compute and SQLite.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from vastdrop import logs
from vastdrop.errors import VastdropError

logger = logging.getLogger("watcher")

# Flags shared by every command; each maps to a ControlSettings field (and so to WATCHER_<FLAG>).
COMMON_FLAGS = [
    ("--input", str, "input location, e.g. s3://bucket/input/ (default file://./bucket/input/)"),
    ("--output", str, "output location (default file://./bucket/output/)"),
    ("--compute", str, "local (default) or vast"),
    ("--state", str, "state directory: ledger and local instances (default .vastdrop)"),
    ("--ledger", str, "ledger: a SQLite path or dynamodb://table (default <state>/ledger.sqlite)"),
    ("--target-fps", float, "output frame rate (default: keep the input's)"),
    ("--upscale", int, "1, 2, 3 or 4"),
    ("--interpolation-model", str, "RIFE flownet.pkl path or URL (default: non-learned fallback)"),
    ("--upscale-model", str, "Real-ESRGAN .pth path or URL (default: non-learned fallback)"),
    ("--device", str, "auto, cpu or cuda (for the job)"),
    ("--max-attempts", int, "attempts per job before it fails"),
    ("--job-timeout-s", float, "an attempt's deadline, in seconds from launch"),
    ("--port", int, "HTTP port for serve / run --serve"),
    ("--host", str, "HTTP bind address (default 127.0.0.1)"),
]


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    for flag, kind, text in COMMON_FLAGS:
        common.add_argument(flag, type=kind, default=None, help=text)
    common.add_argument("-v", "--verbose", action="store_true", help="log every step (JSON lines to stderr)")
    parser = argparse.ArgumentParser(prog="python -m watcher", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[common], help="watch the input prefix and drive jobs")
    run.add_argument("--once", action="store_true", help="process everything pending, wait, exit 0 if all succeeded")
    run.add_argument("--serve", action="store_true", help="also serve the webhook while running")
    run.add_argument("--no-poll", action="store_true", help="don't poll; rely on webhooks")
    replay = sub.add_parser("replay", parents=[common], help="process one key now")
    replay.add_argument("key", help="object key, e.g. input/clip.mp4")
    replay.add_argument("--force", action="store_true", help="even if already succeeded")
    replay.add_argument("--no-wait", action="store_true", help="launch and return")
    sub.add_parser("status", parents=[common], help="table of jobs")
    sub.add_parser("serve", parents=[common], help="serve the B2 webhook and job callbacks")
    logs_cmd = sub.add_parser("logs", parents=[common], help="a job's own log (or its instance's while running)")
    logs_cmd.add_argument("job", help="job id (or an input key)")
    destroy = sub.add_parser("destroy", parents=[common], help="destroy an instance")
    destroy.add_argument("instance")
    b2 = sub.add_parser("setup-b2", parents=[common], help="create or merge the B2 event-notification rule")
    b2.add_argument("--bucket", required=True, help="B2 bucket name")
    b2.add_argument("--url", required=True, help="public https URL of the webhook (…/webhook)")
    b2.add_argument("--rule-name", default="vastdrop")
    return parser


def _settings(args: argparse.Namespace):
    from vastdrop.settings import ControlSettings

    given = {flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_"))
             for flag, _, _ in COMMON_FLAGS}
    return ControlSettings(**{k: v for k, v in given.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        settings = _settings(args)
        from watcher import commands

        return getattr(commands, args.command.replace("-", "_"))(args, settings)
    except ValidationError as exc:
        fields = "; ".join(f"--{'-'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        print(f"error: invalid settings: {fields}", file=sys.stderr)
        return 2
    except VastdropError as exc:
        print(f"error: {logs.scrub(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
