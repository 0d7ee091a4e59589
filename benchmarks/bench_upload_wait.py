"""How long a question waits while another visitor's uploaded file is being scored.

    .venv/bin/python benchmarks/bench_upload_wait.py [--tiny] [--model NAME] [--chains 12] [--questions 4]
                                                     [--plain-lock]

A file job scores its chains one by one through ``Engine.score_file`` (the app's path),
taking the model lock per chain in the lock's background class. While it runs, questions
arrive one after another, each half a chain into the job's current chain; each takes the
model lock as a foreground request and scores a pasted chain (the same one each time).
For each question the wait is submit -> lock taken, i.e. what the visitor waits before
their own work starts. Printed: each chain's scoring time, every question's wait, the
longest wait against the longest chain, and the whole file's time (what a question waited
when the file held the model for its whole length).

``--tiny`` uses the test suite's tiny step-writing model (seconds, no model packs needed;
the figures then show the mechanism, not a real time). ``--plain-lock`` swaps in a plain
``threading.Lock`` for comparison (no priority: the job may take the lock again first).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uhead_viz.engine import Engine  # noqa: E402
from uhead_viz.steps import chain_from_steps  # noqa: E402

CHAINS = ROOT / "data" / "chains" / "eval" / "gsm8k_test100_qwen-coder-1.5b_int8.jsonl"
QUESTION = (
    "A bakery sells muffins for $3 each and cookies for $1.50 each. On Monday it sold 24 muffins and twice as many "
    "cookies. How much money did the bakery make on Monday?"
)
STEPS = [
    "Step 1: The bakery sold 24 * 2 = 48 cookies.",
    "Step 2: Muffins made 24 * $3 = $72.",
    "Step 3: Cookies made 48 * $1.50 = $72.",
    "Step 4: In all it made $72 + $72 = $144.",
]


class PlainLock:
    """The engine's lock interface over a plain threading.Lock: no foreground priority."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acquire, self.release = self._lock.acquire, self._lock.release

    def __enter__(self) -> PlainLock:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    @contextmanager
    def background(self):
        with self._lock:
            yield


def load_engine(tiny: bool, model: str | None) -> Engine:
    if tiny:
        sys.path.insert(0, str(ROOT / "tests"))
        from app_support import make_step_llm
        from tiny_models import build_tokenizer

        return Engine(make_step_llm(build_tokenizer()))
    from uhead_viz.llm import load_llm

    return Engine(load_llm(model))


def write_file(n: int, folder: Path) -> Path:
    rows = [json.loads(ln) for ln in CHAINS.read_text(encoding="utf-8").splitlines()[:n]]
    p = folder / "upload.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny model instead of the real one")
    ap.add_argument("--model", default=None, help="the model to load (default: the packaged default)")
    ap.add_argument("--chains", type=int, default=12)
    ap.add_argument("--questions", type=int, default=4)
    ap.add_argument("--plain-lock", action="store_true", help="compare with a plain lock (no priority)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    eng = load_engine(args.tiny, args.model)
    print(f"model {eng.llm.name} ({eng.llm.precision}), loaded in {time.perf_counter() - t0:.1f} s; "
          f"head: {'yes' if eng.head is not None else 'none'}; lock: {'plain' if args.plain_lock else 'fair'}")
    if args.plain_lock:
        eng.lock = PlainLock()
    chain = chain_from_steps(eng.llm.tokenizer, QUESTION, eng.llm.prompt_ids(QUESTION), STEPS, "144")
    t = time.perf_counter()
    eng.analyze_chain(chain)
    print(f"the question's own work (a pasted chain, scored) alone: {time.perf_counter() - t:.2f} s")

    with tempfile.TemporaryDirectory() as d:
        path = write_file(args.chains, Path(d))
        chain_s: list[float] = []
        done_at: list[float] = []
        finished = threading.Event()

        def job() -> None:
            last = time.perf_counter()
            for done, _total, _rows, _errors in eng.score_file(path):
                now = time.perf_counter()
                if done:
                    chain_s.append(now - last)
                    done_at.append(now)
                last = now
            finished.set()

        t_file = time.perf_counter()
        th = threading.Thread(target=job, name="file-job")
        th.start()
        waits: list[float] = []
        while not finished.is_set() and len(waits) < args.questions:
            while len(done_at) < 1 + 2 * len(waits) and not finished.is_set():  # every other chain
                time.sleep(0.001)
            if finished.is_set():
                break
            half = statistics.median(chain_s) / 2 if chain_s else 0.0
            time.sleep(half)  # arrive in the middle of the job's current chain
            t_submit = time.perf_counter()
            with eng.lock:
                waits.append(time.perf_counter() - t_submit)
                eng._analyze_chain(chain)
        th.join()
        file_s = time.perf_counter() - t_file

    print(f"file: {len(chain_s)} chains in {file_s:.1f} s; per chain median {statistics.median(chain_s):.2f} s, "
          f"max {max(chain_s):.2f} s")
    if not waits:
        print("no question arrived before the file was done: use more --chains")
        return
    print("question waits (submit -> model lock taken): " + ", ".join(f"{w:.2f}" for w in waits) + " s")
    print(f"longest wait {max(waits):.2f} s against the longest chain {max(chain_s):.2f} s "
          f"(a question waits for at most the chain in progress); the whole file took {file_s:.1f} s")


if __name__ == "__main__":
    main()
