#!/usr/bin/env bash
# One process: the local GPU if there is one, else the CPU.
#   train/single.sh CONFIG [key=value ...]
#   train/single.sh configs/cifar10dvs_spikformer_semm_2_256.yaml data.root=$HOME/data
set -euo pipefail
exec spikemoe train "$@"
