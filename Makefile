# facemtl: `make demo` and `make test` set everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench install clean demo-datasets

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e ".[test,export,real]"
	touch $(STAMP)

install: $(STAMP)

# The demo's run folder is replaced on every `make demo` (train --force), so the demo can be rerun;
# your own runs (runs/default, ...) are never touched.
DEMO_RUN ?= runs/demo

demo: $(STAMP)
	@echo "make demo: the quick recipe (the default's tasks and network, 8 epochs on 8,000 images) into $(DEMO_RUN) (replaced on each make demo); SynthFaces is rendered into data/synthfaces.h5 first when missing"
	$(BIN)/facemtl train --recipe quick --out $(DEMO_RUN) --force
	$(BIN)/facemtl info data/synthfaces.h5
	$(BIN)/facemtl evaluate $(DEMO_RUN) --dataset lfw-subset
	@echo ""
	@echo "done. The facemtl command is in $(VENV): run  . $(VENV)/bin/activate  in your shell first"
	@echo "(or call $(BIN)/facemtl directly); then: facemtl --help, facemtl evaluate $(DEMO_RUN)"
	@echo "The demo is a first look. The default recipe, facemtl train, is the model to use: 24 epochs on 24,000 images,"
	@echo "landmarks 0.049 NME where the demo has 0.09-0.10; 23-27 minutes on one thread of a 2-core CPU (README, Where issue 11 stands)."

demo-datasets: $(STAMP)
	@echo "make demo-datasets: SynthFaces written as CelebA, MTFL and FER2013 files, read back, and one model on the three against one per dataset (about 5 minutes on 2 cores)"
	$(BIN)/python benchmarks/multi_dataset.py --work runs/multi_dataset --images 4000 --epochs 8 --mix proportional
	$(BIN)/facemtl evaluate runs/multi_dataset/runs/joint-proportional --no-figures

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
