# make run   : create .venv if missing, then run the pipeline (dvc repro) on the built-in default
# make test  : create .venv if missing, then run the test suite
# make bench : the performance benchmarks (see docs/performance.md)

VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PYTHON ?= python3
# Stage commands in dvc.yaml run `python` (this checkout's src/ first) from the virtual environment.
export PATH := $(BIN):$(PATH)

.PHONY: venv run test bench clean-venv

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -c requirements.lock
	$(BIN)/python -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

run: venv
	dvc repro
	@echo
	@echo "Figure:       $(CURDIR)/reports/figures/conv_vs_relu.png (and .svg)"
	@echo "Metrics:      $(CURDIR)/reports/metrics.json   (dvc metrics show)"
	@echo "MLflow store: $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}"
	@echo "Browse runs:  $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db"

test: venv
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: venv
	$(BIN)/python benchmarks/bench_extract.py --n 512 --size 375
	$(BIN)/python benchmarks/bench_probe.py --layers conv3,conv3_relu,fc1 --n 4916

clean-venv:
	rm -rf $(VENV)
