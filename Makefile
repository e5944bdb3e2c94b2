# make test   installs what is missing, builds the extension, runs the test suite.
# make bench  same set-up, then the CPU benchmark harnesses (recurrent layers, then attention;
#             each prints its table last).
#
# RNNFUSED_CUDA=auto|0|1 chooses whether the CUDA sources are compiled (see setup.py);
# CI uses 1 so that every .cu file compiles and links on every submission.
PYTHON ?= python3
TORCH_VERSION ?= 2.14.1
PIP := $(PYTHON) -m pip
export RNNFUSED_CUDA ?= auto
export MAX_JOBS ?= 2

.PHONY: deps build test bench quick-bench clean

deps:
	@$(PYTHON) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null \
		|| $(PIP) install "torch==$(TORCH_VERSION)"
	@$(PYTHON) -c "import numpy, pytest, ninja, setuptools, wheel, matplotlib" 2>/dev/null \
		|| $(PIP) install numpy pytest ninja setuptools wheel matplotlib

build: deps
	$(PIP) install --no-build-isolation -e .
	@$(PYTHON) -c "import rnnfused; print('rnnfused built; CUDA kernels:', rnnfused.cuda_built())"

test: build
	$(PYTHON) -m pytest tests

bench: build
	$(PYTHON) benchmarks/bench.py
	$(PYTHON) benchmarks/bench_attention.py

quick-bench: build
	$(PYTHON) benchmarks/bench.py --quick
	$(PYTHON) benchmarks/bench_attention.py --quick

clean:
	rm -rf build *.egg-info rnnfused/_C*.so benchmarks/out
