# mailserver: the two commands that matter are `make run` and `make test`.
#
#   make run    install into .venv (first time / when setup.cfg changes), then
#               run the dev server (conf/mailserver.toml, state in var/) and
#               print "demo login: ADDRESS PASSWORD"
#   make test   install, Debian test dependencies (scripts/test-deps.txt),
#               ruff, then the whole pytest suite
#   make lint   ruff check + ruff format --check
#   make clean  remove .venv, var/ and build leftovers

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= conf/mailserver.toml
PYTEST_ARGS ?=

# Cluster storage servers for the cassandra-marked tests (scripts/servers/*.sh):
# SERVERS_START := bash scripts/servers/start.sh
# SERVERS_STOP  := bash scripts/servers/stop.sh

.PHONY: all venv run test lint format clean

all: test

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || bash scripts/test-deps.sh python3-venv
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

run: venv
	@$(BIN)/mailserver run-dev -c $(CONFIG)

test: venv
	bash scripts/test-deps.sh
	$(BIN)/ruff check .
	bash scripts/servers/with-servers.sh $(BIN)/pytest --ignore=tests/cluster $(PYTEST_ARGS)
	NODES=3 bash scripts/servers/with-servers.sh $(BIN)/pytest tests/cluster

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
