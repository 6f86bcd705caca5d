# Blueberry. The two commands of the README:
#   make demo   set up, build the demo run (synthetic survey -> trained model -> scores), serve the app
#   make test   set up, run the tests (browser tests included when Chromium can be installed)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel. On a machine with a GPU: make setup TORCH_SPEC="torch>=2.3"
TORCH_SPEC ?= torch==2.13.0
PORT ?= 5006
# 127.0.0.1: this machine only. To serve to a network see `python -m train serve --help`.
ADDRESS ?= 127.0.0.1
RUN ?= runs/demo

.PHONY: setup setup-test demo serve test browser-deps clean

setup: $(VENV)/.setup-done
setup-test: $(VENV)/.setup-test-done

# pip byte-compiles what it installs one file at a time (~60 s of a fresh setup on 2 cores); compileall
# does it on every core. It also tries the few files that are not Python 3.11 (torch's tests of newer
# syntax), which pip skips too: hence -qq and no status check. The app's setup leaves out what neither the
# app nor the pipeline imports (the packages' own test suites; sympy, networkx, inductor and dynamo, which
# only torch.compile needs): half the source, 25 s of 50 (2026-12-03); the test setup compiles the rest.
# Compiling up front matters most where PYTHONDONTWRITEBYTECODE is set (as on this project's machines):
# there an import caches nothing, and every process would compile what it imports again.
PIP := $(BIN)/python -m pip install --quiet --no-compile
PURELIB = "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
UNUSED := (?<!/astropy)/tests/|/site-packages/(sympy|networkx|mpmath|pip)/|/torch/(_inductor|_dynamo|onnx)/
COMPILE := $(BIN)/python -m compileall -qq -j 0 $(PURELIB) || true
COMPILE_APP := $(BIN)/python -m compileall -qq -j 0 -x '$(UNUSED)' $(PURELIB) || true

# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
$(VENV)/.setup-done: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP) "$(TORCH_SPEC)"
	$(PIP) -e .
	$(COMPILE_APP)
	touch $@

# The test tools apart: the app never needs them (playwright alone is 165 MB and ~10 s to install).
$(VENV)/.setup-test-done: $(VENV)/.setup-done
	$(PIP) -e ".[test]"
	$(COMPILE)
	touch $@

demo: setup
	$(BIN)/python -m train demo
	$(MAKE) --no-print-directory serve

serve: setup
	$(BIN)/python -m train serve --run $(RUN) --port $(PORT) --address $(ADDRESS)

test: setup-test browser-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Debian's Chromium for the browser tests (never a downloaded browser build). Without it
# (no root, no apt) the browser tests skip and say why.
browser-deps:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "note: /usr/bin/chromium is missing and cannot be installed here; browser tests will skip"; fi

clean:
	rm -rf runs/demo-* runs/demo .pytest_cache
