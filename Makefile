# torchserve-sweeper: `make sweep SWEEP=batching` runs a sweep, `make test` runs the tests.
# Both create the virtual environment, install the package and build the model archives.

PYTHON     ?= python3
VENV       ?= .venv
# torch for the venv; a CUDA build for a GPU (docs/gpu.md), e.g.
#   make sweep SWEEP=gpu TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
# (pip arguments, unquoted: quote a version range inside, TORCH_SPEC="'torch>=2.1'")
TORCH_SPEC ?= torch==2.13.0
SWEEP      ?= batching
ARGS       ?=
PYTEST_ARGS ?=
# packages a user's handler needs, installed into the sweeper's venv (the workers run on its
# Python): make sweep SWEEP=sweeps/mine.yaml PIP_EXTRA="-r my_requirements.txt"
PIP_EXTRA  ?=

BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray
TORCH_STAMP := $(VENV)/.torch-spec
GPU_STAMP := $(VENV)/.installed-gpu
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: sweep test unit plan report setup archives check-java check-python browser wrk ray docs clean help torch gpu gpu-bundle

help:
	@echo "make sweep SWEEP=batching   run sweeps/<SWEEP>.yaml against real TorchServe (ARGS=--yes ...)"
	@echo "make plan SWEEP=batching    list the trials and render every config, start nothing"
	@echo "make sweep SWEEP=sweeps/mine.yaml PIP_EXTRA='pkg ...'   your own model; installs its handler's packages first"
	@echo "make test                   run the test suite (unit + end-to-end with TorchServe)"
	@echo "make unit                   the quick tier: every test that needs no Java, TorchServe, Chromium, wrk or Ray"
	@echo "make ray                    install the optional Ray extra (sweeper run SWEEP --ray: many machines)"
	@echo "make docs                   build the documentation site into site/ (mkdocs build --strict)"
	@echo "make gpu TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126'   a CUDA torch and nvidia-ml-py (docs/gpu.md)"
	@echo "make gpu-bundle             the GPU check's Java runtime and wheels for a machine without network (docs/gpu.md)"

check-python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found: install Python 3.10+ (with venv)" >&2; exit 2; }
	@$(PYTHON) -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null || \
	  { echo "error: $(PYTHON) must be Python 3.10+ with the venv module (Debian: apt-get install python3-venv)" >&2; exit 2; }

check-java:
	@command -v java >/dev/null 2>&1 || { echo "error: java not found: TorchServe needs Java 11 or newer (Debian: apt-get install openjdk-17-jre-headless)" >&2; exit 2; }

$(STAMP): pyproject.toml | check-python
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	@printf '%s\n' "$(TORCH_SPEC)" > $(TORCH_STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

# A TORCH_SPEC given on the command line (or in the environment) replaces the venv's torch
# when it differs from the one installed last: pip alone keeps a torch 2.13.0+cpu as
# satisfying torch==2.13.0 from the CUDA index. The default spec never replaces anything.
torch: $(STAMP)
ifneq ($(origin TORCH_SPEC),file)
	@if [ "$$(cat $(TORCH_STAMP) 2>/dev/null)" != "$(TORCH_SPEC)" ]; then \
	  echo "replacing the venv's torch: $(TORCH_SPEC)"; \
	  $(BIN)/pip uninstall --quiet -y torch && $(BIN)/pip install --quiet $(TORCH_SPEC) && \
	  printf '%s\n' "$(TORCH_SPEC)" > $(TORCH_STAMP); fi
endif

# The optional `gpu` extra (nvidia-ml-py: the gpu_* columns), with TORCH_SPEC's torch.
$(GPU_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[gpu]'
	@touch $@

gpu: torch $(GPU_STAMP)

setup: $(STAMP)

# The optional `ray` extra (sweeper run --ray; the Ray tests): a large wheel, installed once.
$(RAY_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[ray]'
	@touch $@

ray: $(RAY_STAMP)

# The optional `docs` extra (MkDocs + Material, pinned) and the site, built offline into site/.
$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[docs]'
	@touch $@

# NO_MKDOCS_2_WARNING: Material's banner about its successor is not a build problem
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

archives: $(STAMP) torch
	$(BIN)/python -m sweeper.archive --model-store model_store

# ARGS="--ray ..." installs the Ray extra first
sweep: check-java archives $(if $(findstring --ray,$(ARGS)),ray)
	@if [ -n "$(PIP_EXTRA)" ]; then echo "installing handler dependencies: $(PIP_EXTRA)"; $(BIN)/pip install --quiet $(PIP_EXTRA); fi
	$(BIN)/sweeper run $(SWEEP) $(ARGS)

plan: $(STAMP) torch
	$(BIN)/sweeper plan $(SWEEP) $(ARGS)

# The GPU check's bundle (benchmarks/gpu_bundle.py; docs/gpu.md): a jlink'ed JRE and the
# wheels benchmarks/gpu_check.sh installs offline on a GPU machine without Java, TorchServe
# or network, packed into build/gpu-bundle.tar.xz, then one TorchServe started here with
# them. GPU_PY: that machine's Python; GPU_WHEELS: the compiled distributions it lacks
# (gpu_check.sh prints the line to use); GPU_GLIBC: its glibc, for their manylinux tags.
GPU_PY     ?=
GPU_WHEELS ?=
GPU_GLIBC  ?= 2.28
gpu-bundle: $(STAMP)
	@command -v jlink >/dev/null 2>&1 || { echo "error: jlink not found: the bundle's Java runtime needs a JDK 11+ (Debian: apt-get install openjdk-17-jdk-headless)" >&2; exit 2; }
	$(BIN)/python benchmarks/gpu_bundle.py --self-test --glibc $(GPU_GLIBC) $(if $(GPU_PY),--python $(GPU_PY)) $(if $(GPU_WHEELS),--wheels "$(GPU_WHEELS)")

# Headless Chromium for the report's browser test (Debian's package; needs root).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (Debian package) for the report's browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	      echo "warning: could not install chromium; the browser test will be skipped (or fail under CI)" >&2; \
	  else echo "note: chromium not found; the report's browser test will be skipped (apt-get install chromium)" >&2; fi; }

# wrk (Debian's package; needs root): the independent client of `sweeper verify` and its test.
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing wrk (Debian package) for sweeper verify's test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null) || \
	      echo "warning: could not install wrk; sweeper verify's wrk test will be skipped (or fail under CI)" >&2; \
	  else echo "note: wrk not found; sweeper verify's wrk test will be skipped (apt-get install wrk)" >&2; fi; }

test: check-java archives browser wrk ray
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The quick tier: the tests marked `unit` by tests/conftest.py, those without an e2e, java,
# chromium, wrk or ray marker. It needs the venv only (no Java, archives, browser, wrk or Ray).
# Most of its time is waiting (fake servers, warm-ups, child processes: about one core busy
# on average), so it runs in UNIT_WORKERS pytest-xdist processes, each taking the next test
# when it is free (worksteal). On the 2-core machine, 1,303 tests: ~75 s with 3 workers,
# ~95 s with 2 (4 gain nothing more).
UNIT_WORKERS ?= 3
unit: $(STAMP)
	$(BIN)/python -m pytest -q -m unit -n $(UNIT_WORKERS) --dist worksteal $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) model_store/*.mar build *.egg-info
