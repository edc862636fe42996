# shellcheck shell=bash
# Shared by the launch scripts (sourced, not run): argument checks, printing and dry runs.
#
# Every command a script runs goes through `run`, which prints it shell-quoted (so it can be
# copied and pasted) after "+ ", and runs it, unless DRY_RUN=1, when it is only printed.

DRY_RUN=${DRY_RUN:-0}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The interpreter with dla_jax installed: $PYTHON, else the README's .venv, else python3.
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi

# Every launch script trains on accelerators: a run whose JAX would compute on the CPU stops at
# start-up and names the install line (dla_jax/runtime.py). An override after WORKDIR wins.
# shellcheck disable=SC2034  # read by the scripts that source this file
REQUIRE_ACCELERATOR=(--config.train.require_accelerator=true)

die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# need_value OPTION VALUE: VALUE must be present (the word after OPTION).
need_value() {
  [[ -n ${2:-} && $2 != --* ]] || die "$1 needs a value"
}

# need_positionals N_GIVEN: CONFIG and WORKDIR must follow the options.
need_positionals() {
  (( $1 >= 2 )) || die "usage: $(basename "$0") [options] CONFIG WORKDIR [dla_jax.main flags...]"
}

# quote WORDS...: the words joined by spaces, each single-quoted where the shell needs it.
quote() {
  local words=() word
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then words+=("$word"); else words+=("${word@Q}"); fi
  done
  echo "${words[*]}"
}

run() {
  echo "+ $(quote "$@")"
  if [[ $DRY_RUN != 1 ]]; then "$@"; fi
}

# run_forwarding_sigterm CMD...: like `run`, and a SIGTERM sent to this script reaches CMD, so
# that training checkpoints and exits 0 when the machine is preempted.
run_forwarding_sigterm() {
  if [[ $DRY_RUN == 1 ]]; then
    run "$@"
    return
  fi
  local child status forwarded=0
  echo "+ $(quote "$@")"
  "$@" &
  child=$!
  trap 'forwarded=1; kill -TERM "$child" 2>/dev/null' TERM
  wait "$child"
  status=$?
  # `wait` returns early (status > 128) when the trap ran; wait again for CMD's own status.
  while (( forwarded )); do
    forwarded=0
    wait "$child"
    status=$?
  done
  trap - TERM
  return "$status"
}
