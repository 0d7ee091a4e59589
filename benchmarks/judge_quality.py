"""How fast the local LLM judge is, and how well its labels agree with PRM800K's human ratings.

    python benchmarks/judge_quality.py [--n 60] [--seed 0] [--speed-chains 5] [--budget-s 840] [--out rows.jsonl]

1. **Speed.** ``step_correct_probs`` on the first ``--speed-chains`` chains of the default
   model's GSM8K test chains (``data/chains/eval/...``), each with its GSM8K reference
   solution: seconds per chain and per step.
2. **Label quality.** PRM800K phase-1 test chains (``uhead_viz.labels.human.prm800k_rows``),
   ``--n`` of them, half whose last step the raters marked wrong (the last step of a branch
   row) and half whose last step they marked fine; only the last step of each is asked about,
   with the problem's MATH-500 solution as the reference. Prints PR-AUC and ROC-AUC of
   1 - P(correct) (wrong = positive), and at a few thresholds on P(correct) the accuracy, F1
   on wrong steps and Cohen's kappa. Rows whose prompt exceeds ``--max-tokens`` are left
   out of the draw. Positives and negatives alternate, so a run that hits ``--budget-s``
   stops with a still balanced (smaller) sample, and says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score  # noqa: E402
from tqdm import tqdm  # noqa: E402

from uhead_viz.errors import InputError
from uhead_viz.judge import build_prompt, step_correct_probs  # noqa: E402
from uhead_viz.labels.human import prm800k_rows  # noqa: E402
from uhead_viz.llm import load_llm  # noqa: E402
from uhead_viz.metrics import pr_auc, roc_auc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CHAINS = ROOT / "data" / "chains" / "eval" / "gsm8k_test100_qwen-coder-1.5b_int8.jsonl"
logger = logging.getLogger("judge_quality")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def speed(llm, n: int) -> dict[str, float]:
    gold = {r["question"].strip(): r["answer"] for r in read_jsonl(DATA / "gsm8k" / "test.jsonl")}
    rows = read_jsonl(CHAINS)[:n]
    t_all = cpu_all = 0.0
    n_steps = 0
    for row in tqdm(rows, desc="GSM8K speed", unit="chain"):
        ref = gold.get((row.get("question") or row["problem"]).strip())
        t0, c0 = time.perf_counter(), time.process_time()
        probs = step_correct_probs(llm, row["problem"], row["steps"], ref)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        t_all += dt
        cpu_all += dc
        n_steps += len(probs)
        logger.info("%s: %d steps in %.1f s (%.1f s CPU), P(correct) %s", row["id"], len(probs), dt, dc,
                    [round(p, 2) for p in probs])
    n = max(1, len(rows))
    # CPU seconds tell the cost on a busy shared machine, where wall time mostly measures the other jobs
    return {"chains": len(rows), "steps": n_steps, "s_per_chain": t_all / n, "s_per_step": t_all / max(1, n_steps),
            "cpu_s_per_chain": cpu_all / n}


def draw(llm, n: int, seed: int, max_tokens: int) -> tuple[list[tuple[dict, str]], int]:
    """Alternating wrong-last / fine-last PRM800K rows that have a MATH-500 solution and fit."""
    refs = {r["problem"].strip(): r["solution"] for r in read_jsonl(DATA / "math500_test.jsonl")}
    rows = prm800k_rows(DATA / "prm800k_phase1_test_stepwise.parquet")
    pools: dict[int, list[dict]] = {0: [], 1: []}
    for r in rows:
        last = r["labels"][-1] if r["labels"] else None
        if last in (0, 1) and r["problem"].strip() in refs:
            pools[last].append(r)
    rng = random.Random(seed)
    picked: dict[int, list[tuple[dict, str]]] = {0: [], 1: []}
    too_long = 0
    for lab in (1, 0):
        rng.shuffle(pools[lab])
        for r in pools[lab]:
            if len(picked[lab]) >= n // 2:
                break
            ref = refs[r["problem"].strip()]
            try:
                build_prompt(llm, r["problem"], r["steps"], ref, max_tokens)
            except InputError:
                too_long += 1
                continue
            picked[lab].append((r, ref))
    logger.info("PRM800K pools: %d wrong-last, %d fine-last rows", len(pools[1]), len(pools[0]))
    out = [x for pair in zip(picked[1], picked[0]) for x in pair]
    return out, too_long


def agreement(y: list[int], p_correct: list[float], threshold: float) -> dict[str, float]:
    pred = [1 if p < threshold else 0 for p in p_correct]
    kappa = cohen_kappa_score(y, pred) if len(set(y) | set(pred)) > 1 else 1.0
    return {
        "accuracy": accuracy_score(y, pred),
        "f1_wrong": f1_score(y, pred, pos_label=1, zero_division=0),
        "kappa": kappa,
        "flagged": float(sum(pred)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=60, help="PRM800K rows, half with a wrong last step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speed-chains", type=int, default=5, help="GSM8K chains to time (0: skip)")
    ap.add_argument("--max-tokens", type=int, default=2048, help="leave out PRM800K rows with longer prompts")
    ap.add_argument("--budget-s", type=float, default=840.0, help="stop the PRM800K part after this long")
    ap.add_argument("--thresholds", default="0.3,0.5,0.7,0.8", help="thresholds on P(correct)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=None, help="append one JSON line per judged PRM800K row (to pool runs)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    llm = load_llm(args.model)
    summary: dict[str, object] = {"model": llm.name, "precision": llm.precision}
    if args.speed_chains > 0:
        summary["speed"] = sp = speed(llm, args.speed_chains)
        logger.info("speed: %.1f s per chain (%.1f s CPU), %.1f s per step (%d chains, %d steps)",
                    sp["s_per_chain"], sp["cpu_s_per_chain"], sp["s_per_step"], sp["chains"], sp["steps"])

    sample, too_long = draw(llm, args.n, args.seed, args.max_tokens)
    y: list[int] = []
    p: list[float] = []
    t0, c0 = time.perf_counter(), time.process_time()
    stopped = False
    bar = tqdm(sample, desc="PRM800K last steps", unit="row")
    for i, (row, ref) in enumerate(bar):
        if time.perf_counter() - t0 > args.budget_s and i % 2 == 0:
            stopped = True
            break
        p += step_correct_probs(llm, row["problem"], row["steps"], ref, args.max_tokens, ask=[len(row["steps"]) - 1])
        y.append(int(row["labels"][-1]))
        if args.out:
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(json.dumps({"id": row["id"], "wrong": y[-1], "p_correct": p[-1], "seed": args.seed}) + "\n")
    bar.close()
    if len(y) % 2:  # keep the sample balanced
        y, p = y[:-1], p[:-1]
    elapsed = time.perf_counter() - t0
    p_error = [1.0 - x for x in p]
    quality: dict[str, object] = {
        "rows": len(y), "wrong": sum(y), "left_out_too_long": too_long, "stopped_by_budget": stopped,
        "s_per_row": elapsed / max(1, len(y)), "cpu_s_per_row": (time.process_time() - c0) / max(1, len(y)),
        "pr_auc": pr_auc(y, p_error), "roc_auc": roc_auc(y, p_error),
        "mean_p_correct_wrong": sum(x for x, t in zip(p, y) if t) / max(1, sum(y)),
        "mean_p_correct_fine": sum(x for x, t in zip(p, y) if not t) / max(1, len(y) - sum(y)),
    }
    for th in (float(t) for t in args.thresholds.split(",")):
        quality[f"at_{th:g}"] = {k: round(v, 3) for k, v in agreement(y, p, th).items()}
    summary["prm800k_last_step"] = quality
    for k, v in quality.items():
        logger.info("%s: %s", k, round(v, 3) if isinstance(v, float) else v)
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
