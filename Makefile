# `make demo` and `make test` create the virtual environment when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test demo clean

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The main job on the shipped examples: references are picked automatically from examples/refs.
demo: $(STAMP)
	$(VENV)/bin/pikfix fix examples/old --refs examples/refs -o pikfix-out --compare
	@echo "results and side-by-side sheets (*.compare.jpg) are in pikfix-out/"

clean:
	rm -rf $(VENV) build *.egg-info
