# Two commands do all the set-up: `make lab` and `make test`.
# Both create the virtual environment in .venv on first use and install the kit into it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.labkit-installed

.PHONY: lab test mutation clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# Jupyter refuses to start as root unless told to (classroom containers often run as root).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

## make lab: open JupyterLab on the lessons
lab: $(STAMP)
	$(PY) -m jupyter lab notebooks/ $(ROOT_FLAG)

## make test: pytest for labkit plus nbval over every notebook, in one run
## (beside a real Redis server when redis-server is installed: scripts/with-redis.sh)
test: $(STAMP)
	scripts/with-redis.sh $(PY) -m pytest tests --nbval-lax --nbval-current-env notebooks

## make mutation: which code changes would no test notice? Slow, not part of make test.
## MODULES="signatures guards" limits it; see docs/mutation.md
MUTMUT_VERSION := 3.8.1
mutation: $(STAMP)
	$(PY) -c "import importlib.metadata as m, sys; sys.exit(m.version('mutmut') != '$(MUTMUT_VERSION)')" 2>/dev/null \
		|| $(PY) -m pip install --quiet "mutmut==$(MUTMUT_VERSION)"
	$(PY) mutation/run.py --check $(MODULES)

clean:
	rm -rf $(VENV) build *.egg-info
