"""The stub job of tests/support/stub_job.py, plus one timestamp for bench/control_plane.py.

It prints `BENCH_MANIFEST_PUT <t0> <t1>` to stdout (the emulator keeps stdout in the instance's log):
t0 = wall clock just before the manifest PUT starts, t1 = just after it returned 2xx, i.e. the
manifest object is visible in the store from t1 on (and not before t0). Everything else is the stub
job unchanged (STUB_MODE, STUB_SLEEP_S).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tests.support.stub_job as stub  # noqa: E402
from vastdrop.storage import storage_for as _storage_for  # noqa: E402


def _timed_storage_for(url: str, **kwargs):
    storage = _storage_for(url, **kwargs)
    if url == os.environ.get("JOB_MANIFEST_URL"):
        put_bytes = storage.put_bytes

        def timed_put_bytes(*args, **kw):
            t0 = time.time()
            out = put_bytes(*args, **kw)
            print(f"BENCH_MANIFEST_PUT {t0:.6f} {time.time():.6f}", flush=True)
            return out

        storage.put_bytes = timed_put_bytes
    return storage


if __name__ == "__main__":
    stub.storage_for = _timed_storage_for
    sys.exit(stub.run())
