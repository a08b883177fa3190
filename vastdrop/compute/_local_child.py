"""The wrapper LocalCompute starts each job through:

    python -m vastdrop.compute._local_child <exit-code-file> -- <cmd...>

It runs <cmd> (same env, cwd, stdio and process group), forwards SIGTERM/SIGINT to it, waits for it,
and atomically writes its exit code (docker style: 128+N for a job killed by signal N) to
<exit-code-file>, so a watcher that restarted (and is no longer the parent) can still learn it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

EXIT_CANNOT_START = 127  # the shell's "command not found"
EXIT_USAGE = 2


def write_exit_code(path: Path, code: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{code}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def docker_exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m vastdrop.compute._local_child EXIT_FILE -- CMD...", file=sys.stderr)
        return EXIT_USAGE
    exit_file, cmd = Path(argv[0]), argv[2:]
    proc: subprocess.Popen[bytes] | None = None
    pending: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if proc is None:
            pending.append(signum)  # arrived before the job started: deliver once it has
            return
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    if pending:  # told to stop before the job started: do not start it
        write_exit_code(exit_file, 128 + pending[0])
        return 128 + pending[0]
    try:
        proc = subprocess.Popen(cmd)
    except OSError as exc:
        print(f"local job: cannot start {cmd[0]!r}: {exc.strerror}", file=sys.stderr, flush=True)
        write_exit_code(exit_file, EXIT_CANNOT_START)
        return EXIT_CANNOT_START
    for signum in pending:  # arrived while Popen was starting the job
        forward(signum, None)
    code = docker_exit_code(proc.wait())
    write_exit_code(exit_file, code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
