"""Work openers for the Ray tests, importable by Ray workers (the tests put this folder on their path).

``dying_open_score`` wraps the real ``open_score``: the first time a worker is handed the
marked row it leaves a marker file and ends its process at once, as a crash or an
out-of-memory kill would; later workers find the marker and score the row.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from uhead_viz.workers import ScoreRecipe, open_score


def dying_open_score(args: tuple[ScoreRecipe, str, str]) -> Any:
    recipe, marker, victim = args
    work = open_score(recipe)

    def run(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if any(str(r.get("id")) == victim for r in rows) and not Path(marker).exists():
            Path(marker).write_text(f"worker {os.getpid()} died on row {victim}\n")
            os._exit(1)
        return work(rows)

    return run
