# Entry points. Every target sets up .venv on first use (pinned by constraints.txt) and is
# a no-op for setup afterwards. Variables: STUDY=name (default regularization), TRIALS=n, WORKERS=n (runs at once),
# EXECUTOR=serial|local|ray, ARGS="extra suite options", PORT= and HOST= for the UI (default:
# $SUITE_UI_PORT or 5000, $SUITE_UI_HOST or 127.0.0.1), PYTHON= the interpreter .venv is made
# with (3.11 or later; default python3). Data root: SUITE_DATA_DIR (default ./data); store:
# MLFLOW_TRACKING_URI (default sqlite:///mlflow.db).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
STUDY  ?= regularization
PORT   ?=
HOST   ?=
RUN    := $(if $(EXECUTOR),--executor $(EXECUTOR)) $(if $(WORKERS),--workers $(WORKERS))

.PHONY: setup system-deps study report check tune smoke test bench ui list server server-stop clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,ray,server]'
	@touch $(STAMP)

study: $(STAMP)
	$(BIN)/suite study $(STUDY) $(RUN) $(ARGS)

report: $(STAMP)
	$(BIN)/suite report $(STUDY) $(ARGS)

check: $(STAMP)
	$(BIN)/suite check $(STUDY) $(ARGS)

tune: $(STAMP)
	$(BIN)/suite tune $(STUDY) $(if $(TRIALS),--trials $(TRIALS)) $(RUN) $(ARGS)

smoke: $(STAMP)
	$(BIN)/suite smoke $(RUN) $(ARGS)

list: $(STAMP)
	$(BIN)/suite list $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py $(ARGS)

ui: $(STAMP)
	$(BIN)/suite ui $(if $(PORT),--port $(PORT)) $(if $(HOST),--host $(HOST)) $(ARGS)

# A team store here: PostgreSQL (Debian's postgresql) + an MLflow tracking server, under .server/; prints the URIs to export.
server: $(STAMP)
	$(BIN)/suite server start $(ARGS)

server-stop: $(STAMP)
	$(BIN)/suite server stop $(ARGS)

# What the browser, Fashion-MNIST and team-store tests need from Debian (root; CI runs this before `make test`).
system-deps:
	@missing="$$(for p in chromium chromium-driver dataset-fashion-mnist postgresql gcc libc6-dev; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done)"; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

clean-venv:
	rm -rf $(VENV)
