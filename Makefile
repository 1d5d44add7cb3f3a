# relance — the two commands of the quick start are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
BENCH_STAGES := ingest escalation notifier publish e2e replay verify

.PHONY: demo workspace test unit browser lint format contract deploy-check clean bench $(addprefix bench-,$(BENCH_STAGES))

$(BIN)/relance: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

## Run relance end to end on SQLite with an in-process broker and a generated sample.
demo: $(BIN)/relance
	$(BIN)/relance demo

## The web workspace and the JSON API on the ledger `make demo` left (http://127.0.0.1:8000/, sign in as demo).
workspace: $(BIN)/relance
	$(BIN)/relance workspace

## Unit, integration, end-to-end and browser tests (integration and e2e against real PostgreSQL and RabbitMQ, the
## browser tests with Debian's chromium), then lint.
test: $(BIN)/relance
	$(BIN)/pytest
	$(MAKE) --no-print-directory lint

## The unit tests alone: no PostgreSQL, no RabbitMQ, no Docker (a test that needs a server is marked and left out).
unit: $(BIN)/relance
	$(BIN)/pytest tests/unit -m "not integration and not e2e"

## The browser tests alone (part of `make test`): Playwright driving Debian's chromium (apt-get install chromium);
## screenshots in .browser-screenshots/.
browser: $(BIN)/relance
	$(BIN)/pytest tests/browser

## The deployment files (part of `make test`): both kustomizations built and validated against the Kubernetes and KEDA
## schemas, compose.yaml against the Compose Specification, the RabbitMQ definitions, the dashboard and the alerts.
deploy-check: $(BIN)/relance
	$(BIN)/pytest -q tests/deploy/test_kubernetes.py tests/deploy/test_compose.py tests/deploy/test_rabbitmq.py \
		tests/deploy/test_monitoring.py

## Ruff (check and format) and mypy strict, over the code and the tests.
lint: $(BIN)/relance
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(BIN)/relance
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Arguments for every stage, e.g. make bench BENCH_ARGS="--customers 20000 --invoices 100000".
BENCH_ARGS ?=

## Every stage's benchmark on real PostgreSQL + RabbitMQ, each next to a baseline measured in the same run.
bench: $(BIN)/relance
	$(BIN)/python -m tests.benchmarks.suite -- $(BENCH_ARGS)

## One stage's benchmark: bench-ingest, bench-escalation, bench-notifier, bench-publish, bench-e2e, bench-replay, bench-verify.
$(addprefix bench-,$(BENCH_STAGES)): bench-%: $(BIN)/relance
	$(BIN)/python -m tests.benchmarks.bench_$* $(BENCH_ARGS)

## Regenerate the published contract (JSON Schema + AsyncAPI) from the models.
contract: $(BIN)/relance
	$(BIN)/relance contract export

clean:
	rm -rf demo-output bench-results.jsonl .browser-screenshots .pytest_cache .mypy_cache .ruff_cache .hypothesis
