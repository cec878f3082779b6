#!/usr/bin/env bash
# Several machines: run this on every node with the same MASTER_ADDR/MASTER_PORT and NNODES,
# and NODE_RANK = 0 .. NNODES-1 (torchrun's c10d rendezvous; nothing home-made).
# Rank 0 (on node 0) writes the logs and checkpoints: put run.out_dir on a shared filesystem
# so that resume=RUN_DIR works from any node.
#   MASTER_ADDR=node0 NNODES=2 NODE_RANK=0 train/multinode.sh CONFIG [key=value ...]
#   MASTER_ADDR=node0 NNODES=2 NODE_RANK=1 train/multinode.sh CONFIG [key=value ...]
set -euo pipefail
: "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"
: "${NNODES:?set NNODES to the number of machines}"
: "${NODE_RANK:?set NODE_RANK (0 on the master)}"
NPROC=${NPROC:-8}
exec torchrun --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$NPROC" \
    --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:${MASTER_PORT:-29500}" \
    --rdzv_id="${RDZV_ID:-spikemoe}" -m spikemoe train "$@"
