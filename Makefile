# Two commands on a fresh machine: `make demo` (the GPU job on a generated sample, on the CPU,
# into ./bucket/) and `make test`. Both create .venv and install everything the first time.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch: the pair this machine keeps on disk (spandrel needs torchvision); others download GBs.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint bench install
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]' $(TORCH_PINS)
	touch $@

demo: install
	$(PY) -m gpu_job.demo

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) bench/pipeline.py
