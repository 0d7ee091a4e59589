"""Cost of step scoring next to generation: capture pass, features, and the head in both modes.

    python benchmarks/bench_uhead.py [--model NAME] [--head FOLDER] [--chains chains.jsonl] [--limit 20]

Chains come from --chains (rows from ``generate``, or {problem, steps}), else from GSM8K
reference solutions (/work/shared/data/gsm8k/train.jsonl: one step per line, without the
``#### N`` line and the ``<<...>>`` calculator notes), teacher-forced. Without a trained
head in checkpoints/ the head is an untrained one of the default size, which costs the
same. Prints per-chain times and head+features as a share of generating a 200-token
chain (single-stream decode speed measured here on --tokens tokens, extrapolated).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# uhead_viz is imported inside the functions: it is only importable after the line above.

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"


def gsm8k_chains(llm, path: Path, n: int) -> list:
    """Reference solutions as chains: answer lines are steps, minus the final '#### N' and '<<..>>' notes."""
    from uhead_viz.jsonl import read_rows
    from uhead_viz.steps import chain_from_steps

    chains = []
    for _, row, err in read_rows(path):
        if err or row is None:
            continue
        lines = [re.sub(r"<<[^>]*>>", "", x).strip() for x in row["answer"].split("\n")]
        steps = [x for x in lines if x and not x.startswith("####")]
        final = row["answer"].split("####")[-1].strip()
        q = row["question"]
        chains.append(chain_from_steps(llm.tokenizer, q, llm.prompt_ids(q), steps, answer=final))
        if len(chains) >= n:
            break
    return chains


@torch.inference_mode()
def decode_speed(llm, prompt_ids: list[int], n_new: int) -> tuple[float, float]:
    """(prefill seconds, single-stream greedy decode tokens/s) with a KV cache."""
    model = llm.model
    ids = torch.tensor([prompt_ids])
    t0 = time.perf_counter()
    res = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    prefill = time.perf_counter() - t0
    past = res.past_key_values
    nxt = res.logits[:, -1].argmax(-1, keepdim=True)
    t0 = time.perf_counter()
    for _ in range(n_new):
        res = model(input_ids=nxt, past_key_values=past, use_cache=True)
        past = res.past_key_values
        nxt = res.logits[:, -1].argmax(-1, keepdim=True)
    return prefill, n_new / (time.perf_counter() - t0)


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def bench_head(llm, folder: str | None):
    """The head to time: ``folder``, else a matching one in checkpoints/, else an untrained one
    of the default size (it costs the same). Returns (head, where it came from)."""
    from uhead_viz.scoring import default_head
    from uhead_viz.uhead import UHead, load_head

    if folder:
        return load_head(folder, llm).eval(), folder
    head, why = default_head(llm)
    if head is None:
        return UHead.for_llm(llm).eval(), f"UNTRAINED default-size head ({why}); timings are the same as trained"
    return head.eval(), "checkpoints"


def bench_chains(llm, path: str | None, limit: int):
    """Up to ``limit`` chains from a JSONL file (rows from generate, or problem + steps), else GSM8K solutions."""
    from uhead_viz.jsonl import read_rows
    from uhead_viz.scoring import row_to_chain

    if not path:
        return gsm8k_chains(llm, GSM8K, limit)
    chains = []
    for _, row, err in read_rows(path):
        if row is not None and not err:
            chains.append(row_to_chain(row, llm))
        if len(chains) >= limit:
            break
    return chains


def main() -> int:
    from uhead_viz.capture import teacher_force
    from uhead_viz.features import token_features
    from uhead_viz.llm import load_llm
    from uhead_viz.uhead import UHead

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--head", default=None, help="head folder (default: a matching one in checkpoints/, else untrained)")
    p.add_argument("--chains", default=None, help="JSONL of chains (default: GSM8K reference solutions)")
    p.add_argument("--limit", type=int, default=20, help="number of chains")
    p.add_argument("--tokens", type=int, default=32, help="decode tokens for the generation-speed estimate")
    p.add_argument("--gen-tokens", type=int, default=200, help="chain length the percentages refer to")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    llm = load_llm(args.model)
    head, where = bench_head(llm, args.head)
    heads = {}
    for mode in ("step", "causal"):
        h = UHead(dataclasses.replace(head.config, mode=mode), spec=head.spec, base=head.base).eval()
        h.load_state_dict(head.state_dict())
        heads[mode] = h
    spec = head.spec

    chains = bench_chains(llm, args.chains, args.limit)
    if not chains:
        sys.stdout.write("no chains to time\n")
        return 1

    warm = token_features(teacher_force(llm, chains[0], spec), spec)  # warm-up (allocations, kernels)
    with torch.inference_mode():
        for h in heads.values():
            h.step_logits(warm, chains[0].spans)
    rows = []
    for c in chains:
        internals, t_fwd = timed(teacher_force, llm, c, spec)
        feats, t_feat = timed(token_features, internals, spec)
        r = {"tokens": len(c.ids), "steps": len(c.spans), "forward_s": t_fwd, "features_s": t_feat}
        with torch.inference_mode():
            for mode, h in heads.items():
                _, r[f"head_{mode}_s"] = timed(h.step_logits, feats, c.spans)
        rows.append(r)
    prefill, tok_s = decode_speed(llm, chains[0].prompt_ids, args.tokens)
    gen_s = prefill + args.gen_tokens / tok_s

    def mean(key: str) -> float:
        return statistics.mean(r[key] for r in rows)

    summary = {
        "model": llm.name,
        "precision": llm.precision,
        "device": str(next(llm.model.parameters()).device),
        "threads": torch.get_num_threads(),
        "head": where,
        "head_params": head.num_parameters(),
        "n_features": head.config.n_features,
        "chains": len(rows),
        "mean_chain_tokens": round(mean("tokens"), 1),
        "mean_steps": round(mean("steps"), 2),
        "forward_ms_per_chain": round(1000 * mean("forward_s"), 1),
        "features_ms_per_chain": round(1000 * mean("features_s"), 2),
        "head_step_ms_per_chain": round(1000 * mean("head_step_s"), 2),
        "head_causal_ms_per_chain": round(1000 * mean("head_causal_s"), 2),
        "decode_tokens_per_s": round(tok_s, 2),
        "prefill_s": round(prefill, 3),
        f"generate_{args.gen_tokens}_tokens_s": round(gen_s, 2),
    }
    for mode in ("step", "causal"):
        cost = mean("features_s") + mean(f"head_{mode}_s")
        summary[f"features+head_{mode}_pct_of_generation"] = round(100 * cost / gen_s, 3)
    summary["forward_pct_of_generation"] = round(100 * mean("forward_s") / gen_s, 2)

    out = sys.stdout
    out.write(f"model {llm.name} ({llm.precision}), head: {where}, {head.num_parameters():,} parameters\n")
    out.write(
        f"{len(rows)} chains, {summary['mean_chain_tokens']} tokens and {summary['mean_steps']} steps on average\n"
    )
    out.write(f"  teacher-forced forward + capture: {summary['forward_ms_per_chain']:9.1f} ms/chain\n")
    out.write(f"  feature extraction:               {summary['features_ms_per_chain']:9.2f} ms/chain\n")
    out.write(f"  head, step mode (1 pass/step):    {summary['head_step_ms_per_chain']:9.2f} ms/chain\n")
    out.write(f"  head, causal mode (1 pass):       {summary['head_causal_ms_per_chain']:9.2f} ms/chain\n")
    out.write(
        f"generation: {tok_s:.2f} tok/s single stream, prefill {prefill:.2f} s -> {gen_s:.1f} s "
        f"for a {args.gen_tokens}-token chain\n"
    )
    for mode in ("step", "causal"):
        out.write(
            f"  features+head ({mode}): {summary[f'features+head_{mode}_pct_of_generation']:.3f}% of generation\n"
        )
    out.write(f"  capture forward: {summary['forward_pct_of_generation']:.2f}% of generation\n")
    out.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
