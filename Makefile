# The kit's two commands: `make lab` opens it, `make test` checks all of it.
# Both create .venv on first use (Python >= 3.11 as $(PYTHON)) and reinstall when
# pyproject.toml changes. Services start on first use: see README "How services are chosen".

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: lab test clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), f"labkit needs Python >= 3.11, $(PYTHON) is {sys.version.split()[0]}: run make PYTHON=python3.11 …"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# Jupyter refuses to start as root unless told: containers and CI machines often are root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

# JupyterLab opens the learner's working copies in work/ (ignored by git), so notebooks/
# keeps the originals: `labkit lessons copy` adds lessons not copied yet and never
# overwrites a copy (`labkit lessons reset NAME` restores one). jupyter/ holds the kit's
# JupyterLab defaults (no news pop-up): see jupyter/README.md.
lab: $(STAMP)
	$(BIN)/labkit lessons copy
	JUPYTER_CONFIG_PATH="$(CURDIR)/jupyter$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}" \
		$(BIN)/jupyter lab work/ $(ALLOW_ROOT) $(LAB_ARGS)

# LABKIT_SOLUTIONS=run makes every exercise's solution cell run, so CI checks them.
test: $(STAMP)
	LABKIT_SOLUTIONS=run $(BIN)/python -m pytest --nbmake --nbmake-timeout=600 tests notebooks $(PYTEST_ARGS)

clean:
	$(BIN)/labkit down || true
	rm -rf $(VENV) out .pytest_cache
