# Two entry points, both from a fresh clone: `make app` and `make test`.
# torch==2.13.0 is installed first, on its own: it is the CPU build, and letting another
# package pull a bare `torch` can fetch a multi-GB CUDA build instead.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8501

.PHONY: app test chromium lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip

$(VENV)/.installed-app: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,transformers,ray,onnx]'
	touch $@ $(VENV)/.installed-app

app: $(VENV)/.installed-app
	$(BIN)/streamlit run app.py --server.port $(PORT) --browser.gatherUsageStats false

# Debian's chromium drives the browser tests (Playwright cannot download a browser here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }

test: $(VENV)/.installed-test chromium
	$(BIN)/ruff check .
	$(BIN)/pytest --durations=25

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

bench: $(VENV)/.installed-test
	$(BIN)/python bench/slider_move.py
