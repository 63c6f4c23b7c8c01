# Set-up and everyday commands. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8080
# The self-service bot answers these channels under `make run` (flows: config/flows.toml).
BOT_CHANNELS ?= {"telegram": "bot", "webchat": "bot"}
# Pages that may open a web chat: this server's own (its /webchat/try sample page).
CHAT_ORIGINS ?= ["http://$(HOST):$(PORT)", "http://localhost:$(PORT)"]

.PHONY: install run test bench lint clean vendor

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/contact-center migrate
	$(BIN)/contact-center demo
	@echo ""
	@echo "  Contact center: http://$(HOST):$(PORT)/   (health: /healthz, /readyz)"
	@echo "  Demo login:     admin / admin-demo-2026   (agents: <login> / agent-demo-2026)"
	@echo "  Try the chat:   http://$(HOST):$(PORT)/webchat/try   (the web chat and its bot, as a customer)"
	@echo ""
	CC_BOT__CHANNELS='$(BOT_CHANNELS)' CC_WEBCHAT__ALLOWED_ORIGINS='$(CHAT_ORIGINS)' \
		$(BIN)/contact-center serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest -q

bench: install
	@set -e; for script in bench/[!_]*.py; do \
		echo "== $$script"; $(BIN)/python $$script; \
	done

# Refresh the vendored front-end libraries (Chart.js) from npm, at the versions the lock
# file pins; the copies in contact_center/web/static/vendor are committed.
vendor:
	npm ci --no-audit --no-fund
	npm run vendor

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
