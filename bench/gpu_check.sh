#!/usr/bin/env bash
# The prepared check for a lent GPU machine (one H100/H200 class GPU, its own python3 with torch, cv2,
# pandas, matplotlib, tqdm): about 8 minutes. Writes one log per step under $OUT (default bench-gpu-out/).
#   1. the batched device augmentation against the CPU path, on CUDA (tests/test_device_augment.py)
#   2. training-step images/s at the Cityscapes and NYU defaults, each speed switch on and off, each
#      balancing method, GPU busy share (bench/training_step.py)
#   3. real epochs of main_cross_cs.py --uncertainty_weights on a generated 2,975 / 500 image dataset
#      at 128x256 in the MTAN layout, data loading and validation included, GPU utilisation, and the
#      projected 250-epoch time (bench/epoch_time.py)
#   4. the same step with torch.compile (Cityscapes, plain sum), time-limited
#   5. the step of each comparison model (MTAN, AdaMT-Net, KD4MTL) at the Cityscapes defaults
# Run from the repository root: bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    $PYTHON -c "import torch, cv2; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cv2', cv2.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/machine.txt"
# Each step's whole output goes to its log under $OUT (kept even when a step hits its time limit).
timeout 120 $PYTHON -m pytest -q -o addopts="" -p no:cacheprovider tests/test_device_augment.py -k cuda 2>&1 \
    | tee "$OUT/device_augment.log" | tail -3
timeout 300 $PYTHON -m bench.training_step --steps 30 --warmup 10 2>&1 | tee "$OUT/training_step.log" | tail -40
timeout 240 $PYTHON -m bench.epoch_time --epochs 3 -- --uncertainty_weights --workers 12 2>&1 \
    | tee "$OUT/epoch.log" | tail -8
timeout 120 $PYTHON -m bench.training_step --datasets cityscapes --balancing none --compile --steps 30 --warmup 15 2>&1 \
    | tee "$OUT/compile.log" | tail -6
timeout 60 $PYTHON -m bench.training_step --datasets cityscapes --models mtan adamtnet kd4mtl --balancing none \
    --steps 20 --warmup 5 2>&1 | tee "$OUT/models.log" | tail -12
