# petcd: the commands a fresh Debian machine needs.
#   make run    set up, then run one member on the default ports (client 2379, peer 2380)
#   make test   set up (apt packages included), then run the default test suite
#   make soak   long crash/simulation runs, kept out of `make test`
#   make bench  benchmarks (see bench/)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# chromium: the browser tests/playground drives with Playwright (never `playwright install`);
# patroni and postgresql: the slow Patroni-over-the-gateway test.
APT_PACKAGES := etcd-server etcd-client golang-etcd-server-dev chromium patroni postgresql python3-etcd
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test soak lint typecheck check proto bench apt venv clean

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 && $(PYTHON) -c 'import ensurepip' 2>/dev/null || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv python3-dev; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# etcd and etcdctl 3.4 from Debian: the reference the end-to-end tests compare against;
# chromium for the playground's browser test; patroni and postgresql for the slow
# Patroni-over-the-gateway test.
apt:
	@command -v etcdctl >/dev/null && command -v etcd >/dev/null && \
		command -v chromium >/dev/null && \
		command -v patroni >/dev/null && [ -d /usr/lib/postgresql ] && \
		[ -d /usr/share/gocode/src/go.etcd.io/etcd ] || \
		{ $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); }

run: $(STAMP)
	$(VENV)/bin/petcd $(ARGS)

test: apt $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -n 2 $(PYTEST_ARGS)

soak: apt $(STAMP)
	$(VENV)/bin/pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Regenerate the committed protobuf/gRPC code after editing a .proto file.
proto: $(STAMP)
	$(PY) -m petcd.pb.generate

bench: $(STAMP)
	@echo "see bench/README.md for the individual benchmark commands"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
