# `make demo` and `make test` set everything up from nothing (a .venv in the repository) and run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HUB := $(VENV)/bin/hub
EXAMPLE := examples/build

.PHONY: setup chromium demo test benchmark clean

setup: $(VENV)/.installed chromium

# the HTML report's browser test loads report.html in headless Chromium (Debian's package; CI runs as root)
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium is not installed and cannot be installed here: the browser test of the HTML report will skip"; fi; }

# torch is pinned in pyproject.toml: an unpinned torch pulls the multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml tests/plugin_example/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all,test]'
	$(PY) -m pip install --quiet --disable-pip-version-check -e tests/plugin_example
	touch $@

demo: setup
	$(PY) examples/digits.py --out $(EXAMPLE)
	$(HUB) convert $(EXAMPLE)/digits.pt2 --to cpu-int8 --calibration $(EXAMPLE)/calib.npz -o out/

# Two workers, a test file each (most of a test's time is one process importing or converting, so two keep both
# cores busy; a file's module fixtures stay in one worker), then the tests that time processes against each other
# alone. Both parts run; either failing fails the target. The two workers' processes get one OpenMP thread each:
# two workers of two threads on two cores made torch's small operators wait on each other (a CNN's distillation
# ran 4x slower).
test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -rs -n 2 --dist loadfile --durations=15 -m "not serial"; parallel=$$?; \
	$(PY) -m pytest -q -rs --durations=5 -m serial; serial=$$?; \
	test $$parallel = 0 && test $$serial = 0

benchmark: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) $(EXAMPLE) out hub-out
