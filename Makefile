# Short commands for the README. `make run` and `make test` each set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST_SYSTEM := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data data-text run test test-all lint docs patterns visualize-docs sampling-docs pictures benchmarks gpu-check gpu-wheels clean

setup: $(VENV)/.installed

# torch/torchvision first, pinned to the releases this project is tested with (never newer).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[dev,docs]"
	touch $@

# The embedded default data: Debian's dataset-fashion-mnist package (MIT) where apt is available.
data:
	@if [ -f $(FASHION_MNIST_SYSTEM)/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST found in $(FASHION_MNIST_SYSTEM)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		$(SUDO) apt-get install -y dataset-fashion-mnist || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist; } || \
		echo "apt could not install dataset-fashion-mnist; the loader will try data/ and torchvision's download"; \
	else \
		echo "no apt-get: the loader will look in data/ and then try torchvision's download"; \
	fi

# The text excerpt of data=wikipedia_excerpt: 6 MB of Wikipedia XML (CC BY-SA) that gensim's wheel on PyPI ships as
# test data, extracted into $${ZOO_DATA_ROOT:-data}/wikipedia_excerpt/ (zoo/data/wikipedia_excerpt.py).
data-text: setup
	$(PY) scripts/fetch_text.py

run: setup data
	$(PY) scripts/train.py $(ARGS)

test: setup data
	$(PY) -m pytest -m "not slow" -q $(ARGS)

test-all: setup data
	$(PY) -m pytest -q $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .

docs: setup
	$(VENV)/bin/mkdocs build --strict

patterns: setup
	$(PY) scripts/plot_patterns.py --out docs/assets/patterns

# The gallery of docs/pictures.md from a trained run: make visualize-docs CHECKPOINT=<run folder or checkpoint>
visualize-docs: setup
	@test -n "$(CHECKPOINT)" || { echo "usage: make visualize-docs CHECKPOINT=<run folder or checkpoint file>"; exit 2; }
	$(PY) scripts/visualize.py checkpoint=$(CHECKPOINT) what=all out=docs/img/pictures record=pictures
# Every benchmark that feeds docs/benchmarks.md (and docs/results/*.json), with the documented commands.
# Run it on an otherwise idle machine: each script prints the load average in its machine line.
benchmarks: setup
	$(PY) scripts/benchmark_attention.py --n 1024 3072 8192 12288 --repeats 7 --masked-reference --breakdown --save attention_cpu --plot docs/img/attention_cpu.png
	$(PY) scripts/benchmark_attention.py --n 3072 12288 --repeats 7 --threads 1 --no-memory --save attention_cpu_1thread
	$(PY) scripts/benchmark_attention.py --n 3072 12288 --repeats 7 --mode merged --save attention_cpu_merged
	$(PY) scripts/benchmark_attention.py --n 3072 12288 --repeats 7 --dtype bfloat16 --save attention_cpu_bf16
	$(PY) scripts/benchmark_model.py --shapes cifar10 enwik8 --layers 2 --repeats 7 --variants dense strided fixed bound --save model_step
	$(PY) scripts/benchmark_model.py --shapes cifar10 --layers 2 --repeats 7 --precisions fp32 bf16 --variants dense strided fixed bound --save model_step_bf16
	$(PY) scripts/benchmark_model.py --shapes cifar10 --layers 2 --repeats 5 --profile --variants strided bound --save model_profile
	$(PY) scripts/benchmark_recompute.py --model cifar10_paper --layers 8 --seq-len 3072 --batch 1 --save recompute
	$(PY) scripts/max_length.py --backends blocksparse --start 262144 --max-n 1048576 --budget-gib 20 --time-limit-s 3600 --save max_length
	$(PY) scripts/record_run.py train_fp32 -- trainer.steps=300 trainer.test=false
	$(PY) scripts/record_run.py train_bf16 -- trainer.steps=300 trainer.test=false trainer.precision=bf16
	$(PY) scripts/benchmark_sampling.py
	$(PY) scripts/benchmark_sample_callback.py --steps 200 --eval-every 50

# The GPU check (scripts/gpu_check.py): only this repository, torch (+triton) and the wheels in $(WHEELS)
# are needed, so it runs with the machine's own python: `make gpu-check`, `make gpu-check ARGS="--device cpu"`.
GPU_PY ?= python3
WHEELS ?= wheels
gpu-check:
	PYTHONPATH=. $(GPU_PY) scripts/gpu_check.py $(if $(wildcard $(WHEELS)),--wheels $(WHEELS)) $(ARGS)

# Fills $(WHEELS) with what the GPU check installs when missing (pytest and its pure-Python dependencies,
# about 2 MB). xFormers is optional and pinned to one torch release: add the build for the GPU machine's
# torch yourself, e.g. `pip download --no-deps --dest wheels xformers==VERSION` (its wheel is ~100 MB).
GPU_PYTHON_VERSION ?= 3.12
gpu-wheels: setup
	$(PY) -m pip download --dest $(WHEELS) --only-binary=:all: --python-version $(GPU_PYTHON_VERSION) \
		--platform manylinux_2_28_x86_64 pytest

# The completions and samples of docs/sampling.md: make sampling-docs CHECKPOINT=<run of the default recipe>
sampling-docs: setup
	@test -n "$(CHECKPOINT)" || { echo "usage: make sampling-docs CHECKPOINT=<run folder or checkpoint of the default recipe>"; exit 2; }
	$(PY) scripts/sampling_pictures.py $(CHECKPOINT)

# Every picture of the docs made from a trained model (rerun after the default recipe changes):
#   make pictures CHECKPOINT=outputs/DATE/TIME
pictures: visualize-docs sampling-docs

clean:
	rm -rf $(VENV) site outputs multirun .pytest_cache .ruff_cache
