# ganserve: the two commands of the README, and the pieces they are made of.
# Python: the active virtualenv ($VIRTUAL_ENV), else .venv in this checkout (scripts/setup.sh makes it);
# `make PYTHON=python3 …` uses any other interpreter as it is.
ifdef VIRTUAL_ENV
PYTHON ?= $(VIRTUAL_ENV)/bin/python
else
PYTHON ?= .venv/bin/python
endif
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test setup-serve setup-test lint typecheck pytest bench screenshots experiments python

serve: setup-serve  ## set up and start the service on the shipped checkpoints
	$(PYTHON) -m app --host $(HOST) --port $(PORT)

test: setup-test lint typecheck pytest  ## set up and run the whole test suite

setup-serve:
	PYTHON=$(PYTHON) scripts/setup.sh serve

setup-test:
	PYTHON=$(PYTHON) scripts/setup.sh test

python:  # the pieces below need a set-up environment
	@$(PYTHON) -c "import importlib.metadata as m; m.version('ganserve')" 2>/dev/null || { echo "make: $(PYTHON) has no ganserve: run 'make setup-test' first" >&2; exit 1; }

lint: python
	$(PYTHON) -m ruff check .

typecheck: python
	$(PYTHON) -m mypy

pytest: python
	$(PYTHON) -m pytest -q -p no:cacheprovider --durations=15

screenshots: python  ## regenerate docs/screenshots/ from the shipped checkpoints
	$(PYTHON) scripts/screenshots.py

bench: python  ## serving (vs LitServe and a naive server) and training benchmarks → docs/performance.md
	$(PYTHON) bench/serving.py
	$(PYTHON) bench/training.py
	$(PYTHON) bench/conditioning.py

experiments: python  ## re-run the seed articles' experiments → docs/experiments.md (~2 h of CPU; resumable)
	$(PYTHON) -m training experiments upsampling conditioning --points 1,2,4 --seeds 0,1,2 \
		--samples 5000 --width 32 --threads 1 --work runs/experiments --out docs/experiments.md
