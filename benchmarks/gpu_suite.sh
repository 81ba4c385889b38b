#!/usr/bin/env bash
# Every GPU check and benchmark, in one call of under 5 minutes on one H100 or H200, figures as JSON.
#
#   bash benchmarks/gpu_suite.sh    # in $OUT (or ./gpu_suite_out): gpu_suite.json, logs.tar.gz (a log per step)
#
# Phase A, timings, alone on the GPU:
#   peak          bf16 matrix product 8192^3 on random data: the measured ceiling TFLOP/s figures are compared with
#   bench         benchmarks/train_bench.py: medgan (eager and compiled) against the plain MONAI-tutorial loop and
#                 the hand-tuned one, pix2pix U-Net + PatchGAN at 256x256 batch 16 (2D) and 96^3 batch 4 (3D);
#                 then medgan's own default networks (configs/synth2d_256.yaml) as a fraction of the peak
#   eval_bench    benchmarks/eval_bench.py: 10,000 + 10,000 images at 256x256, bf16 extraction + every metric
#   eval_effnet   the same with EfficientNet-Lite0 features, 2,000 + 2,000 images
#   enhance_bench benchmarks/enhance_bench.py: medgan enhance's whole-scan path against MONAI's
#                 sliding_window_inference, 3-level U-Net, 96^3 windows, 512x512x256, fp32 and bf16 (about 30 s)
#   degrade_bench benchmarks/degrade_bench.py: the degradation simulators' slices and volumes per second on CUDA
#   lesion_bench  benchmarks/lesion_bench.py: RandLesiond on GPU tensors (and on the CPU beside it)
# Phase B, the GPU shared:
#   small_data    benchmarks/small_data_study.py: the default 2D config on a few hundred real brain MR slices
#                 (prepared beforehand into .study_data/ and carried), several seeds trained side by side with
#                 the stock peer (MONAI's DCGAN tutorial), then FD / KID / precision / recall / density / coverage
#                 against the real slices, and small_data.png (real slices, then each seed's samples)
#   denoise       benchmarks/denoise_study.py: low-dose CT denoising on real scans (head CT and a chest CT to
#                 train, another patient's chest CT held out; prepared beforehand into .cache/denoise_study/ and
#                 carried): 75 s of pix2pix training on pairs simulated on the GPU (bf16, 272 x 272 slices), then
#                 PSNR / SSIM / MAE on the held-out slices against the input and non-local means (tuned and run
#                 by the preparation), and denoise_gpu.png
#   and meanwhile the correctness checks, each a pass/fail with its seconds and the tail of its log:
#   train_2d_bf16 unconditional 2D: bf16 autocast, channels-last, torch.compile, fused Adam
#   train_3d_fp16 unconditional 3D with fp16 and the gradient scaler, R1 in float32
#   train_tasks   every other task's debug config (pix2pix, label2image, cyclegan, inpaint, conditional) and
#                 the 2D low-dose enhancer with pairs simulated on the GPU (bf16, channels-last)
#   resume        2N steps against N + resume + N (fp32); cuDNN may pick non-deterministic kernels, so the
#                 largest weight difference is recorded rather than required to be 0
#   synthesize    NIfTI and DICOM from a CUDA-trained checkpoint, with --device cuda
#   oom           an impossible batch ends with exit 2 and "out of GPU memory" (one line)
#
# The lent GPU machine has PyTorch (and numpy, scipy, click, rich, pyyaml) but not medgan's other dependencies:
# `make gpu-prep` (here, with PyPI) downloads them as CPython 3.12 wheels into .whl/ and prepares the study's
# real brain MR slices in .study_data/; name both in the call's carry list (and .cache/denoise_study/data_1.25mm,
# the denoising study's scans and evaluation set, for the denoise step). This script installs the wheels when
# .whl/ is there. SUITE_SECONDS (default 290) is the whole budget; later steps shrink or are skipped to keep to it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_suite_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
PY=${PYTHON:-python3}
START=$SECONDS
BUDGET=${SUITE_SECONDS:-290}
left() { echo $((BUDGET - (SECONDS - START))); }
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed" >&2; exit 1; }
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
# SUITE_MODE=smoke: every step, tiny and short (about 2 minutes), to find what breaks on this machine first.
if [ "${SUITE_MODE:-full}" = smoke ]; then
  BENCH=(--only 2d --steps 4 --warmup 2 --repeats 1 --no-compile) EVAL=(--images 500) STUDY_SEEDS="0"
  STUDY_SAMPLES=32 BUDGET=${SUITE_SECONDS:-150} ENHANCE=(--size 256 256 128 --repeats 1)
else
  BENCH=(--repeats 1 --steps 30 --warmup 5 --defaults) EVAL=() STUDY_SEEDS="0 1 2" STUDY_SAMPLES=500
  ENHANCE=(--repeats 5)
fi
RESULTS="$OUT/checks.jsonl"
: >"$RESULTS"
LOGS="$OUT/logs"
mkdir -p "$LOGS"

# check NAME SECONDS COMMAND...: run with a time limit, log to $LOGS/NAME.log, record the outcome.
check() {
  local name=$1 limit=$2 began=$SECONDS status
  shift 2
  timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1 <&0
  status=$?
  "$PY" - "$name" "$status" "$((SECONDS - began))" "$LOGS/$name.log" >>"$RESULTS" <<'EOF'
import json, sys
name, status, seconds, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tail = open(log, errors="replace").read()[-1500:]
print(json.dumps({"check": name, "passed": status == 0, "status": status, "seconds": seconds, "log_tail": tail}))
EOF
  echo "$name: $([ "$status" -eq 0 ] && echo passed || echo "FAILED ($status)") in $((SECONDS - began)) s"
}

check environment 30 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
  --format=csv; $PY -c 'import torch, monai, pydantic, numpy; print(torch.__version__, torch.version.cuda,
  monai.__version__, pydantic.__version__, numpy.__version__, torch.cuda.get_device_name())'; nproc; free -g"
cat "$LOGS/environment.log"

# ---- Phase A: timings, nothing else on the GPU -------------------------------------------------------------
check peak 45 "$PY" - "$OUT/peak.json" <<'EOF'
import json, sys, torch
a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
for _ in range(3):
    a @ b
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
start.record()
for _ in range(20):
    a @ b
end.record()
torch.cuda.synchronize()
tflops = 20 * 2 * 8192**3 / (start.elapsed_time(end) / 1e3) / 1e12
json.dump({"device": torch.cuda.get_device_name(), "bf16_matmul_tflops": tflops, "torch": torch.__version__},
          open(sys.argv[1], "w"))
print(f"bf16 matmul: {tflops:.0f} TFLOP/s on {torch.cuda.get_device_name()}")
EOF
PEAK=$("$PY" -c "import json; print(json.load(open('$OUT/peak.json'))['bf16_matmul_tflops'])" 2>/dev/null || echo "")

check bench 100 "$PY" benchmarks/train_bench.py "${BENCH[@]}" --json "$OUT/train_bench.json" \
  ${PEAK:+--peak-tflops "$PEAK"}
grep -v '^\[' "$LOGS/bench.log" | tail -14
check eval_bench 45 "$PY" benchmarks/eval_bench.py --device cuda --no-peer "${EVAL[@]}" \
  --json "$OUT/eval_bench.json"
grep -v '^\[' "$LOGS/eval_bench.log" | tail -6
check eval_effnet 30 "$PY" benchmarks/eval_bench.py --device cuda --no-peer --extractor efficientnet_lite0 \
  --images 2000 --json "$OUT/eval_effnet.json"
grep -v '^\[' "$LOGS/eval_effnet.log" | tail -3
check enhance_bench 40 "$PY" benchmarks/enhance_bench.py --device cuda "${ENHANCE[@]}" --budget-s 25 \
  --json "$OUT/enhance_bench.json"
grep -v '^\[' "$LOGS/enhance_bench.log" | tail -12
check degrade_bench 30 "$PY" benchmarks/degrade_bench.py --device cuda --repeats 2 --no-peer \
  --json "$OUT/degrade_bench.json"
grep -v '^\[' "$LOGS/degrade_bench.log" | tail -10
check lesion_bench 30 "$PY" benchmarks/lesion_bench.py --repeats 2 --skip-command --json "$OUT/lesion_bench.json"
grep -v '^\[' "$LOGS/lesion_bench.log" | tail -6

# ---- Phase B: the small-data study, with the correctness checks beside it --------------------------------------
STUDY_PID=""
if [ -d .study_data ]; then
  STUDY_S=$(($(left) - 10))  # start-up (about 20 s), training, then about 40 s of evaluation
  MINUTES=$("$PY" -c "print(round(max(0.3, min(3.0, ($STUDY_S - 65) / 60)), 2))")
  echo "small_data: $MINUTES minutes of training per seed, seeds side by side, $STUDY_S s in all"
  check small_data $((STUDY_S + 20)) "$PY" benchmarks/small_data_study.py run --data .study_data \
    --out "$WORK/study" --device cuda --seeds $STUDY_SEEDS --minutes "$MINUTES" --budget-s "$STUDY_S" \
    --samples $STUDY_SAMPLES --stock-seeds 0 --figure "$OUT/small_data.png" --json "$OUT/small_data_study.json" &
  STUDY_PID=$!
else
  echo "small_data: skipped (no .study_data/: run benchmarks/small_data_study.py prepare --out .study_data)"
fi
DENOISE_PID="" DENOISE_DATA=.cache/denoise_study/data_1.25mm
if [ -f "$DENOISE_DATA/manifest.json" ]; then
  DENOISE_MINUTES=$([ "${SUITE_MODE:-full}" = smoke ] && echo 0.2 || echo 1.0)
  check denoise 150 "$PY" benchmarks/denoise_study.py --device cuda --minutes "$DENOISE_MINUTES" \
    --data "$DENOISE_DATA" --out "$WORK/denoise" --json "$OUT/denoise_study.json" --figure "$OUT/denoise_gpu.png" &
  DENOISE_PID=$!
else
  echo "denoise: skipped (no $DENOISE_DATA: make gpu-prep, and carry that path)"
fi

CUDA=(--set train.device=cuda --set train.log_every_steps=10 --set train.sample_every_steps=20
      --set train.checkpoint_every_steps=20 --set train.steps=20)
check train_2d_bf16 90 "$PY" -m medgan train -c configs/debug_cpu_unconditional.yaml --run-dir "$WORK/u2d" \
  "${CUDA[@]}" --set train.precision=bf16 --set train.channels_last=true --set train.batch_size=32 \
  --set train.compile=true
check train_3d_fp16 45 "$PY" -m medgan train -c configs/debug_cpu_3d.yaml --run-dir "$WORK/u3d" "${CUDA[@]}" \
  --set train.precision=fp16
check train_tasks 90 bash -c "
  $PY -c \"from medgan.data.phantom_pairs import write_phantom_pairs as w; w('$WORK/pairs', count=4)\" &&
  for task in pix2pix label2image cyclegan inpaint conditional enhance_ct_lowdose_2d; do
    extra=''; case \$task in pix2pix|label2image) extra='--set data.source=$WORK/pairs/pairs.csv';; esac
    $PY -m medgan train -c configs/debug_cpu_\$task.yaml --run-dir $WORK/\$task ${CUDA[*]} \$extra \
      --set train.precision=bf16 --set train.channels_last=true || exit 1
  done"
check resume 60 "$PY" - "$WORK" <<'EOF'
import sys
from medgan.config import load_config
from medgan.training import TrainConfig, train
from medgan.tasks.checkpoint import latest_checkpoint, load_checkpoint
work = sys.argv[1]
common = ["train.device=cuda", "train.precision=fp32", "train.checkpoint_every_steps=5", "train.log_every_steps=5",
          "train.sample_every_steps=100", "train.tensorboard=false"]
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
    --format dicom --device cuda && ls $WORK/s_nii $WORK/s_dcm"
check oom 45 bash -c "
  $PY -m medgan train -c configs/debug_cpu_3d.yaml --run-dir $WORK/oom --set train.device=cuda \
    --set data.image_size=[128,128,128] --set data.spacing_mm=[2.0,2.0,1.125] --set train.batch_size=1024 \
    --set generator.options={} --set discriminator.options={} >$WORK/oom.txt 2>&1
  status=\$?; cat $WORK/oom.txt
  [ \$status -eq 2 ] && [ \$(wc -l <$WORK/oom.txt) -eq 1 ] && grep -q 'out of GPU memory' $WORK/oom.txt"
[ -n "$DENOISE_PID" ] && wait "$DENOISE_PID"
grep -v "^\[" "$LOGS/denoise.log" 2>/dev/null | tail -9
[ -n "$STUDY_PID" ] && wait "$STUDY_PID"
grep -v "^\[" "$LOGS/small_data.log" 2>/dev/null | tail -14

"$PY" - "$OUT" "$((SECONDS - START))" <<'EOF'
import json, os, sys
out, seconds = sys.argv[1], int(sys.argv[2])
checks = [json.loads(line) for line in open(os.path.join(out, "checks.jsonl"))]
summary = {"seconds": seconds, "checks": {c["check"]: c for c in checks}}
for name in ("peak", "train_bench", "eval_bench", "eval_effnet", "enhance_bench", "degrade_bench", "lesion_bench",
             "small_data_study", "denoise_study"):
    path = os.path.join(out, f"{name}.json")
    if os.path.exists(path):
        summary[name] = json.load(open(path))
json.dump(summary, open(os.path.join(out, "gpu_suite.json"), "w"), indent=2)
for c in checks:
    print(f"{c['check']:14s} {'passed' if c['passed'] else 'FAILED'} {c['seconds']:4d} s")
print(f"{sum(c['passed'] for c in checks)} passed, {sum(not c['passed'] for c in checks)} failed in {seconds} s")
EOF
# Only 8 files come back from a lent machine: gpu_suite.json (everything above), the logs and parts in one archive.
(cd "$OUT" && parts=$(ls ./*.json 2>/dev/null | grep -v gpu_suite.json) \
  && tar czf logs.tar.gz logs checks.jsonl $parts && rm -rf logs checks.jsonl $parts)
ls -la "$OUT"
rm -rf "$WORK"
