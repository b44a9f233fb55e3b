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
PRETRAIN ?= runs/pretrain

.PHONY: install test test-fast stress demo pretrained docs-images clean

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

# The process and timing tests many times, without and with every core loaded (hours on 2
# cores; not part of `make test`): counts in benchmarks/results/test_stress.json.
stress: install
	$(BIN)/python tests/stress.py

# The main job on synthetic data: generate -> extract -> train (LOSO) -> evaluate + report, then
# `mespot predict` on a subject the run never saw (rendered with another seed), scored.
demo: install
	rm -rf $(DEMO)
	$(BIN)/mespot synth --small --subjects 8 --seconds 10 --out $(DEMO)/data
	$(BIN)/mespot extract $(DEMO)/data --out $(DEMO)/features.zarr --backend torch --resize 128
	$(BIN)/mespot train $(DEMO)/features.zarr --annotations '$(DEMO)/data/CAS(ME)^2code_final.xlsx' \
		--out $(DEMO)/run
	$(BIN)/mespot evaluate $(DEMO)/run --select last --select oracle
	$(BIN)/mespot synth --small --subjects 1 --videos-per-subject 4 --seconds 10 --seed 1 --out $(DEMO)/new-subject
	@echo "mespot predict on a new subject (no fold saw it; all 8 folds together, as by default):"
	$(BIN)/mespot predict $(DEMO)/new-subject --model $(DEMO)/run --out $(DEMO)/predicted -q \
		--annotations '$(DEMO)/new-subject/CAS(ME)^2code_final.xlsx'

# The shipped weights of `mespot train --init pretrained` (spotting/weights/), remade from the
# synthetic pretraining sets A and B (benchmarks/quality/pretrain-*.yaml; seeds reserved for
# pretraining). Rendering costs about an hour per set on 2 cores; see README: Synthetic pretraining.
pretrained: install
	for set in a b; do \
		$(BIN)/mespot synth --config benchmarks/quality/pretrain-$$set.yaml \
			--out $(PRETRAIN)/$$set/data --workers 2 && \
		$(BIN)/mespot extract $(PRETRAIN)/$$set/data --out $(PRETRAIN)/$$set/features.zarr \
			--backend torch --resize 128 -q || exit 1; \
	done
	$(BIN)/mespot pretrain $(PRETRAIN)/a/features.zarr $(PRETRAIN)/b/features.zarr \
		-a '$(PRETRAIN)/a/data/CAS(ME)^2code_final.xlsx' \
		-a '$(PRETRAIN)/b/data/CAS(ME)^2code_final.xlsx' \
		--out spotting/weights/pretrained_synth.safetensors --epochs 100 --seed 1

docs-images: install
	BIN=$(BIN) DEMO=$(DEMO) docs/screenshots.sh

clean:
	rm -rf build dist *.egg-info .pytest_cache
