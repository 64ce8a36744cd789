#!/usr/bin/env bash
# ptmjax on a Cloud TPU VM or pod slice, step by step, from your workstation.
#
#   experiments/tpu/run.sh create  --tpu NAME --zone ZONE [--type v4-8] [--version V] [--spot]
#   experiments/tpu/run.sh install --tpu NAME --zone ZONE [--ref main]
#   experiments/tpu/run.sh data    --bucket gs://BUCKET --shared ../shared/data
#   experiments/tpu/run.sh train   --tpu NAME --zone ZONE --bucket gs://BUCKET --run NAME
#                                  [--config yaam] [-- --config.KEY=VALUE ...]
#   experiments/tpu/run.sh fetch   --bucket gs://BUCKET --run NAME [--out runs/]
#   experiments/tpu/run.sh delete  --tpu NAME --zone ZONE
#
# Every step takes --project P and --dry-run (print the commands, run nothing).
# `install` copies this checkout (git archive of --ref) to every worker and installs
# ptmjax[tpu] there; `data` builds the TFDS datasets here (TFDS cannot build into
# gs://) and copies them to the bucket; `train` runs the same `ptmjax train
# --distributed` on every worker at once with the work dir on gs://, so a preempted
# slice resumes with the same command. Not run from this repository's CI (no TPU or
# cloud access there): shellcheck and tests/test_launch_scripts.py check the
# argument handling and the commands it would run.
set -euo pipefail

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

die() {
  echo "run.sh: $*" >&2
  exit 2
}

run() {
  # Prints the command (quoted as a shell would need it); runs it unless --dry-run.
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
tpu="" zone="" type="v4-8" version="tpu-ubuntu2204-base" spot=0 project="" ref="main"
bucket="" shared="" run_name="" config="yaam" out="runs" dry_run=0
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --tpu) tpu=${2:?--tpu needs a value}; shift 2 ;;
    --zone) zone=${2:?--zone needs a value}; shift 2 ;;
    --type) type=${2:?--type needs a value}; shift 2 ;;
    --version) version=${2:?--version needs a value}; shift 2 ;;
    --spot) spot=1; shift ;;
    --project) project=${2:?--project needs a value}; shift 2 ;;
    --ref) ref=${2:?--ref needs a value}; shift 2 ;;
    --bucket) bucket=${2:?--bucket needs a value}; shift 2 ;;
    --shared) shared=${2:?--shared needs a value}; shift 2 ;;
    --run) run_name=${2:?--run needs a value}; shift 2 ;;
    --config) config=${2:?--config needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument '$1' (see the usage: run.sh with no arguments)" ;;
  esac
done

need() {
  local name value
  for name in "$@"; do
    value=${!name}
    [[ -n "$value" ]] || die "$step needs --${name//_name/}"
  done
}

check_bucket() {
  [[ "$bucket" == gs://* ]] || die "--bucket must be a gs:// URL, got '$bucket'"
  bucket=${bucket%/}
}

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=()
set_where() {
  where=(--zone "$zone")
  if [[ -n "$project" ]]; then
    where+=(--project "$project")
  fi
}

case $step in
  create)
    need tpu zone
    set_where
    args=("${gcloud_tpu[@]}" create "$tpu" "${where[@]}" --accelerator-type "$type" --version "$version")
    if [[ "$spot" == 1 ]]; then
      args+=(--spot)
    fi
    run "${args[@]}"
    ;;
  install)
    need tpu zone
    set_where
    archive=$(mktemp -t ptmjax.XXXXXX.tar.gz)
    run git -C "$(dirname "$0")/../.." archive --format=tar.gz -o "$archive" "$ref"
    run "${gcloud_tpu[@]}" scp "$archive" "$tpu:ptmjax.tar.gz" "${where[@]}" --worker=all
    run "${gcloud_tpu[@]}" ssh "$tpu" "${where[@]}" --worker=all --command \
      "rm -rf ptmjax && mkdir ptmjax && tar -xzf ptmjax.tar.gz -C ptmjax && cd ptmjax && python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[tpu]' && python -c 'import jax; print(jax.process_index(), jax.devices())'"
    ;;
  data)
    need bucket shared
    check_bucket
    [[ -d "$shared" || "$dry_run" == 1 ]] || die "--shared '$shared' is not a directory"
    local_dir=$(mktemp -d -t ptmjax_tfds.XXXXXX)
    run ptmjax data build yaam --manual-dir "$shared" --data-dir "$local_dir"
    run ptmjax data build ptmdb --config all --manual-dir "$shared/multiorganism" --data-dir "$local_dir"
    run gcloud storage cp -r "$local_dir/yaam" "$local_dir/ptmdb" "$bucket/tfds_data/"
    ;;
  train)
    need tpu zone bucket run_name
    check_bucket
    set_where
    command="cd ptmjax && . .venv/bin/activate && ptmjax train --distributed --config $(printf '%q' "$config") --workdir $(printf '%q' "$bucket/runs/$run_name") --config.data.data_dir=$(printf '%q' "$bucket/tfds_data")"
    for x in "${extra[@]}"; do
      command+=" $(printf '%q' "$x")"
    done
    run "${gcloud_tpu[@]}" ssh "$tpu" "${where[@]}" --worker=all --command "$command"
    ;;
  fetch)
    need bucket run_name
    check_bucket
    run mkdir -p "$out"
    # Metrics, config and the final model folder; the checkpoints stay in the bucket.
    run gcloud storage cp -r "$bucket/runs/$run_name/final" "$bucket/runs/$run_name/metrics.jsonl" \
      "$bucket/runs/$run_name/config.json" "$out/$run_name/"
    ;;
  delete)
    need tpu zone
    set_where
    run "${gcloud_tpu[@]}" delete "$tpu" "${where[@]}" --quiet
    ;;
  -h | --help | help) usage ;;
  *) die "unknown step '$step': create, install, data, train, fetch or delete" ;;
esac
