#!/usr/bin/env bash
# One short GPU session: install hvit-deploy into the GPU machine's own Python (its torch stays), run the GPU
# tests, then benchmarks/gpu/time_forms.py (every GPU form of one model per family, then the batch sweep of the
# best form of one model, within BUDGET_S seconds, default 480), and leave the results files in $OUT (or
# ./gpu-results). Dry-run it on a CPU machine first: every GPU entry is then skipped with its reason and the
# script still ends 0.
#   bash benchmarks/gpu/run_on_device.sh [MODEL ...]      (default: time_forms.py's one model per family)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-results}"
mkdir -p "$OUT"
export HVIT_CACHE_DIR="${HVIT_CACHE_DIR:-/tmp/hvit-cache}" PYTHONUNBUFFERED=1
# the device image has torch, timm, onnx and onnxruntime (no CUDA EP) but no openvino or coremltools:
# install the package without touching its torch; the missing runtimes are skipped with their reason
# pydantic (and its pydantic-core, annotated-types, typing-inspection) is not in that image: carry them as
# wheels in .whl/ (python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl NAME)
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps .whl/*.whl 2>&1 | tail -2; fi
python3 -m pip install -q --no-deps -e . 2>&1 | tail -2
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else '')" | tee "$OUT/device.txt"
python3 -m pytest -q -m gpu -p no:cacheprovider -n 0 tests/test_runtimes.py tests/test_bench_cli.py \
    tests/test_gpu_forms.py tests/test_batch_sweep.py 2>&1 | tail -5 | tee "$OUT/gpu-tests.txt"
models=("$@")
args=()
[ ${#models[@]} -gt 0 ] && args=(--models "${models[@]}")
python3 benchmarks/gpu/time_forms.py "${args[@]}" --out "$OUT" --budget-s "${BUDGET_S:-480}" | tee "$OUT/forms.txt"
echo "results: $OUT/forms.json $OUT/sweep.json $OUT/compile.json $OUT/summary.md"
