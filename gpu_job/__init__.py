"""The GPU job container: `python -m gpu_job`, configured only by JOB_* env vars."""
