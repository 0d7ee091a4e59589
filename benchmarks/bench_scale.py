"""Chains per second of ``score``: one process, Ray with one actor, Ray with N actors.

    python benchmarks/bench_scale.py [--model tiny|NAME] [--n 200] [--actors 2] [--batch-size 8]
                                     [--ray-batch-size 32] [--methods default]

The same rows are scored three ways on this machine, through the code the CLI runs
(``score_file`` with the single-process batch function, then with ``RayRunner`` on a local
Ray cluster of this machine's CPUs), and the three outputs are checked to be identical.
Rows: GSM8K-train reference solutions (``../shared/data/gsm8k/train.jsonl``, one step per
line), else generated arithmetic chains. ``--model tiny`` (the default) is a 2-layer random
Llama built in code with an untrained head, scored in fp32: it shows the fixed costs of
Ray; a real model (``qwen-coder-1.5b``, with its head from ``checkpoints/``) shows the
steady rate that matters. Run it with ``OMP_NUM_THREADS=1`` to give every way one core per
worker; each actor gets one CPU.

Printed per way: wall seconds of the scoring run (for Ray: from submitting the work, so
actor start and each actor's model load are in it), chains/s over that, chains/s from the
start of the first batch to the end of the last one as the workers timed them (the steady
rate, without start-up), and the CPU milliseconds per chain inside the work calls, which
other jobs on a shared machine do not change. Printed once: the cluster start and the driver's model
load, which ``score --ray`` pays on top of its run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
# uhead_viz and tiny_models are imported inside the functions: only importable after the lines above.

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"


def chain_rows(n: int) -> list[dict[str, Any]]:
    """``n`` rows of {id, problem, steps}: GSM8K reference solutions if present, else arithmetic chains."""
    rows: list[dict[str, Any]] = []
    if GSM8K.is_file():
        for i, line in enumerate(GSM8K.read_text(encoding="utf-8").splitlines()):
            row = json.loads(line)
            lines = [re.sub(r"<<[^>]*>>", "", x).strip() for x in row["answer"].split("\n")]
            steps = [x for x in lines if x and not x.startswith("####")]
            rows.append({"id": f"gsm8k-train-{i}", "problem": row["question"], "steps": steps})
            if len(rows) >= n:
                return rows
    for i in range(len(rows), n):
        a, b = 3 * i + 7, i % 9 + 2
        total = a * b + i
        steps = [f"{a} * {b} = {a * b} apples.", f"{a * b} + {i} = {total} apples.", f"So the answer is {total}."]
        rows.append({"id": f"arith-{i}", "problem": f"Ann has {a} bags of {b} apples and finds {i} more. How many?",
                     "steps": steps})
    return rows


def tiny_model(folder: Path) -> str:
    """A tiny random Llama and an untrained head for it, saved under ``folder``; returns the model folder."""
    from tiny_models import build_tokenizer, tiny_config
    from transformers import LlamaConfig, LlamaForCausalLM

    from uhead_viz.llm import load_llm
    from uhead_viz.uhead import UHead, save_head

    tok = build_tokenizer()
    import torch

    torch.manual_seed(0)  # context past our prompt (750 tiny-BPE tokens) plus a GSM8K chain
    model = LlamaForCausalLM._from_config(tiny_config(LlamaConfig, tok, max_position_embeddings=4096),
                                          attn_implementation="eager", dtype=torch.float32).eval()
    model.save_pretrained(folder / "tiny")
    tok.save_pretrained(folder / "tiny")
    llm = load_llm(str(folder / "tiny"))
    save_head(UHead.for_llm(llm, mode="causal", d_model=32, n_heads=4, d_ff=64, n_layers=2).eval(),
              folder / "checkpoints" / "tiny")
    return str(folder / "tiny")


def timed(work: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> Callable[..., list[dict[str, Any]]]:
    """``work`` that notes, on its first result, when the call started and ended (wall clock) and
    the CPU seconds its process spent meanwhile (robust to other jobs sharing the machine)."""

    def run(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        t0, c0 = time.time(), time.process_time()
        out = work(rows)
        if out:
            out[0] = {**out[0], "_t": [t0, time.time(), time.process_time() - c0]}
        return out

    return run


def timed_open_score(recipe: Any) -> Callable[..., list[dict[str, Any]]]:
    """``open_score`` whose work is ``timed`` (pickled by value into the Ray workers)."""
    from uhead_viz.workers import open_score

    return timed(open_score(recipe))


class Clock:
    """Wraps a runner: notes when it started, when each unit's results arrived and when the
    workers were busy on it (the ``timed`` marks, taken off the results)."""

    def __init__(self, runner: Callable[[list[list[Any]]], Iterator[list[Any]]]) -> None:
        self.runner = runner
        self.start = 0.0
        self.end = 0.0
        self.rows = 0
        self.spans: list[tuple[float, float, float]] = []

    def __call__(self, units: list[list[Any]]) -> Iterator[list[Any]]:
        self.start = time.time()
        for res in self.runner(units):
            if res and "_t" in res[0]:
                self.spans.append(tuple(res[0].pop("_t")))
            self.rows += len(res)
            self.end = time.time()
            yield res

    def figures(self) -> tuple[float, float, float, float]:
        """(wall seconds, chains/s over it, chains/s while the workers ran: first call's start to last
        call's end, CPU ms per chain in the work calls)."""
        wall = self.end - self.start
        busy = max(e for _, e, _ in self.spans) - min(s for s, _, _ in self.spans)
        return wall, self.rows / wall, self.rows / busy, 1000 * sum(c for *_, c in self.spans) / self.rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="tiny (built in code) or a packaged name / folder")
    ap.add_argument("--n", type=int, default=200, help="chains")
    ap.add_argument("--actors", type=int, default=2, help="N for the third way")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--ray-batch-size", type=int, default=32)
    ap.add_argument("--methods", default=None, help="as score --methods (default: head + baselines)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    tmp = Path(tempfile.mkdtemp(prefix="bench_scale-"))
    if args.model == "tiny":
        os.environ["UHEAD_VIZ_PRECISION"] = "fp32"
        os.environ["UHEAD_VIZ_CHECKPOINTS"] = str(tmp / "checkpoints")
    import ray

    from uhead_viz.evaluate import resolve_methods
    from uhead_viz.llm import load_llm
    from uhead_viz.ray_run import RayRunner, RaySettings, local_cluster_options
    from uhead_viz.scoring import build_scorers, default_head, score_batch, score_file
    from uhead_viz.workers import ModelRecipe, ScoreRecipe

    model = tiny_model(tmp) if args.model == "tiny" else args.model
    src = tmp / "chains.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in chain_rows(args.n)), encoding="utf-8")

    t0 = time.perf_counter()
    llm = load_llm(model)
    methods, _ = resolve_methods(args.methods)
    head, head_path = default_head(llm)
    if head is None:
        methods = [m for m in methods if m != "uhead"]
    scorers = build_scorers(llm, methods, head)
    load_s = time.perf_counter() - t0
    ways: dict[str, tuple[Clock, Path]] = {}

    work = timed(lambda rows: score_batch(rows, llm, scorers))
    local = Clock(lambda units: (work(u) for u in units))
    ways["one process"] = (local, tmp / "one.jsonl")
    score_file(src, ways["one process"][1], batch_size=args.batch_size, runner=local)

    t0 = time.perf_counter()
    ray.init(**local_cluster_options())  # the cluster `score --ray` starts on this machine
    cluster_s = time.perf_counter() - t0
    recipe = ScoreRecipe(ModelRecipe.of(llm), tuple(scorers), head_path if head is not None else None)
    for name, actors in (("Ray, 1 actor", 1), (f"Ray, {args.actors} actors", args.actors)):
        settings = RaySettings(rows_per_task=args.ray_batch_size, actors=actors)
        clock = Clock(RayRunner(timed_open_score, recipe, settings))
        ways[name] = (clock, tmp / f"ray{actors}.jsonl")
        score_file(src, ways[name][1], batch_size=args.batch_size, runner=clock)
    ray.shutdown()

    want = ways["one process"][1].read_text()
    print(f"\n{args.n} chains, model {llm.name} ({llm.precision}), methods {', '.join(scorers)}, "
          f"batch {args.batch_size}, Ray tasks of {args.ray_batch_size} chains, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs")
    print(f"model load in the driver: {load_s:.1f} s; local Ray cluster start: {cluster_s:.1f} s\n")
    print("| way | wall s | chains/s | chains/s while the workers ran | CPU ms/chain in the work | output |")
    print("|---|---|---|---|---|---|")
    figs = {}
    for name, (clock, out) in ways.items():
        figs[name] = wall, rate, steady, cpu = clock.figures()
        same = "identical" if out.read_text() == want else "DIFFERS"
        print(f"| {name} | {wall:.1f} | {rate:.2f} | {steady:.2f} | {cpu:.1f} | {same} |")
    one, ray1 = figs["one process"], figs["Ray, 1 actor"]
    run = ray1[0] / one[0] - 1  # Ray's wall includes its actor's model load; one process's does not
    steady = one[2] / ray1[2] - 1
    cpu = ray1[3] / one[3] - 1
    cli = (cluster_s + load_s + ray1[0]) / (load_s + one[0]) - 1
    print(f"\nRay with 1 actor against one process, in time per chain: {100 * run:+.0f} % over the run "
          f"(Ray's with its actor's model load), {100 * steady:+.0f} % in the steady rate, "
          f"{100 * cpu:+.0f} % in CPU per chain, "
          f"{100 * cli:+.0f} % end to end as `score --ray` runs (cluster start and the driver's load added; "
          "a first load that converts the model weighs on both)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
