#!/usr/bin/env bash
# Trains on a Cloud TPU VM slice: the same command on every worker of the slice through
# `gcloud compute tpus tpu-vm ssh --worker=all`; jax.distributed finds the slice's workers itself.
#
#   launch/tpu_vm.sh [--dry_run] --tpu NAME --zone ZONE [--project PROJECT] [--repo_dir DIR] \
#       [--setup] [--detach] CONFIG WORKDIR [dla_jax.main flags and --config.* overrides...]
#
#   launch/tpu_vm.sh --tpu my-v4-32 --zone us-central2-b --setup \
#       configs/dla_r50_fpn_1x_coco.py /mnt/runs/r50 --config.train.global_batch=64
#
# --setup     first copy this checkout (its committed HEAD, via `git archive`) to every worker
#             and install it with jax[tpu] into DIR/.venv, at the versions the tests ran with
#             (launch/constraints.txt).
# --repo_dir  where the checkout lives on the workers, relative to the home folder
#             (default dla-jax). CONFIG is relative to it.
# --detach    keep training when the ssh session ends: run under nohup, output to
#             DIR/train.log on each worker.
# --dry_run   print the gcloud commands instead of running them (also DRY_RUN=1).
# WORKDIR must be one folder every worker sees (a gcsfuse mount of a bucket, Filestore); on a
# single-worker slice a local disk will do. On preemption every worker gets SIGTERM: training
# checkpoints and exits 0, and the same command resumes it.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tpu='' zone='' project='' repo_dir=dla-jax setup=0 detach=0
while (( $# )); do
  case $1 in
    --dry_run) DRY_RUN=1; shift ;;
    --tpu) need_value "$@"; tpu=$2; shift 2 ;;
    --zone) need_value "$@"; zone=$2; shift 2 ;;
    --project) need_value "$@"; project=$2; shift 2 ;;
    --repo_dir) need_value "$@"; repo_dir=$2; shift 2 ;;
    --setup) setup=1; shift ;;
    --detach) detach=1; shift ;;
    --) shift; break ;;
    --*) die "unknown option $1 (options come before CONFIG WORKDIR)" ;;
    *) break ;;
  esac
done
[[ -n $tpu ]] || die '--tpu: the TPU VM name is required'
[[ -n $zone ]] || die '--zone: the TPU VM zone is required'
need_positionals $#
config=$1 workdir=$2
shift 2

target=(--zone="$zone")
if [[ -n $project ]]; then target+=(--project="$project"); fi

if (( setup )); then
  archive=${TMPDIR:-/tmp}/dla_jax_$$.tar.gz
  run git -C "$REPO" archive --format=tar.gz -o "$archive" HEAD
  run gcloud compute tpus tpu-vm scp "$archive" "$tpu:dla_jax.tar.gz" "${target[@]}" --worker=all
  install="mkdir -p $(quote "$repo_dir") && tar -xzf dla_jax.tar.gz -C $(quote "$repo_dir")"
  install+=" && cd $(quote "$repo_dir") && python3 -m venv .venv"
  install+=" && .venv/bin/python -m pip install -q -c launch/constraints.txt -e '.[tpu]'"
  run gcloud compute tpus tpu-vm ssh "$tpu" "${target[@]}" --worker=all --command="$install"
  if [[ $DRY_RUN != 1 ]]; then rm -f "$archive"; fi
fi

train="cd $(quote "$repo_dir") && "
if (( detach )); then train+='nohup '; fi
train+=$(quote .venv/bin/python -m dla_jax.main --distributed --config "$config" \
  --workdir "$workdir" "${REQUIRE_ACCELERATOR[@]}" "$@")
if (( detach )); then train+=' > train.log 2>&1 < /dev/null &'; fi
run gcloud compute tpus tpu-vm ssh "$tpu" "${target[@]}" --worker=all --command="$train"
