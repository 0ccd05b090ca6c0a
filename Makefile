# Two commands for a fresh clone: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RETUNE := $(VENV)/.retune-installed

.PHONY: demo test lint typecheck unit tools bench clean

# the test prerequisites (the .venv, the emulators' tools, lint, mypy) are independent enough to
# overlap: on two cores this takes about 40 s off a fresh clone's `make test`
MAKEFLAGS += --jobs=2

# the editable install also compiles the decoder's fast path and the id hash (setup.py): rebuild when they change
# Python 3.11 only (pyproject.toml): checked before two minutes of installing, and a .venv made
# by another interpreter (an earlier `make PYTHON=...`) is made again rather than kept
IS_311 := -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'
$(STAMP): pyproject.toml requirements.lock setup.py $(wildcard schemas/decode/_fast*.pyx schemas/decode/_fast*.pxi detectors/*.pyx)
	@$(PYTHON) $(IS_311) 2>/dev/null || { echo "make: Lookout needs Python 3.11, and $(PYTHON) is $$($(PYTHON) -V 2>&1); run: make PYTHON=python3.11 (the interpreter's path)" >&2; exit 1; }
	@if [ -x $(BIN)/python ] && ! $(BIN)/python $(IS_311) 2>/dev/null; then echo "make: $(VENV) was made by another Python; making it again" >&2; rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	@# setuptools warns on every editable install that a folder named like a package may shadow it:
	@# true of any checkout (it is how the compiled parts are found in place), and it read as an error
	PYTHONWARNINGS='ignore:Editable installation' $(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

# the `retune` extra (Vertex AI / Kubeflow clients): the suite tests those actions
$(RETUNE): $(STAMP) requirements-retune.lock
	$(BIN)/pip install --quiet -r requirements-retune.lock
	touch $(RETUNE)

# Lookout's own bytecode, written up front: where PYTHONDONTWRITEBYTECODE is set (this CI
# machine sets it) no process writes it, and each `lookout` the suite starts compiled every
# module again, 0.3-0.4 s a process (a 10-line replay: 1.3-1.5 s against 0.9-1.1 s). Stale
# files are recompiled (timestamps are checked), and `__pycache__` is ignored by git.
BYTECODE := $(BIN)/python -m compileall -q -j 0 schemas worker detectors alerts

demo: $(STAMP)
	@$(BYTECODE) > /dev/null
	$(BIN)/lookout demo

# Test prerequisites: Java and the Cloud SDK's Pub/Sub emulator must be present (the suite
# starts the emulator itself); promtool is installed from Debian packages when apt-get exists.
tools:
	@./scripts/install-test-tools

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy schemas detectors worker alerts tests bench

# two test workers (pytest-xdist): most tests wait on emulators and `lookout` subprocesses, so
# two keep both cores busy; TEST_WORKERS=0 runs the suite in this one process
TEST_WORKERS ?= 2
test: $(STAMP) $(RETUNE) tools lint typecheck
	@$(BYTECODE) > /dev/null
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal

bench: $(STAMP) tools
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build lookout.egg-info \
		schemas/decode/_fastdecode.c schemas/decode/_fastdecode.*.so \
		detectors/_keyhash.c detectors/_keyhash.*.so detectors/_sorted_walks.c detectors/_sorted_walks.*.so \
		detectors/_special_loops.c detectors/_special_loops.*.so
