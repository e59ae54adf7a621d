# sendrail: `make run` runs the local stack, `make test` runs the tests.
# Both first bring the machine up to date through `make setup` (idempotent, quick when
# nothing changed).

VENV      := .venv
BIN       := $(VENV)/bin
KAFKA_LIBS := .cache/kafka/libs
# Real bounce messages for the parser's tests: flufl.bounce's source distribution carries
# about 115 of them with the addresses its own tests expect. Fetched, never committed.
CORPUS    := .cache/corpus
FLUFL_BOUNCE := 6.0.0
TEST_TIMEOUT_S := 900

BENCH_REPORT := reports/bench.json

.PHONY: setup run demo bench test test-unit test-integration lint typecheck schema clean

setup: system-packages $(VENV)/.installed $(KAFKA_LIBS)/.fetched $(CORPUS)/.fetched

system-packages:
	@sh sandbox/install-system-packages.sh

$(VENV)/.installed: pyproject.toml setup.py
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	@mkdir -p .cache
	@echo "installing sendrail and its dependencies into $(VENV)/ (log: .cache/pip.log)"
	@$(BIN)/pip install --disable-pip-version-check -e '.[dev]' > .cache/pip.log 2>&1 \
	    || { tail -n 30 .cache/pip.log; exit 1; }
	touch $@

$(KAFKA_LIBS)/.fetched: sandbox/kafka-pom.xml
	rm -rf $(KAFKA_LIBS)
	mvn -q -B -f sandbox/kafka-pom.xml dependency:copy-dependencies \
	    -DincludeScope=runtime -DoutputDirectory=$(abspath $(KAFKA_LIBS))
	touch $@

$(CORPUS)/.fetched: Makefile | $(VENV)/.installed
	rm -rf $(CORPUS) && mkdir -p $(CORPUS)
	$(BIN)/pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
	    flufl.bounce==$(FLUFL_BOUNCE) -d $(CORPUS)
	tar -xzf $(CORPUS)/flufl_bounce-$(FLUFL_BOUNCE).tar.gz -C $(CORPUS)
	touch $@

run: setup
	$(BIN)/sendrail run

demo: setup
	$(BIN)/sendrail demo

bench: setup
	$(BIN)/sendrail bench all --out $(BENCH_REPORT)

test: setup lint typecheck
	timeout $(TEST_TIMEOUT_S) $(BIN)/pytest -q

test-unit: setup
	$(BIN)/pytest -q tests/unit

test-integration: setup
	$(BIN)/pytest -q tests/integration tests/e2e

lint: setup
	$(BIN)/ruff check --quiet .

typecheck: setup
	rm -rf .cache/typecheck
	$(BIN)/python -c 'import setup; setup.link_tree(".cache/typecheck")'
	cd .cache/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p sendrail --no-error-summary

schema: setup
	$(BIN)/sendrail schema --out schemas

clean:
	rm -rf .cache/run .pytest_cache .mypy_cache .ruff_cache
