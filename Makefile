# Short commands for the README. `make run` and `make test` each set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST_SYSTEM := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data data-text run test test-all lint docs patterns clean

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
	$(PY) -m zoo.data.wikipedia_excerpt

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

clean:
	rm -rf $(VENV) site outputs multirun .pytest_cache .ruff_cache
