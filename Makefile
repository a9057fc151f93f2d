# Duet: `make run` serves the app on the embedded default; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000

.PHONY: install run test migrate bench clean

$(VENV)/.installed: requirements.txt requirements-test.txt package.json
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-test.txt
	npm install --no-audit --no-fund --silent
	touch $@

install: $(VENV)/.installed

migrate: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo

run: migrate
	$(PY) manage.py serve --port $(PORT)

test: install
	$(PY) scripts/testenv.py

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) var node_modules
