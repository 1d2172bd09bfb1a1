# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test install benchmark gallery clean

# Re-installs only when the dependency pins change, so repeated calls are quick.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m helpers.pipeline -p offline True $(ARGS)

# Two workers (pytest-xdist), each file on one: a file's module fixtures (the notebook chains) run once.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile $(ARGS)

benchmark: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,bench]'
	$(PY) benchmarks/time_notebooks.py

# Copies the curated PNGs of the last `make run` to figures/gallery/ (committed; the README shows them).
gallery: $(STAMP)
	$(PY) -m helpers.gallery

clean:
	rm -rf data/processed models runs figures/*.html figures/*.png figures/plotly.min.js
