#!/usr/bin/env bash
# Trains on several GPU hosts: one process per host, each using all of its GPUs, joined with
# jax.distributed. Run it once on every host, or let SLURM do so.
#
#   launch/multihost_gpu.sh [--dry_run] [--coordinator HOST:PORT] [--num_processes N] \
#       [--process_id I] [--port P] CONFIG WORKDIR [dla_jax.main flags and --config.* overrides...]
#
# By hand, on each of 2 hosts (host0 coordinates):
#   launch/multihost_gpu.sh --coordinator host0:12345 --num_processes 2 --process_id 0 \
#       configs/dla_r50_fpn_1x_coco.py /shared/runs/r50       # on host0
#   ... --process_id 1 ...                                     # on host1
# Under SLURM (the values come from SLURM's environment):
#   srun --nodes=2 --ntasks-per-node=1 --gpus-per-task=8 \
#       launch/multihost_gpu.sh configs/dla_r50_fpn_1x_coco.py /shared/runs/r50
#
# --coordinator    HOST:PORT of process 0 (default: the first host of $SLURM_JOB_NODELIST, at
#                  --port, default 12345).
# --num_processes  processes in the run (default $SLURM_NTASKS).
# --process_id     this process, 0..N-1 (default $SLURM_PROCID).
# --dry_run        print the command instead of running it (also DRY_RUN=1).
# WORKDIR must be one folder every host sees (NFS, Lustre, a gcsfuse mount): checkpoints are
# written by all processes together. SIGTERM on any host makes every process checkpoint at the
# same step and exit 0.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

coordinator='' num_processes=${SLURM_NTASKS:-} process_id=${SLURM_PROCID:-} port=12345
while (( $# )); do
  case $1 in
    --dry_run) DRY_RUN=1; shift ;;
    --coordinator) need_value "$@"; coordinator=$2; shift 2 ;;
    --num_processes) need_value "$@"; num_processes=$2; shift 2 ;;
    --process_id) need_value "$@"; process_id=$2; shift 2 ;;
    --port) need_value "$@"; port=$2; shift 2 ;;
    --) shift; break ;;
    --*) die "unknown option $1 (options come before CONFIG WORKDIR)" ;;
    *) break ;;
  esac
done
need_positionals $#
config=$1 workdir=$2
shift 2

if [[ -z $coordinator && -n ${SLURM_JOB_NODELIST:-} ]]; then
  first_host=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
  coordinator=$first_host:$port
fi
[[ -n $coordinator ]] || die "--coordinator: not given and not under SLURM (no \$SLURM_JOB_NODELIST)"
[[ $coordinator == *:* ]] || die "--coordinator: expected HOST:PORT, got '$coordinator'"
[[ $num_processes =~ ^[1-9][0-9]*$ ]] ||
  die "--num_processes: expected a positive count (or \$SLURM_NTASKS), got '$num_processes'"
if ! [[ $process_id =~ ^[0-9]+$ ]] || (( process_id >= num_processes )); then
  die "--process_id: expected 0..$((num_processes - 1)) (or \$SLURM_PROCID), got '$process_id'"
fi

run_forwarding_sigterm "$PYTHON" -m dla_jax.main --distributed \
  --coordinator_address="$coordinator" --num_processes="$num_processes" \
  --process_id="$process_id" --config "$config" --workdir "$workdir" \
  "${REQUIRE_ACCELERATOR[@]}" "$@"
