# bertcli developer commands. `make demo` and `make test` each install what they need on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build of torch goes in first, by itself: a bare `torch` requirement would pull several GB of CUDA
# packages. On a GPU machine install the torch build you want into .venv first, or override: make install TORCH=torch
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed-stamp
DEMO   := runs/demo

.PHONY: install demo test lint bench docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Runs every stage on the small corpus that ships in data/demo/, on CPU, into runs/demo/.
demo: install
	$(VENV)/bin/bertcli tokenize --config configs/demo/tokenize.yaml --overwrite --preview 1
	$(VENV)/bin/bertcli pretrain --config configs/demo/pretrain.yaml --overwrite
	$(VENV)/bin/bertcli finetune --config configs/demo/finetune.yaml --overwrite
	$(VENV)/bin/bertcli eval --config configs/demo/eval.yaml --overwrite

test: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check bertcli tests benchmarks
	$(VENV)/bin/ruff format --check bertcli tests benchmarks README.md docs

bench: install
	$(PY) benchmarks/bench_tokenize.py
	$(PY) benchmarks/bench_pretrain.py
	$(PY) benchmarks/bench_finetune.py
	$(PY) benchmarks/bench_eval.py

# docs/config.md is generated from the pydantic schemas; tests/unit/test_docs.py fails when it is out of date.
docs: install
	$(PY) -m bertcli.schema.docs > docs/config.md.tmp && mv docs/config.md.tmp docs/config.md

clean:
	rm -rf runs .pytest_cache
