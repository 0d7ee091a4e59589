"""uhead-viz: ask a question and watch each reasoning step coloured by how likely it is wrong.

This file only builds and launches the page (Spaces run it from the repository root): the
page is ``uhead_viz.ui``, the pipeline ``uhead_viz.engine``. The model loads in the
background so the page is served at once; the first request waits for it.
``UHEAD_VIZ_MODEL`` picks the model (by default the packaged Qwen2.5-Coder-1.5B-Instruct,
on a Space too: see docs/deploy.md). The main action is the API endpoint ``analyze``.
"""

from __future__ import annotations

# isort: split
from uhead_viz import zerogpu  # first: on ZeroGPU, `spaces` must be imported before CUDA is touched

# isort: split
import logging
import os

from uhead_viz.ui.holder import EngineHolder
from uhead_viz.ui.layout import build, launch

__all__ = ["HOLDER", "EngineHolder", "build", "launch", "main"]

HOLDER = EngineHolder()  # the served model; tests build pages with holders of their own
if zerogpu.enabled():  # a GPU Space: load at import, so the GPU work finds the model placed
    HOLDER.load(warm=not zerogpu.on_zero_gpu())


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    HOLDER.start()
    launch(
        build(HOLDER),
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    )


if __name__ == "__main__":
    main()
