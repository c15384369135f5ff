# mnistnn: set up, fetch the data, open the notebooks, run the tests.
#
# Needs GNU make (3.81 or newer, as shipped on macOS) and Python 3.11+; no conda.
#   make            create .venv and install the package with its lab + test extras
#   make lab        ... then fetch the data and open JupyterLab on notebooks/
#   make test       ... then fetch the data and run tests/ and every notebook (nbval)
#   make test-lab   ... the notebooks in a real JupyterLab in headless Chromium (Playwright)
#   make test-arm   ... the determinism test on 64-bit ARM under qemu (Debian or Ubuntu, as root)
#   make test-min   the tests with the oldest versions pyproject.toml allows, in .venv-min
#   make test-blas  the notebooks under two other OpenBLAS kernel families than this CPU's
#   make help       list every target
#
# Variables (override on the command line: `make test PYTHON=python3.12 PYTEST_ARGS="-k idx"`):
#   PYTHON       interpreter that creates the venv (default python3)
#   VENV         the virtual environment's folder (default .venv)
#   LAB_ARGS     extra arguments for `jupyter lab`
#   PYTEST_ARGS  extra arguments for pytest (e.g. `tests -x -q` to skip the notebooks)
#   NB           notebook(s) for `make execute` and `make test-blas` (default: all of notebooks/)
#   ARM_DIR      where `make test-arm` builds its aarch64 Python (default .arm, gitignored)
#   VENV_MIN     the venv of `make test-min` (default .venv-min)
#   CORETYPES    OpenBLAS kernel families `make test-blas` picks from (the first ones that are
#                not this CPU's; default: Haswell Sandybridge Prescott)
#   BLAS_PASSES  how many of them `make test-blas` runs the notebooks under (default 2)
#   CHROMIUM     the browser of `make test-lab` (default /usr/bin/chromium, Debian's package);
#                empty for Playwright's own (`.venv/bin/python -m playwright install chromium`)
#   MNISTNN_DATA (environment) where the data lives; default: the checkout's data/

PYTHON ?= python3
VENV ?= .venv
LAB_ARGS ?=
PYTEST_ARGS ?=
CHROMIUM ?= /usr/bin/chromium

VENV_BIN := $(VENV)/bin
VENV_PY := $(VENV_BIN)/python
STAMP := $(VENV)/.installed
KERNEL_NAME := mnistnn
KERNEL_DISPLAY := Python (mnistnn)

# The test run: no progress bars, no debugger warning from the kernels, and Matplotlib's font
# cache inside the checkout (a cache left half-written by another checkout's run could otherwise
# make a notebook print font warnings, which nbval counts as a changed output).
TEST_ENV := MNISTNN_PROGRESS=0 PYDEVD_DISABLE_FILE_VALIDATION=1 MPLCONFIGDIR=$(CURDIR)/.cache/matplotlib
# The browser tests: progress bars on (they check that JupyterLab draws them), the chosen Chromium.
LAB_TEST_ENV := PYDEVD_DISABLE_FILE_VALIDATION=1 MPLCONFIGDIR=$(CURDIR)/.cache/matplotlib \
  MNISTNN_CHROMIUM=$(CHROMIUM)

.DEFAULT_GOAL := install
.DELETE_ON_ERROR:
.PHONY: install data lab test test-lab test-lab-quick test-arm qemu test-min test-blas browser \
  execute lint images \
  benchmark clean distclean help

install: $(STAMP) ## Create the venv (.venv), install the package (editable) with its lab + test extras, register the kernel

# The venv itself: made once, with a clear message when the interpreter is too old.
CHECK_PYTHON := $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
  echo "error: mnistnn needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) --version 2>&1)." >&2; \
  echo "       Run e.g. 'make PYTHON=python3.12'." >&2; exit 1; }
$(VENV_PY):
	@$(CHECK_PYTHON)
	$(PYTHON) -m venv $(VENV)

# Everything pip installs; redone only when pyproject.toml changes (or the stamp is removed).
$(STAMP): pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install --quiet --upgrade pip
	$(VENV_PY) -m pip install --progress-bar off -e '.[dev]'
	$(VENV_PY) -m ipykernel install --user --name $(KERNEL_NAME) --display-name "$(KERNEL_DISPLAY)" >/dev/null
	@touch $@

data: install ## Fetch and verify MNIST and Fashion-MNIST into data/ (quick when already there)
	$(VENV_PY) -m mnistnn fetch

# JupyterLab refuses to start as root (a container, a cloud VM) unless told --allow-root.
ALLOW_ROOT = $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)

lab: install data ## Open JupyterLab on notebooks/ (extra arguments: LAB_ARGS=...)
	$(VENV_BIN)/jupyter lab --notebook-dir=notebooks $(ALLOW_ROOT) $(LAB_ARGS)

test: install data ## Run tests/ and every notebook with nbval (extra arguments: PYTEST_ARGS=...)
	$(TEST_ENV) $(VENV_PY) -m pytest $(PYTEST_ARGS)

test-lab: install data browser ## Run every notebook in JupyterLab in headless Chromium, draw on notebook 06's pad (screenshots: tests_lab/screenshots/)
	$(LAB_TEST_ENV) $(VENV_PY) -m pytest tests_lab $(PYTEST_ARGS)

test-lab-quick: install data browser ## The same for notebooks 01, 02 and 06 only (CI runs it after `make test`)
	$(LAB_TEST_ENV) $(VENV_PY) -m pytest tests_lab -m quick $(PYTEST_ARGS)

# 64-bit ARM under qemu-user, built in ARM_DIR from nothing and reused: Debian's arm64 Python 3.11
# (debootstrap's first stage downloads it with what it needs; its packages are unpacked, none
# installed, nothing runs as ARM but Python itself), and PyPI's aarch64 wheels of the versions in
# the venv.  No binfmt_misc needed: qemu is called by name.
ARM_DIR ?= .arm
ARM_MIRROR ?= http://deb.debian.org/debian
ARM_ROOT := $(ARM_DIR)/root
ARM_PINS := numpy|numba|llvmlite|tqdm|pooch|filelock|pytest
# The paths of tests/test_determinism.py trained there: compiling each path's kernels under
# emulation takes minutes (ARM_PATHS=all trains all five).
ARM_PATHS ?= one pass,layer by layer
ARM_WHEELS := --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 \
  --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp --only-binary=:all:
ARM_PY = qemu-aarch64-static -L $(abspath $(ARM_ROOT)) $(abspath $(ARM_ROOT))/usr/bin/python3.11

test-arm: install qemu $(ARM_ROOT)/usr/bin/python3.11 $(ARM_DIR)/site/.installed ## Train small networks on aarch64 under qemu and compare their stored digests (ARM_PATHS=...; as root: installs qemu-user-static and debootstrap; builds .arm/)
	mkdir -p $(ARM_DIR)/run
	cd $(ARM_DIR)/run && $(TEST_ENV) NUMBA_CACHE_DIR=$(abspath $(ARM_DIR))/numba-cache \
	  DETERMINISM_PATHS="$(filter-out all,$(ARM_PATHS))" \
	  PYTHONPATH=$(abspath $(ARM_DIR))/site:$(CURDIR) $(ARM_PY) -m pytest -p no:cacheprovider \
	  -o addopts=-ra $(CURDIR)/tests/test_determinism.py $(PYTEST_ARGS)

qemu: ## Make sure test-arm has qemu-aarch64-static and debootstrap (Debian's packages, as root)
	@if command -v qemu-aarch64-static >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; \
	then exit 0; elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's qemu-user-static and debootstrap packages for test-arm"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq qemu-user-static debootstrap >/dev/null; \
	else \
	  echo "error: make test-arm needs qemu-aarch64-static and debootstrap ('apt-get install" >&2; \
	  echo "       qemu-user-static debootstrap' as root on Debian or Ubuntu)." >&2; exit 1; fi

$(ARM_ROOT)/usr/bin/python3.11:
	rm -rf $(ARM_ROOT).part && mkdir -p $(ARM_DIR)
	debootstrap --arch=arm64 --foreign --variant=minbase \
	  --include=python3.11-minimal,libpython3.11-stdlib \
	  bookworm $(abspath $(ARM_ROOT)).part $(ARM_MIRROR)
	for deb in $(ARM_ROOT).part/var/cache/apt/archives/*.deb; do dpkg -x "$$deb" $(ARM_ROOT).part; done
	rm -rf $(ARM_ROOT) && mv $(ARM_ROOT).part $(ARM_ROOT)

$(ARM_DIR)/site/.installed: $(STAMP)
	rm -rf $(ARM_DIR)/site
	$(VENV_PY) -m pip install --quiet --target $(ARM_DIR)/site $(ARM_WHEELS) \
	  $$($(VENV_PY) -m pip freeze | grep -iE '^($(ARM_PINS))==')
	@touch $@

# The floors: the package with the oldest versions pyproject.toml allows (tests/constraints-min.txt;
# tests/test_floors.py keeps the two in step), in a venv of its own with a Numba cache of its own
# (so neither venv's run throws away the other's compiled kernels). The unit tests, then, if they
# pass, the notebooks.
VENV_MIN ?= .venv-min
MIN_STAMP := $(VENV_MIN)/.installed
MIN_ENV := $(TEST_ENV) NUMBA_CACHE_DIR=$(CURDIR)/.cache/numba-min

$(MIN_STAMP): pyproject.toml tests/constraints-min.txt
	@$(CHECK_PYTHON)
	[ -x $(VENV_MIN)/bin/python ] || $(PYTHON) -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_MIN)/bin/python -m pip install --progress-bar off -c tests/constraints-min.txt -e '.[dev]'
	@touch $@

test-min: $(MIN_STAMP) ## Run tests/, then the notebooks, with the oldest versions allowed (in .venv-min)
	$(VENV_MIN)/bin/python -m mnistnn fetch
	$(MIN_ENV) $(VENV_MIN)/bin/python -m pytest tests $(PYTEST_ARGS)
	$(MIN_ENV) $(VENV_MIN)/bin/python -m pytest notebooks $(PYTEST_ARGS)

# Other CPUs compute NumPy's matrix products with other OpenBLAS kernels, and its exp and log with
# other SIMD code: every number a notebook prints must survive that. Each pass runs the notebooks
# with OpenBLAS told to use another kernel family than it picks here (checked with threadpoolctl)
# and NumPy's CPU-specific code for this CPU switched off (NPY_DISABLE_CPU_FEATURES).
CORETYPES ?= Haswell Sandybridge Prescott
BLAS_PASSES ?= 2
BLAS_KERNELS := import numpy, threadpoolctl; \
  print(" ".join(i.get("architecture") or "?" for i in threadpoolctl.threadpool_info() \
  if i["internal_api"] == "openblas"))
NUMPY_SIMD := import numpy; core = getattr(numpy, "_core", None) or numpy.core; \
  u = core._multiarray_umath; \
  print(" ".join(f for f in u.__cpu_dispatch__ if u.__cpu_features__.get(f)))

test-blas: install data ## Run the notebooks under two OpenBLAS kernel families other than this CPU's (CORETYPES=..., BLAS_PASSES=...)
	@host="$$($(VENV_PY) -c '$(BLAS_KERNELS)')"; simd="$$($(VENV_PY) -c '$(NUMPY_SIMD)')"; \
	echo "this CPU: OpenBLAS kernels $$host; NumPy's dispatched SIMD code: $${simd:-none}"; \
	n=0; for c in $(CORETYPES); do \
	  got="$$(OPENBLAS_CORETYPE=$$c $(VENV_PY) -c '$(BLAS_KERNELS)')"; \
	  [ "$$got" != "$$host" ] || continue; n=$$((n + 1)); \
	  echo "== OPENBLAS_CORETYPE=$$c (OpenBLAS: $$got), NPY_DISABLE_CPU_FEATURES=\"$$simd\""; \
	  OPENBLAS_CORETYPE=$$c NPY_DISABLE_CPU_FEATURES="$$simd" $(TEST_ENV) \
	    $(VENV_PY) -m pytest $(or $(NB),notebooks) $(PYTEST_ARGS) || exit 1; \
	  [ $$n -lt $(BLAS_PASSES) ] || exit 0; done; \
	echo "error: fewer than $(BLAS_PASSES) of CORETYPES=\"$(CORETYPES)\" differ from this CPU's" >&2; exit 1

# Debian's chromium, installed with apt-get when it is missing and we may (root, apt-get there).
browser: ## Make sure test-lab has a browser: CHROMIUM, else Debian's chromium package (as root)
	@if [ -z "$(CHROMIUM)" ] || [ -x "$(CHROMIUM)" ]; then exit 0; \
	elif [ "$(CHROMIUM)" = /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 \
	    && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's chromium package for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
	  echo "error: no browser at $(CHROMIUM). Install Chromium (Debian, Ubuntu: 'apt-get install chromium'" >&2; \
	  echo "       as root), or use Playwright's own: '$(VENV_BIN)/python -m playwright install chromium'," >&2; \
	  echo "       then 'make test-lab CHROMIUM='." >&2; exit 1; fi

execute: install data ## Re-execute notebooks in place as the tests run them, to refresh their stored outputs (NB=notebooks/03_backpropagation.ipynb; default: all)
	$(TEST_ENV) $(VENV_BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 $(or $(NB),notebooks/*.ipynb)

lint: install ## Check the code and the notebooks with ruff
	$(VENV_BIN)/ruff check .

images: install data ## Regenerate the figures in images/
	MPLBACKEND=Agg $(VENV_PY) images/generate.py

benchmark: install data ## Time the training kernels
	$(VENV_PY) benchmarks/run.py

clean: ## Remove build artefacts and caches (keeps the venv and data/)
	rm -rf build dist .pytest_cache .ruff_cache .make-stamps tests_lab/screenshots $(ARM_DIR)
	find . \( -path ./$(VENV) -o -path ./data -o -path ./.git \) -prune -o \
	  \( -name __pycache__ -o -name '*.egg-info' -o -name .ipynb_checkpoints \) -type d \
	  -prune -exec rm -rf {} +
	find . \( -path ./$(VENV) -o -path ./data -o -path ./.git \) -prune -o \
	  \( -name '*.py[co]' -o -name '*.nbi' -o -name '*.nbc' \) -type f -exec rm -f {} +

# Forget the Jupyter kernel registration, but only if it points into this venv.
UNREGISTER_KERNEL := import os; from jupyter_client.kernelspec import KernelSpecManager; \
  m = KernelSpecManager(); name = "$(KERNEL_NAME)"; \
  argv = m.get_kernel_spec(name).argv if name in m.find_kernel_specs() else [""]; \
  ours = os.path.realpath(os.path.dirname(argv[0])) == os.path.realpath("$(VENV_BIN)"); \
  ours and (m.remove_kernel_spec(name), print("removed the Jupyter kernel", name))

distclean: clean ## Also remove the venv and its Jupyter kernel registration (keeps data/)
	-@[ ! -x "$(VENV_PY)" ] || $(VENV_PY) -c '$(UNREGISTER_KERNEL)'
	rm -rf $(VENV)

help: ## List the targets
	@echo "Usage: make [target] [PYTHON=python3] [VENV=.venv] [LAB_ARGS=...] [PYTEST_ARGS=...]"
	@echo
	@grep -E '^[a-z][a-z-]*:.*## ' $(firstword $(MAKEFILE_LIST)) \
	  | awk 'BEGIN { FS = ":.*## " } { printf "  %-15s %s\n", $$1, $$2 }'
