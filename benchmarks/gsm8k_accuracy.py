"""Greedy GSM8K accuracy of the default prompt, and how often generation loops.

    python benchmarks/gsm8k_accuracy.py --model qwen-coder-1.5b --n 100 --out runs/gsm8k_1.5b.jsonl

Resumable: chains already in --out are kept. Prints accuracy, stop reasons and tokens/s.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from uhead_viz.jsonl import ResumableWriter  # noqa: E402
from uhead_viz.llm import last_number, load_llm  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"


def gold(answer: str) -> float:
    return float(answer.split("####")[-1].strip().replace(",", ""))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=320)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--out", required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = [json.loads(line) for line in open(args.data, encoding="utf-8")][: args.n]
    llm = load_llm(args.model)
    gen_tokens, gen_time = 0, 0.0
    with ResumableWriter(args.out) as w:
        todo = [(f"gsm8k-test-{i}", r) for i, r in enumerate(rows) if f"gsm8k-test-{i}" not in w.done]
        bar = tqdm(total=len(todo), desc="chains", unit="chain")
        for s in range(0, len(todo), args.batch_size):
            batch = todo[s : s + args.batch_size]
            t0 = time.time()
            chains = llm.generate([r["question"] for _, r in batch], args.max_new_tokens)
            gen_time += time.time() - t0
            for (rid, r), c in zip(batch, chains):
                gen_tokens += len(c.ids)
                pred = last_number(c.answer)
                w.write(
                    {
                        "id": rid,
                        "question": r["question"],
                        "gold": gold(r["answer"]),
                        "pred": pred,
                        "correct": pred is not None and abs(pred - gold(r["answer"])) < 1e-6,
                        **c.to_row(),
                    }
                )
            bar.update(len(batch))
        bar.close()
    done = [json.loads(line) for line in open(args.out, encoding="utf-8")]
    reasons = collections.Counter(d["stop_reason"] for d in done)
    acc = sum(d["correct"] for d in done) / max(1, len(done))
    looped = reasons.get("repetition", 0) + reasons.get("long_line", 0)
    out = {
        "model": llm.name,
        "precision": llm.precision,
        "n": len(done),
        "accuracy": round(acc, 3),
        "looped": looped,
        "max_tokens": reasons.get("max_tokens", 0),
        "stop_reasons": dict(reasons),
        "mean_tokens": round(sum(len(d["ids"]) for d in done) / max(1, len(done)), 1),
        "tokens_per_s_this_run": round(gen_tokens / gen_time, 2) if gen_time else None,
    }
    sys.stdout.write(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
