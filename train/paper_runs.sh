#!/usr/bin/env bash
# Reproduce one paper run by name. DATA is the folder holding the datasets (datasets/*.md);
# extra key=value items are passed on (e.g. run.name=..., resume=runs/...).
#   train/paper_runs.sh list
#   DATA=$HOME/data train/paper_runs.sh cifar10dvs-semm
#   DATA=/datasets NPROC=8 train/paper_runs.sh imagenet-semm-8-512 resume=runs/imagenet-semm-8-512
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$self")/.."
run="${1:-list}"; shift || true
DATA=${DATA:-$HOME/data}
single() { exec train/single.sh "configs/$1.yaml" data.root="$DATA" run.name="$run" "${@:2}"; }
multi() { NPROC=${NPROC:-8} exec train/torchrun.sh "configs/$1.yaml" data.root="$DATA" run.name="$run" "${@:2}"; }
case "$run" in
  # CIFAR10-DVS and DVS128 Gesture: 1 GPU, T = 16, 106 epochs (papers.md 2.3)
  cifar10dvs-spikformer)        single cifar10dvs_spikformer_2_256 "$@" ;;
  cifar10dvs-semm)              single cifar10dvs_spikformer_semm_2_256 "$@" ;;
  cifar10dvs-spike-driven)      single cifar10dvs_spike_driven_2_256 "$@" ;;
  cifar10dvs-spike-driven-semm) single cifar10dvs_spike_driven_semm_2_256 "$@" ;;
  # the Spike-driven Transformer's own CIFAR10-DVS recipe (papers.md 2.2): 64 x 64, T = 10, TET
  cifar10dvs-spike-driven-own)  single cifar10dvs_spike_driven_2_256 data.size=64 data.T=10 \
                                  model.img_size=[64,64] model.T=10 optim.tet=true \
                                  optim.lr=7.5e-3 schedule.epochs=200 "$@" ;;
  dvs128-spikformer)            single dvs128_spikformer_2_256 "$@" ;;
  dvs128-semm)                  single dvs128_spikformer_semm_2_256 "$@" ;;
  dvs128-spike-driven)          single dvs128_spike_driven_2_256 "$@" ;;
  dvs128-spike-driven-semm)     single dvs128_spike_driven_semm_2_256 "$@" ;;
  # CIFAR10/100: 1 GPU, T = 4, 310 epochs
  cifar10-spikformer)           single cifar10_spikformer_4_384 "$@" ;;
  cifar10-semm)                 single cifar10_spikformer_semm_4_384 "$@" ;;
  cifar100-spikformer)          single cifar100_spikformer_4_384 "$@" ;;
  cifar100-semm)                single cifar100_spikformer_semm_4_384 "$@" ;;
  # ImageNet: 8 GPUs (global batch 192), T = 4, 310 epochs
  imagenet-spikformer-8-384)    multi imagenet_spikformer_8_384 "$@" ;;
  imagenet-semm-8-384)          multi imagenet_spikformer_semm_8_384 "$@" ;;
  imagenet-spikformer-8-512)    multi imagenet_spikformer_8_512 "$@" ;;
  imagenet-semm-8-512)          multi imagenet_spikformer_semm_8_512 "$@" ;;
  list) sed -n 's/^  \([a-z0-9-]*\)) *\(single\|multi\) .*/\1/p' "$self" ;;
  *) echo "unknown run '$run'; train/paper_runs.sh list shows them" >&2; exit 2 ;;
esac
