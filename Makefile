# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CORPUS ?= corpus
# the student trainer's torch: the CPU build, installed by name before the `train` extra so that pip never reaches
# for a newer CUDA build (on a GPU machine: make TORCH='torch==2.13.0 --index-url <your CUDA wheel index>')
TORCH  ?= torch==2.13.0

.PHONY: demo demo-replay test install bench clean chromium

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test,ray,train]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stepwise demo --corpus $(CORPUS) --out exports

# the recorded-teacher variant: no HTTP at all
demo-replay: $(STAMP)
	$(BIN)/stepwise run pipeline/samples/demo/job.yaml --corpus $(CORPUS)
	$(BIN)/stepwise export --corpus $(CORPUS) --job demo-arithmetic --format finetune_cot --out exports/demo-replay.jsonl

test: $(STAMP) chromium
	$(BIN)/python -m pytest -n 2 -q

# the browser tests (tests/api/test_viewer.py) drive Debian's headless Chromium: install it when it is missing and
# apt-get can run (as root, on CI too); elsewhere say so, and those tests skip naming what is absent
chromium:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium and chromium-driver for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else echo "chromium or chromedriver missing and apt-get not usable here: the browser tests will skip"; fi

bench: $(STAMP)
	$(BIN)/python bench/parse_throughput.py
	$(BIN)/python bench/reasoning_parse.py
	$(BIN)/python bench/write_throughput.py
	$(BIN)/python bench/dsbs_accuracy.py
	$(BIN)/python bench/teacher_throughput.py
	$(BIN)/python bench/api_load.py
	$(BIN)/python bench/viewer_records.py
	$(BIN)/python bench/scale.py

clean:
	rm -rf $(VENV) $(CORPUS) exports .pytest_cache
