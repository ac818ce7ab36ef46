# Flow Manager: every command a developer or CI needs. `make test` on a fresh
# machine sets everything up (`setup`) and runs every check; `make run` serves.
# The commands come first, then the provisioning they depend on.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Provisioning leaves stamp files, so each step runs again only when its inputs change.
VENV_STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
NODE_STAMP := node_modules/.installed
# The typed TypeScript client that tests/e2e/test_node_client.py runs.
INTEROP_NODE := tests/interop/node
INTEROP_NODE_STAMP := $(INTEROP_NODE)/node_modules/.installed
INTEROP_BUILD_STAMP := $(INTEROP_NODE)/dist/.built
# The web console (docs/console.md), built into console/dist, which the server serves.
CONSOLE_STAMP := console/node_modules/.installed
CONSOLE_BUILD_STAMP := console/dist/.built
ADDRESS ?= 127.0.0.1:50051
METRICS_ADDRESS ?= 127.0.0.1:9464
# The HTTP port: Connect, gRPC-Web and the web console (docs/http.md); empty turns it off.
HTTP_ADDRESS ?= 127.0.0.1:8080
# BREAKING_AGAINST=<git revision> picks the baseline of `make breaking` (e.g.
# `main` on a branch); scripts/breaking.py says which one it picks otherwise.
BREAKING_AGAINST ?=
PROTOS := $(shell find protos -name '*.proto' | sort)
# protoc from grpcio-tools (pinned), writing messages, gRPC stubs and type stubs.
PROTOC = $(PY) -m grpc_tools.protoc -Iprotos \
	--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc \
	--python_out=$(1) --pyi_out=$(1) --grpc_python_out=$(1) --mypy_grpc_out=$(1) \
	$(PROTOS)

.PHONY: all setup run test check lint proto proto-check breaking pytest bench bench-smoke system-packages interop-node console clean

all: test

## run: serve on $(ADDRESS), HTTP on $(HTTP_ADDRESS), metrics on $(METRICS_ADDRESS) (set-up included)
run: setup
	$(PY) -m flowservice --address '$(ADDRESS)' --metrics-address '$(METRICS_ADDRESS)' \
		--http-address '$(HTTP_ADDRESS)'

## test: everything CI runs (set-up included)
test: setup lint proto-check breaking pytest

check: test

## lint: ruff (lint and format), mypy strict, buf lint
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	node_modules/.bin/buf lint

## pytest: the test suite
pytest: setup
	$(VENV)/bin/pytest

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

## breaking: fail when protos/ breaks wire or JSON compatibility with the last commit on main
breaking: setup
	BREAKING_AGAINST='$(BREAKING_AGAINST)' $(PY) scripts/breaking.py node_modules/.bin/buf

## bench: the full benchmark (minutes); prints the table, writes bench/results/latest.json
## and the results block of docs/performance.md
bench: setup $(BENCH_STAMP)
	$(PY) -m bench --docs docs/performance.md
	$(PY) -m bench.replicas --docs docs/replicas.md

## bench-smoke: every figure of the benchmark from a few hundred calls (seconds)
bench-smoke: setup $(BENCH_STAMP)
	$(PY) -m bench --smoke

## bench-mesh: what a grpc task costs over calling the same service directly, and the worker round trip
.PHONY: bench-mesh
bench-mesh: setup
	$(PY) -m bench.mesh

## bench-history: the history's cost alone, every round printed: SQLite vs --store memory, StartExecution
.PHONY: bench-history
bench-history: setup
	$(PY) -m bench.history

## bench-core: the compiled-core experiment of docs/performance.md (Rust; not CI, not `make bench`):
## builds bench/core with Debian's PyO3 sources (installed if missing), offline, then prints each
## figure: in-process, then in the server (about 3 minutes in all)
.PHONY: bench-core
bench-core: setup
	@dpkg -s librust-pyo3-dev >/dev/null 2>&1 || $(SUDO) env DEBIAN_FRONTEND=noninteractive \
		apt-get -o DPkg::Lock::Timeout=300 install -y -qq librust-pyo3-dev
	cd bench/core && PATH="$$HOME/.cargo/bin:$$PATH" PYO3_PYTHON='$(abspath $(PY))' \
		cargo build --release --offline
	cp bench/core/target/release/lib_flowcore.so \
		bench/core/_flowcore$$($(PY) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
	$(PY) -m bench.core
	$(PY) -m bench.core.server

clean:
	rm -rf $(VENV) node_modules .mypy_cache .pytest_cache .ruff_cache
	rm -rf $(INTEROP_NODE)/node_modules $(INTEROP_NODE)/gen $(INTEROP_NODE)/dist
	rm -rf console/node_modules console/src/gen console/dist

# ---------------------------------------------------------------------------
# Provisioning: what `setup` installs and builds.

## setup: provision everything: .venv, npm packages, Debian tools, the TypeScript client
setup: $(VENV_STAMP) $(NODE_STAMP) system-packages $(INTEROP_BUILD_STAMP) $(CONSOLE_BUILD_STAMP)

$(VENV_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

$(BENCH_STAMP): $(VENV_STAMP) bench/requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $@

# buf (lint, breaking, code generation), pinned by package-lock.json.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Installs run as root, or through sudo for a developer who is not.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

# Debian packages the tests need, as command:package pairs: h2load (the
# benchmark's load generator), nginx (the HTTP/2 proxy of tests/e2e/test_proxy.py;
# Debian's `nginx` has HTTP/2 and grpc_pass), Graphviz's dot (flowctl's SVG
# and PNG output) and openssl (docs/security.md's try-out certificates, made by
# tests/security/test_documented.py), Chromium (the browser of tests/console/,
# driven by Playwright: its own browser download cannot work here) and
# PostgreSQL's initdb (the server that tests/history/ starts for the PostgreSQL
# store; Debian keeps it in /usr/lib/postgresql/N/bin). The missing ones are
# installed in one apt-get run.
DEBIAN_TOOLS := h2load:nghttp2-client nginx:nginx dot:graphviz openssl:openssl chromium:chromium initdb:postgresql

## system-packages: install the Debian packages the tests need, if missing
system-packages:
	@missing=""; for pair in $(DEBIAN_TOOLS); do \
		tool=$${pair%%:*}; package=$${pair#*:}; \
		command -v $$tool >/dev/null 2>&1 || test -x /usr/sbin/$$tool || \
			ls /usr/lib/postgresql/*/bin/$$tool >/dev/null 2>&1 || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get -o DPkg::Lock::Timeout=300 update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
			install -y -qq $$missing; \
	fi

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

# The web console: npm ci from console/package-lock.json, its client generated
# from protos/ as the interop client's is, type-checked by tsc (strict), then
# bundled by vite into console/dist (no CDN at run time). dist/ and src/gen/
# are build output, not committed: every machine builds the same bundle from
# the same pinned packages.
CONSOLE_SOURCES := $(wildcard console/src/*.ts console/src/*.css console/src/pages/*.ts) \
	console/index.html console/vite.config.ts console/tsconfig.json console/buf.gen.yaml \
	$(wildcard examples/*.json)

$(CONSOLE_STAMP): console/package.json console/package-lock.json
	cd console && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(CONSOLE_BUILD_STAMP): $(CONSOLE_STAMP) $(NODE_STAMP) $(PROTOS) $(CONSOLE_SOURCES)
	cd console && npm run --silent generate && npm run --silent typecheck && npm run --silent build -- --logLevel warn
	touch $@

## console: install, generate, type-check and build the web console into console/dist
console: $(CONSOLE_BUILD_STAMP)

## console-screenshots: rerun the console's browser tests, writing docs/images/console-*.png
.PHONY: console-screenshots
console-screenshots: setup
	CONSOLE_SCREENSHOTS=1 $(VENV)/bin/pytest tests/console -q

# Longer runs of what `make test` runs briefly (tests/hostile/test_fuzz.py,
# tests/bench/test_soak_smoke.py); docs/reliability.md explains both.
FUZZ_EXAMPLES ?= 2000
SOAK_MINUTES ?= 3

.PHONY: fuzz soak

## fuzz: the hostile-request fuzz tests with FUZZ_EXAMPLES (default 2000) examples each and a
## random seed (printed; FUZZ_SEED=<seed> repeats a run, FUZZ_SURVEY=1 tallies every bad reply)
fuzz: setup
	@seed=$${FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; \
	echo "fuzz seed $$seed (FUZZ_SEED=$$seed make fuzz repeats this run)"; \
	FUZZ_SEED=$$seed FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/pytest tests/hostile/test_fuzz.py \
		-p no:cacheprovider --runxfail --timeout=0 -s -q

## soak: SOAK_MINUTES (default 3) of mixed RPCs, 32 in flight and 10 % cancelled, against a
## real server; reports its RSS, fds, threads and asyncio tasks at start and end, calls/s, statuses
soak: setup $(BENCH_STAMP)
	$(PY) -m bench.soak --minutes $(SOAK_MINUTES)
