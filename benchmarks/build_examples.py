"""Compute the app's example results ahead of time: ``make examples``.

    .venv/bin/python benchmarks/build_examples.py [--model NAME] [--out assets/examples] [--verifier judge|none]

Each example question (``uhead_viz/examples.py``) goes through the app's own pipeline
(generation with live scoring, the final teacher-forced pass, the verifier) and the result
is stored as JSON. The app shows a stored result at once when its example is clicked, as
long as it was built with the loaded model's weights; if only the head changed since, the
stored chain is re-scored instead of regenerated. Rerun after changing the model or the
prompt; on a CPU it takes about a minute per example.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uhead_viz.engine import Engine, verifier_names  # noqa: E402
from uhead_viz.llm import load_llm  # noqa: E402
from uhead_viz.ui import examples  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model name, folder or hub id (default: UHEAD_VIZ_MODEL or the pack)")
    ap.add_argument("--out", default=str(examples.ROOT))
    ap.add_argument("--verifier", default="judge", help="judge (default), none, or prm:<hub id>")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    eng = Engine(load_llm(args.model))
    verifier = None if args.verifier in ("", "none") else args.verifier
    if verifier == "judge" and "judge" not in verifier_names():
        print("The LLM judge is not in this build; building without a verifier.")
        verifier = None
    print(f"model {eng.llm.name}, head {eng.hs.path or 'none'}, colour {eng.primary}, verifier {verifier or 'none'}")
    examples.build(eng, args.out, verifier=verifier)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
