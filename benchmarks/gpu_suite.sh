#!/usr/bin/env bash
# Every GPU check and benchmark of the training core, in under 5 minutes on one H100 or H200.
#
#   bash benchmarks/gpu_suite.sh          # figures in $OUT (or ./gpu_suite_out): gpu_suite.json, train_bench*.json, logs
#
# Checks (each a pass/fail with its seconds and the tail of its log):
#   peak             bf16 matrix product 8192^3: the measured ceiling the TFLOP/s figures are compared with
#   train_2d_bf16    unconditional 2D on CUDA: bf16 autocast, channels-last, torch.compile, fused Adam
#   train_3d_fp16    unconditional 3D with fp16 and the gradient scaler, R1 in float32
#   train_pix2pix    pix2pix, label2image and cyclegan on CUDA (bf16, channels-last)
#   resume           2N steps against N + resume + N on CUDA (fp32); cuDNN may pick non-deterministic
#                    kernels, so the largest weight difference is recorded rather than required to be 0
#   synthesize       NIfTI and DICOM from a CUDA-trained checkpoint, with --device cuda
#   oom              an impossible batch ends with exit 2 and "out of GPU memory" (one line)
# Benchmarks: benchmarks/eval_bench.py on 10,000 + 10,000 images at 256x256 (bf16 extraction + every
# distribution metric); benchmarks/train_bench.py at 256x256 batch 16 (2D) and 96^3 batch 4 (3D), with medgan's
# default GPU settings, then again with --compile (skipped when the suite is short of time).
#
# The lent GPU machine has PyTorch but not medgan's other dependencies. Carry them as wheels in .whl/
# (this script installs them when the folder is there), made on a machine with pip and PyPI:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl monai==1.6.1 nibabel==5.4.2 pydicom==3.0.2 SimpleITK==2.5.7 pydantic==2.14.4 \
#     pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_suite_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
PY=${PYTHON:-python3}
START=$SECONDS
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed" >&2; exit 1; }
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
RESULTS="$OUT/checks.jsonl"
: >"$RESULTS"

# check NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, record the outcome.
check() {
  local name=$1 limit=$2 began=$SECONDS status
  shift 2
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1 <&0
  status=$?
  "$PY" - "$name" "$status" "$((SECONDS - began))" "$OUT/$name.log" >>"$RESULTS" <<'EOF'
import json, sys
name, status, seconds, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tail = open(log, errors="replace").read()[-1500:]
print(json.dumps({"check": name, "passed": status == 0, "status": status, "seconds": seconds, "log_tail": tail}))
EOF
  echo "$name: $([ "$status" -eq 0 ] && echo passed || echo "FAILED ($status)") in $((SECONDS - began)) s"
}

CUDA=(--set train.device=cuda --set train.log_every_steps=10 --set train.sample_every_steps=20
      --set train.checkpoint_every_steps=20 --set train.steps=20)

check peak 60 "$PY" - "$OUT/peak.json" <<'EOF'
import json, sys, time, torch
a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
for _ in range(3):
    a @ b
torch.cuda.synchronize()
start = time.perf_counter()
for _ in range(10):
    a @ b
torch.cuda.synchronize()
tflops = 10 * 2 * 8192**3 / (time.perf_counter() - start) / 1e12
json.dump({"device": torch.cuda.get_device_name(), "bf16_matmul_tflops": tflops, "torch": torch.__version__},
          open(sys.argv[1], "w"))
print(f"bf16 matmul: {tflops:.0f} TFLOP/s on {torch.cuda.get_device_name()}")
EOF
PEAK=$("$PY" -c "import json; print(json.load(open('$OUT/peak.json'))['bf16_matmul_tflops'])" 2>/dev/null || echo "")

check train_2d_bf16 120 "$PY" -m medgan train -c configs/debug_cpu_unconditional.yaml --run-dir "$WORK/u2d" "${CUDA[@]}" \
  --set train.precision=bf16 --set train.channels_last=true --set train.compile=true --set train.batch_size=32
check train_3d_fp16 60 "$PY" -m medgan train -c configs/debug_cpu_3d.yaml --run-dir "$WORK/u3d" "${CUDA[@]}" \
  --set train.precision=fp16
check train_pix2pix 90 bash -c "
  $PY -c \"from medgan.data.datasets import write_phantom_pairs as w; w('$WORK/pairs', count=4)\" &&
  for task in pix2pix label2image cyclegan; do
    extra=''; [ \$task != cyclegan ] && extra='--set data.source=$WORK/pairs/pairs.csv'
    $PY -m medgan train -c configs/debug_cpu_\$task.yaml --run-dir $WORK/\$task ${CUDA[*]} \$extra || exit 1
  done"
check resume 90 "$PY" - "$WORK" <<'EOF'
import sys, torch
from medgan.config import load_config
from medgan.training import TrainConfig, train
from medgan.training.checkpoint import latest_checkpoint, load_checkpoint
work = sys.argv[1]
common = ["train.device=cuda", "train.precision=fp32", "train.checkpoint_every_steps=5", "train.log_every_steps=5",
          "train.sample_every_steps=100"]
config = lambda steps: load_config(TrainConfig, "configs/debug_cpu_unconditional.yaml", [*common, f"train.steps={steps}"])
train(config(10), run_dir=f"{work}/straight")
train(config(5), run_dir=f"{work}/resumed")
train(config(10), run_dir=f"{work}/resumed", resume=True)
a, b = (load_checkpoint(latest_checkpoint(f"{work}/{r}"))["networks"] for r in ("straight", "resumed"))
worst = max((a[n][k].float() - b[n][k].float()).abs().max().item() for n in a for k in a[n] if a[n][k].is_floating_point())
print(f"largest weight difference after resume on CUDA: {worst:.3g}")
assert worst < 1e-2, worst
EOF
check synthesize 45 bash -c "
  $PY -m medgan synthesize --checkpoint \$(ls $WORK/u2d/checkpoints/*.pt | tail -1) -n 4 --out $WORK/s_nii --device cuda &&
  $PY -m medgan synthesize --checkpoint \$(ls $WORK/u2d/checkpoints/*.pt | tail -1) -n 2 --out $WORK/s_dcm \
    --format dicom --device cuda"
check oom 60 bash -c "
  $PY -m medgan train -c configs/debug_cpu_3d.yaml --run-dir $WORK/oom --set train.device=cuda \
    --set data.image_size=[128,128,128] --set data.spacing_mm=[2.0,2.0,1.125] --set train.batch_size=1024 \
    --set generator.options={} --set discriminator.options={} >$WORK/oom.txt 2>&1
  status=\$?; cat $WORK/oom.txt
  [ \$status -eq 2 ] && [ \$(wc -l <$WORK/oom.txt) -eq 1 ] && grep -q 'out of GPU memory' $WORK/oom.txt"

check eval_bench 75 "$PY" benchmarks/eval_bench.py --device cuda --no-peer --json "$OUT/eval_bench.json"
check bench 150 "$PY" benchmarks/train_bench.py --repeats 2 --json "$OUT/train_bench.json" ${PEAK:+--peak-tflops "$PEAK"}
if [ $((SECONDS - START)) -lt 170 ]; then
  check bench_compile 120 "$PY" benchmarks/train_bench.py --repeats 1 --compile --json "$OUT/train_bench_compile.json" \
    ${PEAK:+--peak-tflops "$PEAK"}
else
  echo "bench_compile: skipped (time)"
fi

"$PY" - "$OUT" "$((SECONDS - START))" <<'EOF'
import json, os, sys
out, seconds = sys.argv[1], int(sys.argv[2])
checks = [json.loads(line) for line in open(os.path.join(out, "checks.jsonl"))]
summary = {"seconds": seconds, "checks": {c["check"]: c for c in checks}}
for name in ("peak", "eval_bench", "train_bench", "train_bench_compile"):
    path = os.path.join(out, f"{name}.json")
    if os.path.exists(path):
        summary[name] = json.load(open(path))
json.dump(summary, open(os.path.join(out, "gpu_suite.json"), "w"), indent=2)
print(f"{sum(c['passed'] for c in checks)} passed, {sum(not c['passed'] for c in checks)} failed in {seconds} s")
EOF
rm -rf "$WORK"
