# Each target installs what it needs first, so it works alone from a fresh clone.
PYTHON ?= python3
PIP = $(PYTHON) -m pip install --disable-pip-version-check -q

.PHONY: install install-test demo demo-nyu test

install:
	$(PIP) -r requirements.txt

install-test:
	$(PIP) -r requirements.txt -r requirements-test.txt

demo: install
	$(PYTHON) main_cross_cs.py --demo

demo-nyu: install
	$(PYTHON) main_cross_nyu.py --demo

test: install-test
	$(PYTHON) -m pytest -q
