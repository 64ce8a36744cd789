#!/usr/bin/env bash
# ptmjax on a GPU host (or several), run on the host itself from a clone of this repository.
#
#   experiments/gpu/run.sh install
#   experiments/gpu/run.sh data  --shared ../shared/data [--data-dir tfds_data]
#   experiments/gpu/run.sh train --workdir DIR_OR_GS_URL [--config yaam] [--data-dir tfds_data]
#                                [--fsdp N] [--coordinator HOST:PORT --hosts N --host-id I]
#                                [-- --config.KEY=VALUE ...]
#
# Every step takes --dry-run (print the commands, run nothing). One host: every local GPU
# in one mesh (data=-1; --fsdp N splits the state N ways when it does not fit one GPU).
# Several hosts: run `train` on each with the same --coordinator and --hosts and its own
# --host-id, and a --workdir every host sees (gs:// or a shared file system); under
# SLURM (`srun`), leave those three out: `ptmjax train` detects the job. Not run from
# this repository's CI (no GPU there): shellcheck and tests/test_launch_scripts.py
# check the argument handling and the commands it would run.
set -euo pipefail

usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

die() {
  echo "run.sh: $*" >&2
  exit 2
}

run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [[ "$dry_run" != 1 ]]; then
    "$@"
  fi
}

[[ $# -ge 1 ]] || usage
step=$1
shift
shared="" data_dir="tfds_data" workdir="" config="yaam" fsdp=1 coordinator="" hosts="" host_id=""
dry_run=0
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --shared) shared=${2:?--shared needs a value}; shift 2 ;;
    --data-dir) data_dir=${2:?--data-dir needs a value}; shift 2 ;;
    --workdir) workdir=${2:?--workdir needs a value}; shift 2 ;;
    --config) config=${2:?--config needs a value}; shift 2 ;;
    --fsdp) fsdp=${2:?--fsdp needs a value}; shift 2 ;;
    --coordinator) coordinator=${2:?--coordinator needs a value}; shift 2 ;;
    --hosts) hosts=${2:?--hosts needs a value}; shift 2 ;;
    --host-id) host_id=${2:?--host-id needs a value}; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument '$1' (see the usage: run.sh with no arguments)" ;;
  esac
done

[[ "$fsdp" =~ ^[1-9][0-9]*$ ]] || die "--fsdp must be a positive integer, got '$fsdp'"

case $step in
  install)
    run python3 -m venv .venv
    run .venv/bin/pip install -q -e '.[cuda12]'
    run .venv/bin/python -c 'import jax; print(jax.devices())'
    ;;
  data)
    [[ -n "$shared" ]] || die "data needs --shared"
    [[ "$data_dir" != gs://* ]] || die "--data-dir: build locally (TFDS cannot build into gs://), then copy"
    run .venv/bin/ptmjax data build yaam --manual-dir "$shared" --data-dir "$data_dir"
    run .venv/bin/ptmjax data build ptmdb --config all --manual-dir "$shared/multiorganism" --data-dir "$data_dir"
    ;;
  train)
    [[ -n "$workdir" ]] || die "train needs --workdir"
    args=(.venv/bin/ptmjax train --config "$config" --workdir "$workdir"
      "--config.data.data_dir=$data_dir" --config.sharding.mesh.data=-1
      "--config.sharding.mesh.fsdp=$fsdp")
    if [[ -n "$coordinator$hosts$host_id" ]]; then
      [[ -n "$coordinator" && -n "$hosts" && -n "$host_id" ]] ||
        die "several hosts need all of --coordinator, --hosts and --host-id"
      [[ "$hosts" =~ ^[0-9]+$ && "$host_id" =~ ^[0-9]+$ ]] || die "--hosts and --host-id must be integers"
      (( host_id < hosts )) || die "--host-id $host_id is not below --hosts $hosts"
      args+=(--coordinator-address "$coordinator" --num-processes "$hosts" --process-id "$host_id")
    fi
    run "${args[@]}" "${extra[@]}"
    ;;
  -h | --help | help) usage ;;
  *) die "unknown step '$step': install, data or train" ;;
esac
