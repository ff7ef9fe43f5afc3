# Every target bootstraps from a fresh clone: it creates .venv and installs msmm if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test quickstart

$(VENV)/.installed: setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m adapters.kernels.build || echo "warning: fused CPU kernels not built; the composite kernels will be used"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest tests $(PYTEST_ARGS)

# A tiny InternVL fine-tuned on CPU on generated coloured shapes, end to end (docs/quickstart.md).
quickstart: $(VENV)/.installed
	PATH="$(abspath $(VENV))/bin:$$PATH" bash examples/quickstart/run.sh
