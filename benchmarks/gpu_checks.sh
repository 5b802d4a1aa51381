#!/usr/bin/env bash
# The GPU paths that CI (CPU only) cannot exercise, in one short script for a lent CUDA machine:
#   1. benchmarks/strategies.py on CUDA: trainable %, adapter size and torch.cuda.max_memory_allocated
#      per strategy (qlora included) for ViT-B/16 and ConvNeXt-T at the same batch size;
#   2. real `aether` runs on the embedded digits with trainer=gpu (bf16-mixed): quickstart, vit_lora,
#      vit_qlora (bitsandbytes 4-bit) and vit_full_llrd (layer-wise LR decay), each checked against
#      the run-directory contract when check_run.py is at hand.
# Usage (repo root, CUDA machine): bash benchmarks/gpu_checks.sh [OUT_DIR]
# Python packages missing there can come as wheels in .whl/ (installed to /tmp/site first).
set -u
OUT=${1:-${OUT:-/tmp/aether-gpu}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline BENTOML_DO_NOT_TRACK=true
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, timm, peft, lightning, bitsandbytes as b; print('torch', torch.__version__, 'timm', timm.__version__, 'peft', peft.__version__, 'lightning', lightning.__version__, 'bnb', b.__version__, 'cuda', torch.cuda.is_available())"

echo "== 1. strategies benchmark on CUDA (three invocations side by side: CUDA peak memory is per process,"
echo "   so running them at once leaves the memory columns exact; step times are shared-GPU times)"
ALL="full linear_probe lora gradual_unfreeze qlora"
python3 benchmarks/strategies.py --device cuda --batch-size 8 --strategies full lora qlora --out-dir "$OUT/b8" > /tmp/sb8.log 2>&1 &
python3 benchmarks/strategies.py --device cuda --batch-size 32 --strategies $ALL --out-dir "$OUT/b32" > /tmp/sb32.log 2>&1 &
python3 benchmarks/strategies.py --device cuda --batch-size 32 --strategies full lora qlora --grad-checkpointing \
  --out-dir "$OUT/b32gc" > /tmp/sb32gc.log 2>&1 &
echo "== 2. real runs on the GPU"
RUNS=/tmp/aether-gpu-runs
rm -rf $RUNS; mkdir -p $RUNS
run() {  # name, overrides...
  local name=$1; shift
  local t0=$(date +%s)
  timeout 240 python3 -m aether "$@" hydra.run.dir=$RUNS/$name logger=csv > $RUNS/$name.log 2>&1
  local rc=$?
  echo "-- $name: rc=$rc in $(( $(date +%s) - t0 )) s"
  tail -4 $RUNS/$name.log
  if [ -f .whl/check_run.py ]; then python3 .whl/check_run.py $RUNS/$name | tail -3; fi
  python3 - "$RUNS/$name" <<'PY'
import json, sys, pathlib
p = pathlib.Path(sys.argv[1]) / "metrics.json"
if p.exists():
    m = json.loads(p.read_text())
    t = m.get("test", {}); tm = m.get("time", {}); pr = m.get("params", {})
    print(f"   test.accuracy={t.get('accuracy')} params.trainable={pr.get('trainable')}/{pr.get('total')} "
          f"img/s={tm.get('images_per_s')} train_s={tm.get('train_s')} precision={m.get('trainer', {}).get('precision', '?')}")
PY
}
SMALL="trainer.max_epochs=3 data.image_size=64 data.crop_pct=1.0 model.pretrained=false"
if [ "${ONLY_QLORA:-0}" != 1 ]; then
run quickstart +recipe=quickstart trainer=gpu
run vit_lora +recipe=vit_lora trainer=gpu $SMALL +model.kwargs.img_size=64 data.batch_size=128 optimizer.lr=3e-3
fi
run vit_qlora +recipe=vit_qlora $SMALL +model.kwargs.img_size=64 data.batch_size=128 optimizer.lr=3e-3
[ "${ONLY_QLORA:-0}" != 1 ] && run vit_full_llrd +recipe=vit_full_llrd $SMALL +model.kwargs.img_size=64 data.batch_size=128 scheduler.warmup_epochs=1
wait
for f in /tmp/sb8.log /tmp/sb32.log /tmp/sb32gc.log; do echo "-- $f"; tail -8 $f; done
tar czf "$OUT/runs.tgz" -C $RUNS --exclude='*.ckpt' --exclude='*.safetensors' . 2>/dev/null
ls -la "$OUT"
