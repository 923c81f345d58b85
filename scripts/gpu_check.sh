#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: install graphc, run the CUDA backend's tests on the real
# driver (and the op and gradient tables, the nn tests and the PyTorch training parity on
# "cuda"), then the GPU benchmark. Logs go to $OUT (default: ./gpu-check-logs). Each stage has
# a time limit, and the limits add up to under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check-logs}"
mkdir -p "$OUT"
status=0
# The python that holds the GPU build of PyTorch: `python` where there is one, else python3.
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
export PYTHON PYTHONUNBUFFERED=1
SETUP_SECONDS=45
TESTS_SECONDS=240
BENCHMARK_SECONDS=180 # 465 s in all

setup() {
    nvidia-smi || true
    "$PYTHON" -c "import llvmlite, numpy, torch; print('llvmlite', llvmlite.__version__, \
'numpy', numpy.__version__, 'torch', torch.__version__)"
    "$PYTHON" -m pip install --no-deps --no-build-isolation -e . 2>&1 | tail -n 3
    "$PYTHON" -c "import graphc as gc; print('device:', gc.cuda.device_name())"
    "$PYTHON" -c "from graphc.backends.cuda.driver import selected_driver as d; \
print('cuBLAS:', 'found' if d().blas() else 'not installed (own GEMM kernel only)')"
}
export -f setup
timeout "$SETUP_SECONDS" bash -c setup > "$OUT/setup.log" 2>&1 || status=1

# The backend's tests, each on the emulator and on the GPU (Variables kept on the device,
# launch geometry, loops, cuBLAS against the own GEMM kernel when libcublas is installed), the
# PTX tests, then the op and gradient tables, the nn tests and the training parity with
# "cuda" among the backends (conftest adds it when a device is present). No -x: one failure
# must not hide the others.
timeout "$TESTS_SECONDS" "$PYTHON" -m pytest -q -rfE -p no:cacheprovider -n 8 \
    tests/test_cuda_backend.py tests/test_cuda_variables.py tests/test_cuda_cublas.py \
    tests/test_cuda_scan.py tests/test_cuda_ops.py tests/test_cuda_ptx.py \
    tests/test_ops.py tests/test_grad_table.py tests/test_nn.py tests/test_training_parity.py \
    -k "cuda or ptx or emulate" > "$OUT/tests.log" 2>&1 || status=1

timeout "$BENCHMARK_SECONDS" "$PYTHON" benchmarks/gpu.py --repeat 20 > "$OUT/benchmark.log" 2>&1 \
    || status=1

tail -n 5 "$OUT/setup.log" "$OUT/tests.log" "$OUT/benchmark.log"
exit $status
