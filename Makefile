# Two entry points: `make demo` (the main job) and `make test`. Both bootstrap everything on a machine that
# has only Python 3.11, gcc, make and git, and are fast the second time.
PYTHON ?= python3
VENV := .venv
TOOLS := .tools
UV := $(TOOLS)/bin/uv
UV_VERSION := 0.13.9
SYNCED := $(VENV)/.synced
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_COMPILE_BYTECODE := 1
export UV_LINK_MODE := copy

.PHONY: demo test test-fast check bench engine bubblewrap clean

demo: $(SYNCED)
	$(VENV)/bin/sandserve demo

# Lint, format, the import layers and the types first: any finding fails the run.
check: $(SYNCED)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

# Tests run on one worker more than the machine has cores (at most four): most of a test's time is spent
# waiting on a server, a stand-in or a child process, which another worker's test fills (2 cores: the suite
# took 489 s on two workers, 405 s on three).
TEST_WORKERS = $(shell $(PYTHON) -c 'import os; print(min(4, (os.cpu_count() or 1) + 1))')
test: check engine
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# The fast tier: no process started, no engine build, seconds. Its temporary folders (two per test, a ledger
# in many) go to memory where there is some (/dev/shm): on a busy disk, making, syncing and deleting them took
# longer than the tests. They are deleted after a passing run and kept (the path printed) after a failing one.
test-fast: $(SYNCED)
	@tmp=$$(mktemp -d /dev/shm/sandserve-test-fast.XXXXXX 2>/dev/null) || tmp=""; \
	$(VENV)/bin/python -m pytest -q tests/unit $${tmp:+--basetemp=$$tmp}; rc=$$?; \
	if [ -n "$$tmp" ]; then \
	  if [ $$rc = 0 ]; then rm -rf "$$tmp"; else echo "the tests' temporary folders are kept in $$tmp"; fi; \
	fi; exit $$rc

# The llama-server build (minutes, once; cached in the user's cache directory) and the tiny model; and
# bubblewrap, the boundary local tool calls run in (installed when missing and we are root on Debian).
engine: $(SYNCED) bubblewrap
	$(VENV)/bin/sandserve engine build

bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q bubblewrap >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q bubblewrap >/dev/null; }; }; } || \
	  echo "note: bubblewrap (bwrap) is not installed: local tool calls need it (apt-get install bubblewrap)"

bench: $(SYNCED) engine
	for script in bench/bench_*.py; do $(VENV)/bin/python $$script || exit 1; done

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(SYNCED): $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	touch $(SYNCED)

clean:
	rm -rf $(VENV) $(TOOLS)
