# Every target bootstraps .venv itself: on a fresh machine `make lab` and `make test`
# are the only commands needed.
PYTHON3 ?= python3
TORCH_VERSION ?= 2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RELEASE_NB := notebooks/release/transformers_from_scratch/transformers_from_scratch.ipynb

.PHONY: install test lint lab bench bench-train bench-parallel bench-grade release release-solutions student-bundle clean

$(STAMP): pyproject.toml
	$(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -e ".[lab,dev,sagemaker]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

lab: $(STAMP)
	cd $(dir $(RELEASE_NB)) && ../../../$(VENV)/bin/jupyter lab $(notdir $(RELEASE_NB))

bench: bench-train bench-parallel bench-grade

bench-train: $(STAMP)
	$(PY) -m benchmarks.train

bench-parallel: $(STAMP)
	$(PY) -m benchmarks.parallel

bench-grade: $(STAMP)
	$(PY) -m benchmarks.grade

release: $(STAMP)
	$(PY) -m grader release

release-solutions: $(STAMP)
	$(PY) -m grader release-solutions

student-bundle: $(STAMP)
	$(PY) -m grader student-bundle

clean:
	rm -rf bench-results student-bundle .pytest_cache
