# `make demo` and `make test` set everything up from nothing (a .venv in the repository) and run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HUB := $(VENV)/bin/hub
EXAMPLE := examples/build

.PHONY: setup demo test benchmark clean

setup: $(VENV)/.installed

# torch is pinned in pyproject.toml: an unpinned torch pulls the multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml tests/plugin_example/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all,test]'
	$(PY) -m pip install --quiet --disable-pip-version-check -e tests/plugin_example
	touch $@

demo: setup
	$(PY) examples/digits.py --out $(EXAMPLE)
	$(HUB) convert $(EXAMPLE)/digits.pt2 --to cpu-int8 --calibration $(EXAMPLE)/calib.npz -o out/

test: setup
	$(PY) -m pytest -q -rs

benchmark: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) $(EXAMPLE) out hub-out
