# Two commands do all set-up on a fresh machine: `make train` and `make test`.
# Each creates .venv, installs the package with its dev, tune (Ray), mlflow and export (ONNX) extras, gets the data,
# then runs.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEBIAN_DATA := /usr/share/datasets/fashion-mnist

EPOCHS   ?=
FRACTION ?=
ARGS     ?=
RUN      ?=
RECIPE   ?=
FAST     ?=
MUTATE   ?=

.PHONY: all install data train resume resume-usage test test-fast lint mutate clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,tune,mlflow,export]'
	touch $@

install: $(STAMP)

# The data: Debian's package when we are root on a machine with apt-get and no other source,
# then `fmnist-yolo prepare`, which resolves the source (or downloads) and skips when up to date.
data: $(STAMP)
	@if [ -z "$$FMNIST_SOURCE" ] && [ ! -d $(DEBIAN_DATA) ] && [ ! -d datasets/raw/fashion-mnist ] \
	  && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Debian's dataset-fashion-mnist (the offline copy of the data)..."; \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
	  || (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null) \
	  || echo "apt-get could not install it; prepare will try the official mirrors."; \
	fi
	$(PY) -m fmnist_yolo prepare

train: data
	$(PY) -m fmnist_yolo train $(if $(RECIPE),recipe=$(RECIPE)) $(if $(FAST),fast=$(FAST)) $(if $(EPOCHS),epochs=$(EPOCHS)) $(if $(FRACTION),fraction=$(FRACTION)) $(ARGS)

# Continue an interrupted run from its last.pt: make resume RUN=runs/classify/train
resume: $(if $(RUN),data,resume-usage)
	$(PY) -m fmnist_yolo train resume=$(RUN) $(ARGS)
resume-usage:  # before any install: nothing to resume without RUN
	@echo "usage: make resume RUN=runs/classify/<run>" >&2; exit 2

test: data
	$(PY) -m pytest $(ARGS)

test-fast: data
	$(PY) -m pytest -m "not slow" $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check fmnist_yolo tests benchmarks
	$(PY) -m ruff format --check --diff fmnist_yolo tests benchmarks >/dev/null || (echo "ruff format would change files: run $(PY) -m ruff format" >&2; exit 1)

# Mutation testing (mutmut) of metrics, rundir, tree, randaugment and fast, each with its own fast unit tests and a
# CPU-time limit per mutant: make mutate MUTATE="metrics tree" for some; figures in benchmarks/RESULTS.md.
mutate: $(STAMP)
	$(PY) benchmarks/mutate.py $(MUTATE)

clean:
	rm -rf runs .pytest_cache build/mutate
