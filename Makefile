# Two commands for a newcomer: `make demo` and `make test`. Each builds its own virtualenv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The demo needs only the package and its fake Pinterest, not the development tools.
DEMO_STAMP := $(VENV)/.demo-installed

.PHONY: demo test lint typecheck pytest jstest docs bench system-deps clean
# Node tools the browser tests inject into pages (axe-core), from the committed lock file.
JS_TOOLS := tests/js/node_modules/.installed

$(STAMP): pyproject.toml requirements-dev.txt requirements-docs.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# The distribution was called "dedupkit" before 0.1.0 (that name is another project's).
	$(BIN)/python -m pip uninstall -q -y dedupkit 2>/dev/null || true
	$(BIN)/python -m pip install -q -e '.[redis,postgres,testing,metrics]' -r requirements-dev.txt -r requirements-docs.txt
	touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[testing]'
	touch $(DEMO_STAMP)

## demo: the storefront on http://127.0.0.1:5000 with an embedded fake Pinterest
## (another port: PORT=5001 make demo)
## (on PostgreSQL: DEDUPKIT_QUEUE_URL=postgresql+psycopg://user@host/db make demo)
demo: $(DEMO_STAMP)
	@# The shell decides: a comma inside make's "if" function would end its argument.
	@case "$$DEDUPKIT_QUEUE_URL" in postgres*) $(BIN)/python -m pip install -q -e '.[testing,postgres]';; esac
	$(BIN)/python -m demo_site $(if $(PORT),--port $(PORT))

## test: system packages (Chromium, redis-server, PostgreSQL) when we can install them, then the whole suite
test: system-deps $(STAMP) lint typecheck jstest docs pytest

system-deps:
	@bash .ci/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

jstest:
	node --test tests/js/

pytest: $(STAMP) $(JS_TOOLS)
	$(BIN)/pytest -q -p no:cacheprovider

$(JS_TOOLS): tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $(JS_TOOLS)

## docs: the documentation site in docs/_build/html, warnings as errors, and its runnable examples
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	$(BIN)/pytest -q -p no:cacheprovider tests/test_docs.py

## bench: ratios measured side by side in one run (see bench/README.md)
bench: $(STAMP)
	test -x bench/.venv/bin/python || $(PYTHON) -m venv bench/.venv
	bench/.venv/bin/python -m pip install -q -r bench/requirements.txt
	$(BIN)/python bench/snippet_size.py
	$(BIN)/python bench/delivery_cpu.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/hot_path.py
	$(BIN)/python bench/http_load.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/outage_drain.py
	npm install --prefix bench --no-audit --no-fund --silent
	$(BIN)/python bench/bots.py
	$(BIN)/python bench/postgres.py

clean:
	rm -rf $(VENV) dist build .mypy_cache .ruff_cache docs/_build tests/js/node_modules tests/artifacts

## minify: static/*.min.js (what is served and inlined) from the readable sources in static/
minify: $(STAMP)
	$(BIN)/python -c "from dedupkit.web.assets import write_minified; print(*write_minified())"
