"""Shared contracts of vastdrop: settings, JobSpec, Manifest, layout and storage adapters.

gpu_job, handlers and watcher all import from here; nothing here imports torch or av.
"""
