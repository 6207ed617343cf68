# The README's two commands are `make run` and `make test`; `make install` is their shared set-up.
PY ?= python3
RECIPE ?= default

.PHONY: install run demo test lint train bench

install:
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt

# the explorer on http://127.0.0.1:7860 with the shipped model
run: install
	$(PY) app.py

# the command-line demo: a 64-frame video with the shipped model
demo: install
	$(PY) -m backend generate --prompt "a red circle and a square on blue stripes behind a wall" --frames 64 --out out/demo.mp4

test: install
	$(PY) -m pytest -q tests

# lint and format check (config in pyproject.toml); `ruff format .` rewrites, `ruff check --fix .` fixes
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Training, one resumable stage at a time (see assets/models/MODEL_CARD.md).
train:
	$(PY) -m backend.train ae --recipe $(RECIPE)
	$(PY) -m backend.train teacher --recipe $(RECIPE)
	$(PY) -m backend.train student --recipe $(RECIPE)

bench:
	$(PY) -m backend.bench model
