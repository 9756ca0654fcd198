# ganserve: the two commands of the README, and the pieces they are made of.
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test setup-serve setup-test lint typecheck pytest bench screenshots experiments

serve: setup-serve  ## set up and start the service on the shipped checkpoints
	$(PYTHON) -m app --host $(HOST) --port $(PORT)

test: setup-test lint typecheck pytest  ## set up and run the whole test suite

setup-serve:
	PYTHON=$(PYTHON) scripts/setup.sh serve

setup-test:
	PYTHON=$(PYTHON) scripts/setup.sh test

lint:
	$(PYTHON) -m ruff check .

typecheck:
	$(PYTHON) -m mypy

pytest:
	$(PYTHON) -m pytest -q -p no:cacheprovider --durations=15

screenshots:  ## regenerate docs/screenshots/ from the shipped checkpoints
	$(PYTHON) scripts/screenshots.py

bench:  ## serving (vs a naive server) and training benchmarks → docs/performance.md
	$(PYTHON) bench/serving.py
	$(PYTHON) bench/training.py
	$(PYTHON) bench/conditioning.py

experiments:  ## re-run the seed articles' experiments → docs/experiments.md (~2 h of CPU; resumable)
	$(PYTHON) -m training experiments upsampling conditioning --points 1,2,4 --seeds 0,1,2 \
		--samples 5000 --width 32 --threads 1 --work runs/experiments --out docs/experiments.md
