# Two commands on a fresh machine: `make run` starts everything, `make test` runs every test.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run stop test lint fmt install migrate bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,examples]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) manage.py run_local

stop:
	$(PY) manage.py run_local --stop

test: $(STAMP)
	@# the sign-on tests start a real OpenID provider (Node's oidc-provider, pinned in its package-lock.json)
	@if command -v npm >/dev/null 2>&1 && [ ! -d tests/support/oidc/node_modules/oidc-provider ]; then \
		npm ci --prefix tests/support/oidc --no-audit --no-fund --loglevel=error; fi
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

fmt: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

migrate: $(STAMP)
	$(PY) manage.py migrate

clean:
	rm -rf var/*.sqlite3 var/*.sqlite3-wal var/*.sqlite3-shm var/logs var/celerybeat-schedule*
