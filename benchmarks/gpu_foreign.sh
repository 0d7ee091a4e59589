#!/usr/bin/env bash
# Head variants on the default model's own chains plus text by other authors, on a CUDA
# machine that has the GGUF bytes of the default model but no PyPI packages.
#
#   GGUF=/tmp/model.gguf OUT=runs/foreign DATA=../shared/data benchmarks/gpu_foreign.sh
#
# Why other authors: a head trained on the default model's own greedy chains calls most
# steps of text it did not write wrong (ECE 0.69 on GPT-4's PRM800K chains). The training
# data therefore also holds the 0.5B model's chains and the GSM8K reference solutions, on
# GSM8K *train* questions the self-chains do not use; both are committed under
# data/labels/gsm8k_train_other. With GGUF_SMALL (the GGUF of qwen-coder-0.5b) set, the
# 0.5B chains and the reference chains are made afresh here instead.
#
# The script captures features of every chain in four parallel jobs (one store each,
# merged with FeatureStore.absorb), trains one head per VARIANT and seed, and scores them
# all per source on their held-out questions, plus any VAL_SETS ("NAME=PATH ...", chain
# JSONL whose features are in the store), by benchmarks/val_compare.py's rule: pairwise
# accuracy and PR-AUC per set, never pooled. A VARIANT is MIX:ATTN:CONTEXT, MIX one of
#   self        the model's own chains only
#   self_small  + the 0.5B model's chains
#   all         + the 0.5B model's chains + the reference solutions
# and ATTN / CONTEXT the head's --attn (raw | window) and --context (chain | step). An optional
# fourth field holds comma-separated extras: bal (--balance-position), aew0 / aew05
# (--after-error-weight 0, the default, / 0.5), e.g.
# all:raw:chain:bal. TRAIN_ARGS go to every `train` (e.g. "--epochs 10 --patience 3").
#
# EVAL (optional) names labelled JSONL sets captured here too (two jobs each, while the training
# features are captured); every head, and the unsupervised baselines once, are then scored on
# them with `evaluate` into $OUT/eval. LIMIT=N captures only N chains per job (a dry run).
# Timing: 12 one-thread heads on 3,200 chains need about 5 minutes; with a 10-minute
# call, capture in one call (STOP_AFTER_FEATURES=1) and train in the next.
set -u
: "${GGUF:?set GGUF to the GGUF of the default model}"
OUT=${OUT:-runs/foreign}
DATA=${DATA:-../shared/data}
PY=${PY:-python3}
VARIANTS=${VARIANTS:-"all:raw:chain all:window:chain all:window:step"}
SEEDS=${SEEDS:-"0 1"}
EVAL=${EVAL:-}
LIMIT=${LIMIT:-0}
TRAIN_ARGS=${TRAIN_ARGS:-}  # e.g. "--epochs 10 --patience 3" to bound the time of many heads
BATCH=${BATCH:-160}
SELF_A=${SELF_A:-"data/labels/gsm8k_train/shard-[0-3].jsonl"}
SELF_B=${SELF_B:-"data/labels/gsm8k_train/shard-[4-7].jsonl"}
SMALL_L=${SMALL_L:-data/labels/gsm8k_train_other/qwen-coder-0.5b.jsonl}
GOLD_L=${GOLD_L:-data/labels/gsm8k_train_other/gsm8k-reference.jsonl}
export UHEAD_VIZ_CACHE=${UHEAD_VIZ_CACHE:-/tmp/uhead_viz}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
STORE=$OUT/store
CLI="$PY -m uhead_viz"
mkdir -p "$OUT/chains" "$OUT/labels" "$OUT/heads" "$OUT/logs"
log() { echo "[$(date +%T)] $*"; }
convert() {  # PACK GGUF
  $PY -c "
import logging, sys
from pathlib import Path
from uhead_viz.packs import PACKS, converted_dir, convert_gguf
logging.basicConfig(level=logging.INFO)
pack = PACKS[sys.argv[1]]
if not (converted_dir(pack) / '.complete').is_file():
    convert_gguf(pack, Path(sys.argv[2]))
" "$1" "$2"
}

log "start: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo no GPU)"
if [ -n "${GGUF_SMALL:-}" ]; then
  convert qwen-coder-0.5b "$GGUF_SMALL" >"$OUT/logs/convert_small.log" 2>&1 &
  small=$!
fi
convert qwen-coder-1.5b "$GGUF" || exit 1
log "default model ready"
# features of the self-chains (already labelled in the repo) start at once, two jobs
$CLI features --limit "$LIMIT" --input $SELF_A --store "$STORE.a" >"$OUT/logs/feat_a.log" 2>&1 &
fa=$!
$CLI features --limit "$LIMIT" --input $SELF_B --store "$STORE.b" >"$OUT/logs/feat_b.log" 2>&1 &
fb=$!
eval_jobs=()
for e in $EVAL; do  # held-out sets: two capture jobs each, rows split in file order
  n=$(basename "$e" .jsonl)
  mkdir -p "$OUT/eval/$n"
  split -n l/2 -d "$e" "$OUT/eval/$n/part"
  for part in 00 01; do
    cp "$OUT/eval/$n/part$part" "$OUT/eval/$n/part$part.jsonl"
    $CLI features --limit "$LIMIT" --input "$OUT/eval/$n/part$part.jsonl" --store "$OUT/eval/$n/store.$part" \
      >"$OUT/logs/feat_eval_$n.$part.log" 2>&1 &
    eval_jobs+=($!)
  done
done

if [ -n "${GGUF_SMALL:-}" ]; then
  wait $small || { log "0.5B conversion failed"; cat "$OUT/logs/convert_small.log"; exit 1; }
  # GSM8K-train questions 1600-2399 (the self-chains use 0-1599), ids of their own
  $CLI generate --model qwen-coder-0.5b --input "$DATA/gsm8k/train.jsonl" --output "$OUT/chains/small.jsonl" \
    --offset 1600 --limit 800 --id-prefix qc05b- --batch-size "$BATCH" >"$OUT/logs/generate_small.log" 2>&1
  log "0.5B chains: $(wc -l <"$OUT/chains/small.jsonl")"
  $CLI gold-chains --input "$DATA/gsm8k/train.jsonl" --output "$OUT/chains/gold.jsonl" --offset 2400 --limit 800
  $CLI label --input "$OUT/chains/small.jsonl" "$OUT/chains/gold.jsonl" --output-dir "$OUT/labels" \
    --references "$DATA/gsm8k/train.jsonl"
  SMALL_L=$OUT/labels/small.jsonl
  GOLD_L=$OUT/labels/gold.jsonl
fi
$CLI features --limit "$LIMIT" --input "$SMALL_L" --store "$STORE.c" >"$OUT/logs/feat_c.log" 2>&1 &
fc=$!
$CLI features --limit "$LIMIT" --input "$GOLD_L" --store "$STORE.d" >"$OUT/logs/feat_d.log" 2>&1 &
fd=$!
wait $fa $fb $fc $fd
log "training features captured"
merge() {  # STORE PART...: fold the parallel jobs' stores into one
  $PY -c "
import json, sys
from pathlib import Path
from uhead_viz.capture import CaptureSpec
from uhead_viz.featstore import FeatureStore
parts = [Path(p) for p in sys.argv[2:]]
meta = json.loads((parts[0] / 'meta.json').read_text())
with FeatureStore(sys.argv[1], CaptureSpec.from_dict(meta['features']), meta['base_model']) as st:
    for p in parts:
        print(p, st.absorb(p), 'chains merged')
    print(len(st), 'chains in', st.root)
" "$@"
}
merge "$STORE" "$STORE.a" "$STORE.b" "$STORE.c" "$STORE.d" || exit 1
if [ -n "${STOP_AFTER_FEATURES:-}" ]; then
  [ -n "$EVAL" ] && wait "${eval_jobs[@]}"
  log "features in $STORE (and $OUT/eval); stopping before training"
  exit 0
fi

SELF_ALL="data/labels/gsm8k_train/shard-*.jsonl"
export OMP_NUM_THREADS=${TRAIN_THREADS:-2}
heads=()
train_jobs=()
for seed in $SEEDS; do
  for v in $VARIANTS; do
    IFS=: read -r mix attn context opts <<<"$v"
    extra=()
    for o in ${opts//,/ }; do
      case $o in
        bal) extra+=(--balance-position) ;;
        aew0) extra+=(--after-error-weight 0) ;;
        aew05) extra+=(--after-error-weight 0.5) ;;
        *) log "unknown option $o in $v" ;;
      esac
    done
    case $mix in
      self) data=("$SELF_ALL") ;;
      self_small) data=("$SELF_ALL" "$SMALL_L") ;;
      all) data=("$SELF_ALL" "$SMALL_L" "$GOLD_L") ;;
      *) log "unknown mix $mix in $v"; continue ;;
    esac
    name=$mix-$attn-$context${opts:+-${opts//,/-}}-s$seed
    h="$OUT/heads/$name"
    heads+=("$h")
    $CLI train --store "$STORE" --data "${data[@]}" --attn "$attn" --context "$context" --seed "$seed" --out "$h" \
      "${extra[@]}" $TRAIN_ARGS >"$OUT/logs/train_$name.log" 2>&1 &
    train_jobs+=($!)
  done
done
wait ${train_jobs[@]}
log "heads trained"
val_sets=()
for v in ${VAL_SETS:-}; do val_sets+=(--set "$v"); done
$PY benchmarks/val_compare.py --store "$STORE" --set "self=$SELF_ALL" --set "small=$SMALL_L" --set "gold=$GOLD_L" \
  ${val_sets[@]+"${val_sets[@]}"} --held-out self small gold --heads "${heads[@]}" --out "$OUT/val_compare.json"
if [ -n "$EVAL" ]; then
  wait "${eval_jobs[@]}"
  log "held-out features captured"
  export OMP_NUM_THREADS=1
  for e in $EVAL; do
    n=$(basename "$e" .jsonl)
    merge "$OUT/eval/$n/store" "$OUT/eval/$n/store.00" "$OUT/eval/$n/store.01" || continue
    first=${heads[0]}
    for h in "${heads[@]}"; do [ -f "$h/config.json" ] && { first=$h; break; }; done
    $CLI evaluate --data "$e" --format jsonl --store "$OUT/eval/$n/store" --head "$first" --methods default \
      --out "$OUT/eval/$n/baselines.json" >"$OUT/logs/eval_$n.baselines.log" 2>&1 &
    for h in "${heads[@]}"; do
      $CLI evaluate --data "$e" --format jsonl --store "$OUT/eval/$n/store" --head "$h" --methods uhead \
        --out "$OUT/eval/$n/$(basename "$h").json" >"$OUT/logs/eval_$n.$(basename "$h").log" 2>&1 &
    done
  done
  wait
  log "held-out sets scored"
fi
log "done"
