#!/usr/bin/env bash
# Trains on one host with all of its GPUs: one process, the batch split over the local devices.
#
#   launch/local_gpus.sh [--dry_run] [--gpus 0,1,2,3] [--max_restarts N] \
#       CONFIG WORKDIR [dla_jax.main flags and --config.* overrides...]
#
#   launch/local_gpus.sh configs/dla_r50_fpn_1x_coco.py ~/runs/r50 --config.optim.base_lr=0.02
#
# --gpus          CUDA_VISIBLE_DEVICES for the run (default: every GPU).
# --max_restarts  run again this many times after a crash; each run resumes from the last
#                 checkpoint in WORKDIR (default 0).
# --dry_run       print the command instead of running it (also DRY_RUN=1).
# SIGTERM sent to this script reaches training, which checkpoints and exits 0. A run that would
# compute on the CPU stops at start-up, naming the install line of JAX for GPUs
# (--config.train.require_accelerator=false after WORKDIR lets it run).
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

gpus=''
max_restarts=0
while (( $# )); do
  case $1 in
    --dry_run) DRY_RUN=1; shift ;;
    --gpus) need_value "$@"; gpus=$2; shift 2 ;;
    --max_restarts)
      need_value "$@"
      [[ $2 =~ ^[0-9]+$ ]] || die "--max_restarts: expected a count, got '$2'"
      max_restarts=$2; shift 2 ;;
    --) shift; break ;;
    --*) die "unknown option $1 (options come before CONFIG WORKDIR)" ;;
    *) break ;;
  esac
done
need_positionals $#
config=$1 workdir=$2
shift 2

command=()
if [[ -n $gpus ]]; then command+=(env "CUDA_VISIBLE_DEVICES=$gpus"); fi
command+=("$PYTHON" -m dla_jax.main --config "$config" --workdir "$workdir" "${REQUIRE_ACCELERATOR[@]}"
  "$@")

restarts=0
until run_forwarding_sigterm "${command[@]}"; do
  status=$?
  (( restarts < max_restarts )) || exit "$status"
  restarts=$((restarts + 1))
  echo "training exited with status $status; restart $restarts of $max_restarts" >&2
done
