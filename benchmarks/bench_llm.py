"""Runtime benchmark: load times, generation speed, capture overhead, peak memory, per precision.

    python benchmarks/bench_llm.py [--model qwen-coder-1.5b] [--precision int8] [--cold]

Without ``--precision`` it first prints the CPU flags the precision rule reads and the
precision the rule picks here, then measures every precision this machine can run, each in
a fresh process (so peak memory is that precision's own), and ends with a table. With
``--precision`` it measures that one and prints one JSON object. ``--cold`` also times a
first conversion into an empty temporary cache (GGUF assembly, bf16 conversion, int8
quantization: a few minutes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
import torch  # noqa: E402

from uhead_viz.capture import CaptureSpec, teacher_force  # noqa: E402
from uhead_viz.llm import load_llm  # noqa: E402
from uhead_viz.precision import RELEVANT_FLAGS, choose, cpu_flags, runnable  # noqa: E402

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. Her "
    "parents decided to give her $15 for that purpose, and her grandparents twice as much as her parents. "
    "How much more money does Betty need to buy the wallet?",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
    "Mark has a garden with flowers. He planted plants of three different colors in it. Ten of them are yellow, "
    "and there are 80% more of those in purple. There are only 25% as many green flowers as there are yellow "
    "and purple flowers. How many flowers does Mark have in his garden?",
    "Albert is wondering how much pizza he can eat in one day. He buys 2 large pizzas and 2 small pizzas. A large "
    "pizza has 16 slices and a small pizza has 8 slices. If he eats it all, how many pieces does he eat that day?",
    "Ken created a care package to send to his brother. He placed a box on a scale, and then he poured into the box "
    "enough jelly beans to bring the weight to 2 pounds. How much did the box weigh before?",
    "Alexis is applying for a new job and bought a new set of business clothes. She spent $30 on shirts and $46 on "
    "pants. How much did she spend in all?",
]


@torch.inference_mode()
def plain_forward(llm, prompt_ids, ids, chunk=256) -> None:
    """The same chunked forward as the capture pass (shared-prefix cache, then the chain), without hooks."""
    model = llm.model
    past, _, _ = llm.prefill([list(prompt_ids)], llm.tokenizer.pad_token_id or 0)  # as teacher_force does
    t = torch.tensor([ids])
    for s in range(0, t.shape[1], chunk):
        res = model(input_ids=t[:, s : s + chunk], past_key_values=past, use_cache=True)
        past = res.past_key_values


def decode_speed(llm, questions, n_new: int) -> dict:
    """Tokens/s of the decode loop after prefill, for a batch of questions (stop rules off)."""
    prompts = [llm.prompt_ids(q) for q in questions]
    model = llm.model
    with torch.inference_mode():
        width = max(len(p) for p in prompts)
        pad = llm.tokenizer.pad_token_id or 0
        ids = torch.full((len(prompts), width), pad)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        t0 = time.time()
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        res = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        prefill = time.time() - t0
        past = res.past_key_values
        nxt = res.logits[:, -1].argmax(-1, keepdim=True)
        t0 = time.time()
        for _ in range(n_new):
            mask = torch.cat([mask, torch.ones((len(prompts), 1), dtype=mask.dtype)], 1)
            pos = mask.sum(-1, keepdim=True) - 1
            res = model(input_ids=nxt, attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True)
            past = res.past_key_values
            nxt = res.logits[:, -1].argmax(-1, keepdim=True)
        dt = time.time() - t0
    return {
        "batch": len(prompts),
        "prefill_s": round(prefill, 2),
        "decode_tokens_per_s_total": round(len(prompts) * n_new / dt, 2),
        "decode_tokens_per_s_per_stream": round(n_new / dt, 2),
    }


def machine() -> dict:
    """What the figures depend on: CPU model, cores, the flags the precision rule reads, its choice."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    flags = cpu_flags()
    choice = choose(flags, platform.machine(), torch.cuda.is_available())  # the rule, whatever the override
    return {
        "cpu": model or platform.processor(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "flags": [f for f in RELEVANT_FLAGS if f in flags],
        "rule_picks": choice.precision,
        "rule_reason": choice.reason,
        "cuda": torch.cuda.is_available(),
    }


def run_all(args: argparse.Namespace) -> int:
    """Each precision in its own process; a table at the end."""
    info = machine()
    sys.stdout.write("machine: " + json.dumps(info) + "\n")
    sys.stdout.flush()
    rows = []
    for prec in runnable(cpu_flags(), platform.machine()):
        cmd = [sys.executable, __file__, "--precision", prec, "--tokens", str(args.tokens)]
        if args.model:
            cmd += ["--model", args.model]
        if args.cold:
            cmd.append("--cold")
        logging.info("measuring %s ...", prec)
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            rows.append({"precision": prec, "error": f"exit {res.returncode}: {res.stderr.strip()[-300:]}"})
        else:
            rows.append(json.loads(res.stdout))
        sys.stdout.write(json.dumps(rows[-1]) + "\n")
        sys.stdout.flush()
    head = (
        f"{'precision':9} {'warm load s':>11} {'prefill s':>9} {'tok/s 1':>8} {'tok/s 8':>8}"
        f" {'capture x':>9} {'peak GB':>8}"
    )
    sys.stdout.write("\n" + head + "\n")
    for r in rows:
        if "error" in r:
            sys.stdout.write(f"{r['precision']:9} failed: {r['error'][:80]}\n")
            continue
        sys.stdout.write(
            f"{r['precision']:9} {r['warm_load_s']:>11} {r['single']['prefill_s']:>9} "
            f"{r['single']['decode_tokens_per_s_per_stream']:>8} {r['batched']['decode_tokens_per_s_total']:>8} "
            f"{r['capture']['ratio']:>9} {r['peak_rss_gb']:>8}\n"
        )
    return 1 if any("error" in r for r in rows) else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--precision", default=None, help="measure only this one (default: every one this CPU runs)")
    p.add_argument("--cold", action="store_true", help="also time a first conversion into an empty cache")
    p.add_argument("--tokens", type=int, default=64, help="decode tokens per stream for the speed figures")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO if args.precision is None else logging.WARNING, format="%(message)s")
    if args.precision is None:
        return run_all(args)
    proc = psutil.Process()
    out: dict = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    if args.cold:
        with tempfile.TemporaryDirectory() as tmp:
            old = os.environ.get("UHEAD_VIZ_CACHE")
            os.environ["UHEAD_VIZ_CACHE"] = tmp
            t0 = time.time()
            load_llm(args.model, args.precision)
            out["cold_load_s"] = round(time.time() - t0, 1)
            if old is None:
                del os.environ["UHEAD_VIZ_CACHE"]
            else:
                os.environ["UHEAD_VIZ_CACHE"] = old
    load_llm(args.model, args.precision)  # make sure the cache exists before timing a warm load
    t0 = time.time()
    llm = load_llm(args.model, args.precision)
    out["warm_load_s"] = round(time.time() - t0, 2)
    out["model"] = llm.name
    out["precision"] = llm.precision
    out["single"] = decode_speed(llm, QUESTIONS[:1], args.tokens)
    out["batched"] = decode_speed(llm, QUESTIONS[:8], args.tokens)

    # capture cost: teacher-forced pass with hooks vs the same chunked forward without them
    chain = llm.generate(QUESTIONS[:1], 200)[0]
    spec = CaptureSpec()
    plain_forward(llm, chain.prompt_ids, chain.ids)  # warm-up
    reps = 3
    t0 = time.time()
    for _ in range(reps):
        plain_forward(llm, chain.prompt_ids, chain.ids)
    plain = (time.time() - t0) / reps
    t0 = time.time()
    for _ in range(reps):
        teacher_force(llm, chain, spec)
    cap = (time.time() - t0) / reps
    out["capture"] = {
        "chain_tokens": len(chain.ids),
        "prompt_tokens": len(chain.prompt_ids),
        "plain_forward_s": round(plain, 3),
        "capture_forward_s": round(cap, 3),
        "ratio": round(cap / plain, 3),
    }
    out["peak_rss_gb"] = round(proc.memory_info().rss / 1e9, 2)
    try:
        import resource

        out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    except ImportError:
        pass
    sys.stdout.write(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
