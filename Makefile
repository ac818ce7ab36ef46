# Flow Manager: every command a developer or CI needs. `make test` on a fresh
# machine sets everything up and runs every check; `make run` serves.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
ADDRESS ?= 127.0.0.1:50051
PROTOS := $(shell find protos -name '*.proto' | sort)
# protoc from grpcio-tools (pinned), writing messages, gRPC stubs and type stubs.
PROTOC = $(PY) -m grpc_tools.protoc -Iprotos \
	--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc \
	--python_out=$(1) --pyi_out=$(1) --grpc_python_out=$(1) --mypy_grpc_out=$(1) \
	$(PROTOS)

.PHONY: all run test check lint proto proto-check pytest bench clean

all: test

$(VENV_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## run: serve on $(ADDRESS) (set-up included)
run: $(VENV_STAMP)
	$(PY) -m flowservice --address $(ADDRESS)

## proto: regenerate generated/ from protos/
proto: $(VENV_STAMP)
	rm -rf generated && mkdir -p generated
	$(call PROTOC,generated)

## proto-check: fail when generated/ is not what `make proto` would write
proto-check: $(VENV_STAMP)
	@tmp=$$(mktemp -d) && \
	$(call PROTOC,$$tmp) && \
	if diff -r $$tmp generated; then echo "generated/ is fresh"; rm -rf $$tmp; \
	else echo "generated/ is stale: run 'make proto' and commit the result" >&2; rm -rf $$tmp; exit 1; fi

## lint: ruff (lint and format), mypy strict, buf lint
lint: $(VENV_STAMP) $(NODE_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	node_modules/.bin/buf lint

## pytest: the test suite
pytest: $(VENV_STAMP) $(NODE_STAMP)
	$(VENV)/bin/pytest

## test: everything CI runs
test: lint proto-check pytest

check: test

clean:
	rm -rf $(VENV) node_modules .mypy_cache .pytest_cache .ruff_cache
