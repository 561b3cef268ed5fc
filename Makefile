# The two set-up commands of README.md:
#   make demo   install everything, then run the whole chain on the bundled sample data
#   make test   install everything, then run the test suite (what CI runs: .ci/run)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $@

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

test: install
	$(BIN)/ruff check msekit pipelines tests bench
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

lint: install
	$(BIN)/ruff check msekit pipelines tests bench

bench: install
	$(BIN)/python bench/bench_extract.py
	$(BIN)/python bench/bench_dataset.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_predict.py

clean:
	rm -rf runs out .pytest_cache
