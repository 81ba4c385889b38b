# Set-up and entry points. `make demo` and `make test` are all a new user needs.
# A GPU user overrides the torch build, e.g.:  make test TORCH_SPEC="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu128
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= codecs,dev,features
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medgan-installed
PYTEST_ARGS ?=

.PHONY: demo test lint bench-io bench-anon bench-eval bench-train sample-data clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m medgan.demo --out demo_output

test: $(STAMP)
	$(PY) -m ruff check medgan tests benchmarks sample_data
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check medgan tests benchmarks sample_data
	$(PY) -m ruff format --check medgan tests benchmarks sample_data

bench-io: $(STAMP)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS),bench]"
	$(PY) benchmarks/io_bench.py

bench-anon: $(STAMP)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS),bench]"
	$(PY) benchmarks/anon_bench.py --copies 8

bench-eval: $(STAMP)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS),features]"
	$(PY) benchmarks/eval_bench.py

bench-train: $(STAMP)  # on a GPU when there is one; e.g. make bench-train BENCH_ARGS="--device cpu"
	$(PY) benchmarks/train_bench.py $(BENCH_ARGS)

sample-data: $(STAMP)
	$(PY) sample_data/make_sample_data.py

clean-venv:
	rm -rf $(VENV)
