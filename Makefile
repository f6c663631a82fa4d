# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CORPUS ?= corpus

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stepwise run pipeline/samples/demo/job.yaml --corpus $(CORPUS)
	$(BIN)/stepwise query --corpus $(CORPUS) \
	  "SELECT coalesce(reject_reason, 'accepted') AS outcome, count(*) AS n FROM records WHERE job_id = 'demo-arithmetic' GROUP BY 1 ORDER BY n DESC"
	$(BIN)/stepwise export --corpus $(CORPUS) --job demo-arithmetic --format finetune_cot --out exports/demo-finetune-cot.jsonl
	$(BIN)/stepwise export --corpus $(CORPUS) --job demo-arithmetic --format dsbs --out exports/demo-dsbs --split 0.8,0.1,0.1
	@echo "demo done: corpus in ./$(CORPUS), exports in ./exports"

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

bench: $(STAMP)
	$(BIN)/python bench/parse_throughput.py
	$(BIN)/python bench/write_throughput.py
	$(BIN)/python bench/dsbs_accuracy.py

clean:
	rm -rf $(VENV) $(CORPUS) exports .pytest_cache
