#!/usr/bin/env bash
# Foreign-text training data for the head, on a CUDA machine that has the GGUF bytes of the
# default model (GGUF) and of Qwen2.5-Coder-0.5B (GGUF_SMALL) but no PyPI packages.
#
#   GGUF=/tmp/model.gguf GGUF_SMALL=/tmp/small.gguf OUT=runs/foreign DATA=../shared/data \
#     benchmarks/gpu_foreign.sh
#
# Why: the head trained on the default model's own greedy chains calls most steps of text
# it did not write wrong (ECE 0.69 on GPT-4's PRM800K chains). This adds two kinds of text
# the default model reads teacher-forced, on GSM8K *train* questions the self-chains do not
# use: the 0.5B model's chains (another author, often wrong) and the reference solutions
# (another author, right). It labels them, captures features of everything in JOBS parallel
# processes (one store each, merged afterwards), trains three heads on the same settings:
#   self        the model's own chains only (the shipped recipe, as the control)
#   self_small  + the 0.5B model's chains
#   all         + the 0.5B model's chains + the reference solutions
# (one run per seed in SEEDS) and scores them all on the union of their held-out questions (benchmarks/val_compare.py).
set -u
: "${GGUF:?set GGUF to the GGUF of the default model}"
: "${GGUF_SMALL:?set GGUF_SMALL to the GGUF of qwen-coder-0.5b}"
OUT=${OUT:-runs/foreign}
DATA=${DATA:-../shared/data}
PY=${PY:-python3}
SMALL_FIRST=${SMALL_FIRST:-1600}  # GSM8K-train questions of the 0.5B chains (self-chains use 0-1599)
SMALL_COUNT=${SMALL_COUNT:-800}
GOLD_FIRST=${GOLD_FIRST:-2400}    # ... and of the reference-solution chains
GOLD_COUNT=${GOLD_COUNT:-800}
BATCH=${BATCH:-160}
SELF_A=${SELF_A:-"data/labels/gsm8k_train/shard-[0-3].jsonl"}
SELF_B=${SELF_B:-"data/labels/gsm8k_train/shard-[4-7].jsonl"}
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
convert qwen-coder-0.5b "$GGUF_SMALL" >"$OUT/logs/convert_small.log" 2>&1 &
small=$!
convert qwen-coder-1.5b "$GGUF" || exit 1
log "default model ready"
# features of the self-chains (already labelled in the repo) start at once, two jobs
$CLI features --input $SELF_A --store "$STORE.a" >"$OUT/logs/feat_a.log" 2>&1 &
fa=$!
$CLI features --input $SELF_B --store "$STORE.b" >"$OUT/logs/feat_b.log" 2>&1 &
fb=$!
wait $small || { log "0.5B conversion failed"; cat "$OUT/logs/convert_small.log"; exit 1; }
log "0.5B model ready"

# the 0.5B model's chains, with ids of their own so they never meet a self-chain's id
$CLI generate --model qwen-coder-0.5b --input "$DATA/gsm8k/train.jsonl" --output "$OUT/chains/small.jsonl" \
  --offset "$SMALL_FIRST" --limit "$SMALL_COUNT" --id-prefix qc05b- --batch-size "$BATCH" \
  >"$OUT/logs/generate_small.log" 2>&1
log "0.5B chains: $(wc -l <"$OUT/chains/small.jsonl")"
$CLI gold-chains --input "$DATA/gsm8k/train.jsonl" --output "$OUT/chains/gold.jsonl" \
  --offset "$GOLD_FIRST" --limit "$GOLD_COUNT"
$CLI label --input "$OUT/chains/small.jsonl" "$OUT/chains/gold.jsonl" --output-dir "$OUT/labels" \
  --references "$DATA/gsm8k/train.jsonl"
$CLI features --input "$OUT/labels/small.jsonl" --store "$STORE.c" >"$OUT/logs/feat_c.log" 2>&1 &
fc=$!
$CLI features --input "$OUT/labels/gold.jsonl" --store "$STORE.d" >"$OUT/logs/feat_d.log" 2>&1 &
fd=$!
wait $fa $fb $fc $fd
log "features captured"
$PY -c "
import json, sys
from pathlib import Path
from uhead_viz.capture import CaptureSpec
from uhead_viz.featstore import FeatureStore
parts = [Path(sys.argv[1] + s) for s in '.a .b .c .d'.split()]
meta = json.loads((parts[0] / 'meta.json').read_text())
with FeatureStore(sys.argv[1], CaptureSpec.from_dict(meta['features']), meta['base_model']) as st:
    for p in parts:
        print(p, st.absorb(p), 'chains merged')
    print(len(st), 'chains in', st.root)
" "$STORE" || exit 1

SELF_ALL="data/labels/gsm8k_train/shard-*.jsonl"
SMALL_L="$OUT/labels/small.jsonl"
GOLD_L="$OUT/labels/gold.jsonl"
export OMP_NUM_THREADS=${TRAIN_THREADS:-2}
heads=()
for seed in ${SEEDS:-0 1}; do
  for variant in self self_small all; do
    case $variant in
      self) data=("$SELF_ALL") ;;
      self_small) data=("$SELF_ALL" "$SMALL_L") ;;
      all) data=("$SELF_ALL" "$SMALL_L" "$GOLD_L") ;;
    esac
    h="$OUT/heads/$variant-s$seed"
    heads+=("$h")
    $CLI train --store "$STORE" --data "${data[@]}" --seed "$seed" --out "$h" >"$OUT/logs/train_$variant-s$seed.log" 2>&1 &
  done
done
wait
log "heads trained"
$PY benchmarks/val_compare.py --store "$STORE" --data "$SELF_ALL" "$SMALL_L" "$GOLD_L" \
  --heads "${heads[@]}" --out "$OUT/val_compare.json"
log "done"
