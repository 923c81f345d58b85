#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: install graphc, run the CUDA backend's tests on the real
# driver (and the op and gradient tables on "cuda"), then the GPU benchmark. Logs go to $OUT
# (default: ./gpu-check-logs). Meant to finish in under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check-logs}"
mkdir -p "$OUT"
status=0

{
    nvidia-smi || true
    python -m pip install --no-deps --no-build-isolation -e . 2>&1 | tail -n 3
    python -c "import graphc as gc; print('device:', gc.cuda.device_name())"
    python -c "from graphc.backends.cuda.driver import selected_driver as d; \
print('cuBLAS:', 'found' if d().blas() else 'not installed (own GEMM kernel only)')"
} > "$OUT/setup.log" 2>&1 || status=1

# The backend's tests, each on the emulator and on the GPU (Variables kept on the device,
# launch geometry, cuBLAS against the own GEMM kernel when libcublas is installed), the PTX
# tests, then the op and gradient tables with "cuda" among the backends (conftest adds it
# when a device is present).
timeout 300 python -m pytest -q -x -p no:cacheprovider -n 4 \
    tests/test_cuda_backend.py tests/test_cuda_variables.py tests/test_cuda_cublas.py \
    tests/test_cuda_ops.py tests/test_cuda_ptx.py tests/test_ops.py tests/test_grad_table.py \
    -k "cuda or ptx or emulate" > "$OUT/tests.log" 2>&1 || status=1

timeout 180 python benchmarks/gpu.py --repeat 20 > "$OUT/benchmark.log" 2>&1 || status=1

tail -n 5 "$OUT/tests.log" "$OUT/benchmark.log"
exit $status
