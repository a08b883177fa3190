"""The local CLI and driver: `python -m watcher` (ARCHITECTURE.md section 7)."""
