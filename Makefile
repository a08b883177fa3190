# Two commands on a fresh machine: `make demo` (the GPU job on a generated sample, on the CPU,
# into ./bucket/) and `make test`. Both create .venv and install everything the first time.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch: the pair this machine keeps on disk (spandrel needs torchvision); others download GBs.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# AWS SAM CLI, for `sam build` of template.yaml (tests/test_sam_build.py runs it). A venv of its own:
# it pins boto3 and pydantic to versions the project does not use.
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
SAM_PIN := aws-sam-cli==1.170.0
# uv compiles the lock files (`make locks`); a venv of its own, only needed to refresh them.
LOCK_VENV := .venv-lock
UV_PIN := uv==0.13.8
# The image's and Lambda's platform: Linux x86_64, glibc >= 2.28; resolved for the oldest Python
# they may run (pyproject's requires-python). Hashes cover every file of each pinned release, so
# the same pins install on the image's Python and on Lambda's python3.12.
UV_COMPILE = $(LOCK_VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --custom-compile-command 'make locks' $(LOCK_FLAGS)

.PHONY: demo test lint bench install sam-build locks
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]' $(TORCH_PINS)
	touch $@

$(SAM_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q $(SAM_PIN)
	touch $@

$(LOCK_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q $(UV_PIN)
	touch $@

# Re-resolves the three lock files from their inputs, keeping pins that still fit; add
# LOCK_FLAGS=--upgrade to move every pin to the newest release. tests/test_locks.py says when.
locks: $(LOCK_VENV)/.installed
	$(UV_COMPILE) --override locks/base-image.txt locks/gpu-job.in -o locks/gpu-job.txt
	$(UV_COMPILE) serverless/requirements.txt -o serverless/requirements.lock
	$(UV_COMPILE) --no-deps serverless/requirements-sdk-only.txt -o serverless/requirements-sdk-only.lock

# The Lambda bundle, as `sam build` makes it for `sam deploy` (into .aws-sam/build). Needs neither
# the project's venv nor Docker: serverless/Makefile only runs pip (the SAM venv's) for Lambda.
sam-build: $(SAM_VENV)/.installed
	SAM_CLI_TELEMETRY=0 PYTHON=$(abspath $(SAM_VENV))/bin/python $(SAM) build

demo: install
	$(PY) -m gpu_job.demo

# Two workers: the suite's slow tests mostly wait (on Vast's documented pacing, on job processes), so
# they overlap well; worksteal rebalances when one worker draws the long ones.
TEST_WORKERS ?= 2
test: install $(SAM_VENV)/.installed
	VASTDROP_SAM=$(abspath $(SAM)) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) bench/pipeline.py
