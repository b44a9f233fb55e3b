# Two commands work on a fresh machine (Python 3.10+ with venv):
#   make demo   -- the main job on the bundled synthetic data
#   make test   -- the whole test suite (slow tests included), as CI runs it
# Both create .venv and install what they need the first time.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch; on a GPU machine install a CUDA build of torch before `make`.
TORCH  ?= torch==2.13.0
DEMO   ?= runs/demo

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

# The main job on synthetic data: generate -> extract -> train (LOSO) -> evaluate + report.
demo: install
	rm -rf $(DEMO)
	$(BIN)/mespot synth --small --subjects 4 --seconds 20 --out $(DEMO)/data
	$(BIN)/mespot extract $(DEMO)/data --out $(DEMO)/features.zarr --backend torch --resize 128
	$(BIN)/mespot train $(DEMO)/features.zarr --annotations '$(DEMO)/data/CAS(ME)^2code_final.xlsx' \
		--out $(DEMO)/run
	$(BIN)/mespot evaluate $(DEMO)/run --select last --select oracle

docs-images: install
	BIN=$(BIN) DEMO=$(DEMO) docs/screenshots.sh

clean:
	rm -rf build dist *.egg-info .pytest_cache
