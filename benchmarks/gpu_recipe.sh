#!/usr/bin/env bash
# The training recipe of `make train`, on a CUDA machine that has the default model's GGUF
# bytes but no PyPI packages (an offline GPU box): build the bf16 model cache from the GGUF,
# generate GSM8K-train chains, label them, extract features, train the head, then evaluate
# every method (the LLM judge and the combined score included) on the PRM800K sample.
#
#   GGUF=/tmp/model.gguf OUT=runs/gpu DATA=../shared/data benchmarks/gpu_recipe.sh
#
# Every stage is resumable (the CLI skips finished ids) and writes into $OUT as it goes.
# DEADLINE (epoch seconds) bounds the whole run: each stage gets what is left minus a
# reserve for the stages after it, so a short lease still returns chains and a head.
set -u
: "${GGUF:?set GGUF to the assembled GGUF of the default model}"
OUT=${OUT:-runs/gpu}
DATA=${DATA:-../shared/data}
PY=${PY:-python3}
FIRST=${FIRST:-200}   # first GSM8K-train question (shard 0, the first 200, was made on CPU)
COUNT=${COUNT:-800}   # questions to generate: shards 1-4 of `make chains`
BATCH=${BATCH:-128}
EVAL_LIMIT=${EVAL_LIMIT:-0}
OLD=${OLD:-data/labels/gsm8k_train/shard-0.jsonl}  # chains labelled earlier, trained on too
DEADLINE=${DEADLINE:-$(($(date +%s) + 3600))}
export UHEAD_VIZ_CACHE=${UHEAD_VIZ_CACHE:-/tmp/uhead_viz}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT/labels"

left() { echo $((DEADLINE - $(date +%s))); }
log() { echo "[$(date +%T) $(left) s left] $*"; }
# until RESERVE CMD...: run CMD, stopping it RESERVE seconds before the deadline
until_() {
  local t=$(($(left) - $1))
  shift
  if [ "$t" -lt 10 ]; then log "no time for: $*"; return 124; fi
  timeout "$t" "$@"
}
CLI="$PY -m uhead_viz"

log "start: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo no GPU)"
until_ 0 $PY -c "
import logging, sys
from pathlib import Path
from uhead_viz.packs import PACKS, converted_dir, convert_gguf
logging.basicConfig(level=logging.INFO)
pack = PACKS['qwen-coder-1.5b']
if not (converted_dir(pack) / '.complete').is_file():
    convert_gguf(pack, Path(sys.argv[1]))
" "$GGUF" || exit 1
log "model cache ready"

# chains: shard 1 already has some rows from the CPU; the writer skips ids already present
[ -s "$OUT/chains.jsonl" ] || cp data/chains/gsm8k_train/shard-1.jsonl "$OUT/chains.jsonl"
until_ 300 $CLI generate --input "$DATA/gsm8k/train.jsonl" --output "$OUT/chains.jsonl" \
  --offset "$FIRST" --limit "$COUNT" --batch-size "$BATCH" &
gen=$!
# meanwhile, features of the earlier chains (labelled on the CPU) share the GPU
until_ 300 $CLI features --input "$OLD"
wait $gen
log "chains: $(wc -l <"$OUT/chains.jsonl")"

until_ 280 $CLI label --input "$OUT/chains.jsonl" --output-dir "$OUT/labels" --references "$DATA/gsm8k/train.jsonl"
until_ 200 $CLI features --input "$OUT/labels/chains.jsonl"
log "features done"
until_ 120 $CLI train --data "$OLD" "$OUT/labels/chains.jsonl" --out /tmp/head
mkdir -p "$OUT/head" && cp /tmp/head/config.json /tmp/head/*.safetensors "$OUT/head/"
log "head trained"

until_ 0 $CLI evaluate --data data/eval/prm800k_p1t_sample.jsonl --format jsonl --methods all \
  --head /tmp/head --limit "$EVAL_LIMIT" --out "$OUT/eval_prm800k.json"
log "done"
