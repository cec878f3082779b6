#!/usr/bin/env bash
# One machine, N processes (one per GPU): DistributedDataParallel over NCCL (gloo on CPU).
# data.batch_size is the GLOBAL batch: the same config trains the same model on 1 or N GPUs.
#   NPROC=8 train/torchrun.sh CONFIG [key=value ...]
set -euo pipefail
NPROC=${NPROC:-$(python -c 'import torch; print(max(torch.cuda.device_count(), 1))')}
exec torchrun --standalone --nproc_per_node="$NPROC" -m spikemoe train "$@"
