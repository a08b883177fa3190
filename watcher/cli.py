"""`python -m watcher`: run, replay, status, plan, serve, logs, destroy, setup-b2.

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



def _parser() -> argparse.ArgumentParser:
    from vastdrop.settings import CLI_FLAGS, ControlSettings

    # Flags shared by every command: ControlSettings fields, whose descriptions are the help.
    common = argparse.ArgumentParser(add_help=False)
    for name, kind in CLI_FLAGS.items():
        field = ControlSettings.model_fields[name]
        default = "" if field.default is None else f" (default {field.default})"
        flag, text = "--" + name.replace("_", "-"), f"{field.description}{default}"
        if kind is bool:  # a switch: present means true; absent leaves WATCHER_<NAME> or the default
            common.add_argument(flag, dest=name, action="store_const", const=True, default=None, help=text)
        else:
            common.add_argument(flag, dest=name, type=kind, default=None, help=text)
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
    plan = sub.add_parser("plan", parents=[common],
                          help="dry run: what run would launch for each pending input, its time and cost; launches nothing")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
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
    from vastdrop.settings import CLI_FLAGS, load_settings

    given = {name: getattr(args, name) for name in CLI_FLAGS}
    return load_settings(**{k: v for k, v in given.items() if v is not None})


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
        print(f"error: {logs.printable(logs.bounded(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
