# Flow Manager: every command a developer or CI needs. `make test` on a fresh
# machine sets everything up and runs every check; `make run` serves.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
NODE_STAMP := node_modules/.installed
# The typed TypeScript client that tests/e2e/test_node_client.py runs.
INTEROP_NODE := tests/interop/node
INTEROP_NODE_STAMP := $(INTEROP_NODE)/node_modules/.installed
INTEROP_BUILD_STAMP := $(INTEROP_NODE)/dist/.built
ADDRESS ?= 127.0.0.1:50051
METRICS_ADDRESS ?= 127.0.0.1:9464
PROTOS := $(shell find protos -name '*.proto' | sort)
# protoc from grpcio-tools (pinned), writing messages, gRPC stubs and type stubs.
PROTOC = $(PY) -m grpc_tools.protoc -Iprotos \
	--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc \
	--python_out=$(1) --pyi_out=$(1) --grpc_python_out=$(1) --mypy_grpc_out=$(1) \
	$(PROTOS)

.PHONY: all run test check lint proto proto-check breaking pytest bench bench-smoke system-packages interop-node clean

all: test

$(VENV_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## run: serve on $(ADDRESS), metrics on $(METRICS_ADDRESS) (set-up included)
run: $(VENV_STAMP)
	$(PY) -m flowservice --address $(ADDRESS) --metrics-address $(METRICS_ADDRESS)

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

## pytest: the test suite (it needs the Debian tools above: h2load, nginx, dot;
## its Node client test the built TypeScript client)
pytest: $(VENV_STAMP) $(NODE_STAMP) system-packages $(INTEROP_BUILD_STAMP)
	$(VENV)/bin/pytest

## test: everything CI runs
test: lint proto-check breaking pytest

check: test

# breaking: `buf breaking` (the WIRE_JSON rules of buf.yaml) between protos/
# and the protos of the last commit on main, so an incompatible change to the
# API fails `make test`. The baseline:
# - protos/ has uncommitted changes (a developer at work): HEAD, the last
#   commit, so the edits are checked before they are committed.
# - otherwise (CI, on a clean clone of the submitted main, where the change
#   under review is already committed): the parent of the newest commit that
#   changed protos/, i.e. the newest API change against what it replaced. That
#   is HEAD~1 when the last commit changed the protos; unlike a plain HEAD~1 it
#   also catches a breaking proto commit followed by commits that leave the
#   protos alone (HEAD~1 would compare two identical trees). Older steps are
#   not checked again: they landed, and some of them were breaking.
# BREAKING_AGAINST=<git revision> picks the baseline (e.g. `main` on a branch).
# Without a baseline in the history (one commit, a shallow clone, no git) it
# says so and passes: there is nothing to compare with.
BREAKING_AGAINST ?=

## breaking: fail when protos/ breaks wire or JSON compatibility with the last commit on main
breaking: $(NODE_STAMP)
	@if ! git rev-parse --verify --quiet HEAD >/dev/null 2>&1; then \
		echo "breaking: skipped: no git history here, so no earlier protos to compare with"; \
		exit 0; \
	fi; \
	against='$(BREAKING_AGAINST)'; why="BREAKING_AGAINST"; \
	if [ -z "$$against" ] && [ -n "$$(git status --porcelain -- protos)" ]; then \
		against=HEAD; why="uncommitted changes under protos/"; \
	elif [ -z "$$against" ]; then \
		last=$$(git log -1 --format=%h -- protos); \
		against="$$last~1"; why="the parent of $$last, the newest commit that changed protos/"; \
	fi; \
	if ! sha=$$(git rev-parse --verify --quiet "$$against^{commit}"); then \
		if [ "$$(git rev-parse --is-shallow-repository)" = true ]; then \
			echo "breaking: skipped: $$against ($$why) is not in this shallow clone;" \
				"run 'git fetch --unshallow' to check the protos"; \
		else \
			echo "breaking: skipped: $$against ($$why) does not exist:" \
				"protos/ has no earlier version to compare with"; \
		fi; \
		exit 0; \
	fi; \
	echo "buf breaking: protos/ against $$against ($$why)"; \
	node_modules/.bin/buf breaking protos --against ".git#ref=$$sha,subdir=protos"

# Typed TypeScript client: npm ci from its own pinned package-lock.json, then
# its types generated from protos/ (and the vendored google.rpc protos) by the
# buf of the root package with protoc-gen-es from its node_modules (no remote
# plugins), then tsc (strict; type errors fail here). gen/ and dist/ are build
# output, not committed.
$(INTEROP_NODE_STAMP): $(INTEROP_NODE)/package.json $(INTEROP_NODE)/package-lock.json
	cd $(INTEROP_NODE) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(INTEROP_BUILD_STAMP): $(INTEROP_NODE_STAMP) $(NODE_STAMP) $(PROTOS) \
		$(INTEROP_NODE)/buf.gen.yaml $(INTEROP_NODE)/tsconfig.json \
		$(wildcard $(INTEROP_NODE)/proto-deps/*/*/*.proto $(INTEROP_NODE)/src/*.ts)
	rm -rf $(INTEROP_NODE)/dist
	cd $(INTEROP_NODE) && npm run --silent generate && npm run --silent build
	touch $@

## interop-node: install, generate and build the TypeScript client
interop-node: $(INTEROP_BUILD_STAMP)

# Installs run as root, or through sudo for a developer who is not.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

# Debian packages the tests need, as command:package pairs: h2load (the
# benchmark's load generator), nginx (the HTTP/2 proxy of tests/e2e/test_proxy.py;
# Debian's `nginx` has HTTP/2 and grpc_pass) and Graphviz's dot (flowctl's SVG
# and PNG output). The missing ones are installed in one apt-get run.
DEBIAN_TOOLS := h2load:nghttp2-client nginx:nginx dot:graphviz

## system-packages: install the Debian packages the tests need, if missing
system-packages:
	@missing=""; for pair in $(DEBIAN_TOOLS); do \
		tool=$${pair%%:*}; package=$${pair#*:}; \
		command -v $$tool >/dev/null 2>&1 || test -x /usr/sbin/$$tool || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get -o DPkg::Lock::Timeout=300 update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
			install -y -qq $$missing; \
	fi

$(BENCH_STAMP): $(VENV_STAMP) bench/requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $@

## bench: the full benchmark (minutes); prints the table, writes bench/results/latest.json
## and the results block of docs/performance.md
bench: $(BENCH_STAMP) system-packages
	$(PY) -m bench --docs docs/performance.md

## bench-smoke: every figure of the benchmark from a few hundred calls (seconds)
bench-smoke: $(BENCH_STAMP) system-packages
	$(PY) -m bench --smoke

clean:
	rm -rf $(VENV) node_modules .mypy_cache .pytest_cache .ruff_cache
	rm -rf $(INTEROP_NODE)/node_modules $(INTEROP_NODE)/gen $(INTEROP_NODE)/dist

# Longer runs of what `make test` runs briefly (tests/hostile/test_fuzz.py,
# tests/bench/test_soak_smoke.py); docs/reliability.md explains both.
FUZZ_EXAMPLES ?= 2000
SOAK_MINUTES ?= 3

.PHONY: fuzz soak

## fuzz: the hostile-request fuzz tests with FUZZ_EXAMPLES (default 2000) examples each and a
## random seed (printed; FUZZ_SEED=<seed> repeats a run, FUZZ_SURVEY=1 tallies every bad reply)
fuzz: $(VENV_STAMP)
	@seed=$${FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; \
	echo "fuzz seed $$seed (FUZZ_SEED=$$seed make fuzz repeats this run)"; \
	FUZZ_SEED=$$seed FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/pytest tests/hostile/test_fuzz.py \
		-p no:cacheprovider --runxfail --timeout=0 -s -q

## soak: SOAK_MINUTES (default 3) of mixed RPCs, 32 in flight and 10 % cancelled, against a
## real server; reports its RSS, fds, threads and asyncio tasks at start and end, calls/s, statuses
soak: $(VENV_STAMP)
	$(PY) -m bench.soak --minutes $(SOAK_MINUTES)
