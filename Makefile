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

# The full compiler log goes to build/pip-install.log; the ptxas resource report of the CUDA
# kernels (registers, spills) is summarised here so that a spill shows in every CI log.
build: deps
	@mkdir -p build
	$(PIP) install -v --no-build-isolation -e . > build/pip-install.log 2>&1 \
		|| { tail -n 80 build/pip-install.log; exit 1; }
	@if grep -q "bytes spill" build/pip-install.log; then \
		echo "ptxas: $$(grep -c 'bytes spill' build/pip-install.log) kernel reports; kernels with spills:"; \
		grep "bytes spill" build/pip-install.log | grep -v " 0 bytes spill stores, 0 bytes spill loads" || echo "  none"; \
	fi
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
