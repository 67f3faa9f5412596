# The two commands of the README: `make demo` and `make test`. Both create
# .venv and install the project into it first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0

.PHONY: install bytecode demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Bytecode for synapse_ray, as `pip install` writes for an installed package
# (an editable install has none, and under PYTHONDONTWRITEBYTECODE=1 Python
# never writes it): without it every fresh Ray worker compiles our modules
# from source, about 30 ms of CPU each. Recompiles only what changed.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q synapse_ray

# Train the step-based digits example end to end on the embedded local
# backend: make the dataset file, register it, run, print the created model.
demo: bytecode
	$(BIN)/python examples/make_digits_dataset.py build/digits.npz
	@id=$$($(BIN)/synapse-ray backend add-dataset digits build/digits.npz) && \
	  echo "registered dataset $$id" && \
	  $(BIN)/synapse-ray run examples/train_steps.py:DigitsStepTrainAction --params "{\"dataset_id\": $$id}"

# The whole suite (core, backend, Ray, cluster and Jobs API tests).
test: bytecode
	$(BIN)/pytest -q

# The tests that start no Ray process (core, backend, examples on the local executor).
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not ray and not cluster and not jobs"

lint: $(STAMP)
	$(BIN)/ruff check synapse_ray tests bench examples

bench: $(STAMP)
	$(BIN)/python bench/progress_cost.py

clean:
	rm -rf $(VENV) build .pytest_cache
