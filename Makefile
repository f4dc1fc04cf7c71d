# Everything runs from a local virtualenv that the first target creates; nothing else needs installing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: install demo dev test lint docs format bench bench-dashboard screenshots clean

$(STAMP): pyproject.toml
	@echo "installing scalr_queue and its dev tools into $(VENV) with pip (first run: about 30 s)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install  ## the template app's backend and worker on a local Redis, start to finish
	$(BIN)/python scripts/demo.py

dev: install  ## the same stack, long-running: backend with --reload, worker with --watch (Ctrl-C stops)
	$(BIN)/python scripts/dev.py

test: lint  ## lint, then the whole test suite against a throwaway redis-server
	$(BIN)/python -m pytest -n 2

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mkdocs build --strict --quiet --site-dir build/site

docs: install  ## the documentation site, built strictly, in build/site
	$(BIN)/mkdocs build --strict --site-dir build/site

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install  ## scalr_queue beside plain arq and the peers (saq, dramatiq), same run, same Redis
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python bench/run.py
	$(BIN)/python bench/middleware_cost.py
	$(BIN)/python bench/workflow_cost.py
	$(BIN)/python bench/run.py --only observability

bench-dashboard: install  ## dashboard page times with 100,000 queued and 10,000 failed jobs
	$(BIN)/python bench/dashboard_pages.py

screenshots: install  ## every dashboard page in headless Chromium, in build/screenshots/ (--docs: refresh docs/img)
	$(BIN)/python scripts/screenshots.py $(ARGS)

chaos: install  ## the fault suite at scale: SIGKILLs, Redis restart and stall, SIGTERM cycles, poison, full Redis
	$(BIN)/python scripts/chaos.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
