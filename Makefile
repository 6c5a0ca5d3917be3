# The README's first commands: `make demo` (set up and run the default job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
TORCH := torch==2.14.1 torchvision==0.29.1
PLUGINS := $(wildcard plugins/rd3-plugin-*)
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo test test-all lint install install-dev data clean bench

demo: install data
	$(BIN)/rd3h run --plugin random

test: install-dev data
	$(BIN)/python -m pytest -m "not slow"

test-all: install-dev data
	$(BIN)/python -m pytest

lint: install-dev
	$(BIN)/ruff check rd3_harness tests plugins benchmarks

bench: install data
	$(BIN)/python benchmarks/posteval_speed.py

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml $(wildcard plugins/*/pyproject.toml)
	$(PIP) install --quiet -e . $(foreach p,$(PLUGINS),-e $(p))
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install --quiet -e '.[dev,plot,trackers,slurm]' -e 'plugins/rd3-plugin-generative[sd]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.dev

data:
	@if [ -f "$(FMNIST)" ] || [ -n "$$RD3_DATA_ROOT" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing Fashion-MNIST (apt-get install -y dataset-fashion-mnist)"; \
		(apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null; \
	else \
		echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist'," \
		     "or put its idx files under \$$RD3_DATA_ROOT/fashion-mnist/"; exit 1; \
	fi

clean:
	rm -rf $(VENV) rd3-results .pytest_cache
