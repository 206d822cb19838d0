#!/usr/bin/env bash
# Re-verify srn-port on a CUDA GPU in one go, in at most 6 minutes (issue 19):
#   1. the CUDA tests (pytest -m cuda: goldens on CUDA, CPU vs CUDA deblur, a training step
#      vs the CPU's, resume across devices, autocast on every path, DDP with NCCL), <= 210 s
#   2. a short GPU bench (tools/bench.py --device cuda: color and lstm, 256x256 and
#      720x1280, batch 1, fp32/TF32/fp16/bf16, color compiled, training steps, fidelity),
#      <= 130 s
# Results go to $OUT (default out/gpu_check): cuda_tests.log, cuda_tests.xml, bench_gpu.json,
# bench_gpu.log, machine.txt. Exit status: 0 all passed, 1 a test or the bench failed,
# 3 this machine cannot run the check (no CUDA torch).
#
# Installs nothing it does not need: srn-port runs from this folder (no install); torch is
# never installed (a CUDA build must be there already); only srn-port's small pure-Python/
# wheel dependencies that are missing are pip-installed.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu_check}"
mkdir -p "$OUT"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch,sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then PY=.venv/bin/python
else PY=python3
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)

if ! "$PY" - <<'EOF' > "$OUT/machine.txt" 2>&1
import sys
try:
    import torch
except ImportError:
    print("no torch in", sys.executable); sys.exit(3)
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)
if not torch.cuda.is_available():
    print("CUDA is not available to this torch (CPU build, or no GPU visible)"); sys.exit(3)
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"gpu {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
EOF
then
    cat "$OUT/machine.txt"
    echo "gpu_check: this machine cannot run the CUDA check (see above); nothing was run." >&2
    exit 3
fi
cat "$OUT/machine.txt"
command -v nvidia-smi >/dev/null && nvidia-smi >> "$OUT/machine.txt" 2>&1

# srn-port's dependencies that are missing (import name -> pip name), torch excluded
missing=$("$PY" - <<'EOF'
import importlib.util
need = {"numpy": "numpy", "h5py": "h5py", "click": "click", "cv2": "opencv-python-headless",
        "PIL": "pillow", "google.protobuf": "protobuf", "google_crc32c": "google-crc32c",
        "safetensors": "safetensors", "tqdm": "tqdm", "pytest": "pytest"}
def have(mod):
    try:
        return importlib.util.find_spec(mod) is not None
    except ModuleNotFoundError:
        return False
print(" ".join(pip for mod, pip in need.items() if not have(mod)))
EOF
)
if [ -n "$missing" ]; then
    echo "gpu_check: installing missing dependencies: $missing"
    "$PY" -m pip install -q $missing || { echo "gpu_check: pip install failed" >&2; exit 1; }
fi

status=0
echo "== CUDA tests"
timeout 210 "$PY" -m pytest -m cuda tests/test_cuda.py -v -rA -p no:cacheprovider \
    --junitxml="$OUT/cuda_tests.xml" > "$OUT/cuda_tests.log" 2>&1 || status=1
tail -n 40 "$OUT/cuda_tests.log"

echo "== GPU bench (short)"
left=$(( 350 - ($(date +%s) - start) ))
[ "$left" -gt 130 ] && left=130
if [ "$left" -gt 20 ]; then
    timeout "$left" "$PY" tools/bench.py --device cuda --variants color,lstm \
        --sizes 256x256,720x1280 --batches 1 --gpu-reps 5 --gpu-warmup 2 \
        --compile-variants color --train-steps 5 --json "$OUT/bench_gpu.json" \
        > "$OUT/bench_gpu.log" 2>&1 || status=1
    tail -n 60 "$OUT/bench_gpu.log"
else
    echo "gpu_check: no time left for the bench" | tee "$OUT/bench_gpu.log"
    status=1
fi
echo "gpu_check: done in $(( $(date +%s) - start )) s, status $status; results in $OUT"
exit $status
