# Two commands work on a fresh machine (Python 3.10+ with venv):
#   make demo   -- the main job on the bundled synthetic data
#   make test   -- the whole test suite (slow tests included), as CI runs it
# Both create .venv and install what they need the first time.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch; on a GPU machine install a CUDA build of torch before `make`.
TORCH  ?= torch==2.13.0
DEMO   ?= data/synth-demo

.PHONY: install test test-fast demo docs-images clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

demo: install
	$(BIN)/mespot synth --out $(DEMO) --overwrite

docs-images: install
	$(BIN)/mespot synth --small --out build/docs-synth --overwrite --preview docs/images/synth_preview.png

clean:
	rm -rf build dist *.egg-info .pytest_cache
