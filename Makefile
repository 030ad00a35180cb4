# Every target bootstraps .venv itself: on a fresh machine `make lab` and `make test`
# are the only commands needed. `make lab` installs what the notebook needs; `make test`
# and `make install` add the test tools and the SageMaker SDK.
PYTHON3 ?= python3
TORCH_VERSION ?= 2.13.0
VENV := .venv
PY := $(VENV)/bin/python
LAB_STAMP := $(VENV)/.installed-lab
STAMP := $(VENV)/.installed
RELEASE_NB := notebooks/release/transformers_from_scratch/transformers_from_scratch.ipynb
MASTER_NB := notebooks/source/transformers_from_scratch/transformers_from_scratch.ipynb
# nbgrader's Validate and Create Assignment read the course's config (its cell timeout) from
# Jupyter's config path, whatever folder JupyterLab serves.
COURSE_CONFIG := JUPYTER_CONFIG_PATH=$(abspath notebooks)
# As root (containers, cloud VMs) pip only warns, and JupyterLab starts when told it may.
export PIP_ROOT_USER_ACTION := ignore
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
# --no-compile: bytecode is written for the modules a run imports, not for all of torch.
PIP_INSTALL := $(PY) -m pip install --no-compile
# JupyterHub's proxy (npm), inside the environment: `make hub` and the hub test use it. `make test`
# installs it where npm exists (.ci/run installs nodejs and npm); without it the hub test skips.
PROXY := $(VENV)/proxy/node_modules/.bin/configurable-http-proxy
HUB_PROXY := $(if $(shell command -v npm),$(PROXY))

.PHONY: install test lint lab master hub bench bench-train bench-parallel bench-grade release release-solutions student-bundle clean

$(PY):
	$(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PIP_INSTALL) "torch==$(TORCH_VERSION)"

$(LAB_STAMP): pyproject.toml | $(PY)
	$(PIP_INSTALL) -e ".[lab]"
	touch $(LAB_STAMP)

$(STAMP): pyproject.toml | $(PY)
	$(PIP_INSTALL) -e ".[lab,dev,sagemaker]"
	# The tests start hundreds of processes (kernels, nbgrader, sandboxes): bytecode for all
	# of them, written once here, also where PYTHONDONTWRITEBYTECODE is set. A few files
	# written for newer Pythons (torch's py312 test helpers) cannot compile, harmlessly.
	$(PY) -m compileall -q -j 0 $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') > /dev/null || true
	touch $(STAMP) $(LAB_STAMP)

$(PROXY): | $(PY)
	npm install --prefix $(VENV)/proxy --no-audit --no-fund "configurable-http-proxy@^5"

install: $(STAMP) $(HUB_PROXY)

test: $(STAMP) $(HUB_PROXY)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

lab: $(LAB_STAMP)
	cd $(dir $(RELEASE_NB)) && $(COURSE_CONFIG) $(abspath $(VENV))/bin/jupyter lab $(ALLOW_ROOT) $(notdir $(RELEASE_NB))

# The instructor's master (its hidden test cells load solutions/ through the installed grader).
master: $(STAMP)
	cd $(dir $(MASTER_NB)) && $(COURSE_CONFIG) $(abspath $(VENV))/bin/jupyter lab $(ALLOW_ROOT) $(notdir $(MASTER_NB))

# A JupyterHub for one class on this machine (trial accounts; see README, "For instructors").
hub: $(STAMP) $(PROXY)
	$(PY) -m grader hub

bench: bench-train bench-parallel bench-grade

bench-train: $(STAMP)
	$(PY) -m benchmarks.train

bench-parallel: $(STAMP)
	$(PY) -m benchmarks.parallel

bench-grade: $(STAMP)
	$(PY) -m benchmarks.grade

release: $(STAMP)
	$(PY) -m grader release

# At the assignment's due date (nbgrader db assignment add ... --duedate), in the background.
release-solutions: $(STAMP)
	$(PY) -m grader release-solutions --detach

student-bundle: $(STAMP)
	$(PY) -m grader student-bundle

clean:
	rm -rf bench-results student-bundle .pytest_cache
