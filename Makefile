# One command sets up and runs the main job; one sets up and runs the tests.
#   make run    – set up the venv and open the photosearch window (the app)
#   make test   – set up the venv and run the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run model test demo clean bundle

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train,dev,package]"
	touch $(STAMP)

model: setup
	$(PY) -m training default

demo: setup
	HF_HUB_OFFLINE=1 $(PY) -m training demo "a cat" "a red car" "a slice of pizza"

run: setup
	$(VENV)/bin/photosearch

test: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -ra

bundle: setup
	$(PY) -m pip install --quiet -e ".[package]"
	$(PY) packaging/build.py --check

clean:
	rm -rf $(VENV) .pytest_cache
