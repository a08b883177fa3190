"""`status`: a readable table of jobs. Every text in it was written by someone else (keys by users, errors
by hosts, GPU names by Vast), so control characters are printed escaped: no terminal sequence runs."""

from __future__ import annotations

import time

from vastdrop.ledger.base import JobRecord
from vastdrop.logs import printable
from vastdrop.states import JobState

COLUMNS = ("KEY", "STATE", "ATTEMPT", "INSTANCE", "GPU", "$/H", "ELAPSED", "COST")
MAX_KEY_CHARS = 48


def _elapsed(record: JobRecord, now: float) -> str:
    end = record.finished_at or now
    seconds = max(0, int(end - record.created_at))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _key(key: str) -> str:
    key = printable(key)
    return key if len(key) <= MAX_KEY_CHARS else "…" + key[-(MAX_KEY_CHARS - 1):]


def _name(r: JobRecord) -> str:
    """The input's key; a segment's also says which one it is (handlers.segments)."""
    if r.parent_id is None or r.segment is None:
        return _key(r.key)
    span = r.segment
    return f"{_key(r.key)} [{int(span.get('index', 0)) + 1}/{span.get('count', '?')}]"


def _row(r: JobRecord, now: float) -> tuple[str, ...]:
    shown_kind = r.error_kind and (r.state.is_terminal() or r.error_kind == "waiting")
    return (_name(r), r.state.value + (f" ({printable(r.error_kind)})" if shown_kind else ""), str(r.attempt),
            printable(r.instance_id or "-"), printable(r.gpu_name or "-"), f"{r.dph:.3f}" if r.dph else "-",
            _elapsed(r, now), f"${r.cost:.4f}")


def render(records: list[JobRecord], now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = [COLUMNS] + [_row(r, now) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if not records:
        lines.append("(no jobs yet)")
    # Why a queued job waits (our caps, the Vast API's pace, the account) and when it asks again.
    waiting = [r for r in records if r.error_kind == "waiting" and not r.state.is_terminal() and r.error]
    if waiting:
        lines += ["", "waiting:"] + [
            f"  {printable(r.key)}: {printable(r.error)}"
            + (f" (next try in {max(0, int(r.next_attempt_at - now))}s)" if r.next_attempt_at else "")
            for r in waiting]
    # Why each failed job failed, in the words its manifest or the control plane recorded.
    failed = [r for r in records if r.state is JobState.FAILED and r.error]
    if failed:
        lines += ["", "failed:"] + [f"  {printable(r.key)}: {printable(r.error)}" for r in failed]
    return "\n".join(lines)
