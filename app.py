"""uhead-viz: ask a question, watch the reasoning chain stream in step by step.

The app is thin: it calls the package. The model loads in the background at start-up so
the page is served at once; the first request waits for it. ``UHEAD_VIZ_MODEL`` picks the
model (a hub id on Spaces, the packaged Qwen2.5-Coder-1.5B-Instruct offline).
"""

from __future__ import annotations

import html
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import gradio as gr

from uhead_viz.llm import LLM, InputError, clean_question, load_llm, model_env_default
from uhead_viz.packs import PackError
from uhead_viz.steps import split_text, step_body

logger = logging.getLogger("uhead_viz.app")

EXAMPLES = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?",
    "What is the sum of all positive divisors of 36?",
]

CSS = """
.steps {font-size: 1.02rem; line-height: 1.55;}
.step {padding: .45rem .7rem; margin: .3rem 0; border-radius: .5rem; background: var(--block-background-fill);
       border-left: 4px solid var(--border-color-primary);}
.step .k {font-weight: 600; margin-right: .4rem; color: var(--body-text-color-subdued);}
.answer {margin-top: .6rem; font-weight: 600;}
.notice {color: var(--error-text-color); font-weight: 500;}
.pending {opacity: .65;}
"""


class ModelHolder:
    """Loads the model once, in the background, and hands it to requests."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.llm: LLM | None = None
        self.error: str | None = None
        self.ready = threading.Event()
        self.lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._load, daemon=True).start()

    def _load(self) -> None:
        try:
            self.llm = load_llm(self.name)
        except (PackError, OSError, ValueError) as e:
            self.error = str(e)
            logger.error("Model failed to load: %s", e)
        finally:
            self.ready.set()

    def get(self) -> LLM:
        self.ready.wait()
        if self.llm is None:
            raise InputError(f"The model is not available: {self.error}")
        return self.llm


HOLDER = ModelHolder(model_env_default())


def render(text: str, final: bool) -> str:
    """Steps as HTML blocks; the step still being written is drawn faded."""
    regions, answer, _ = split_text(text)
    parts = ['<div class="steps">']
    for k, r in enumerate(regions, start=1):
        pending = (not final) and k == len(regions) and answer is None
        body = html.escape(step_body(r.text)).replace("\n", "<br>")
        parts.append(f'<div class="step{" pending" if pending else ""}"><span class="k">Step {k}</span>{body}</div>')
    if answer is not None:
        parts.append(f'<div class="answer">Answer: {html.escape(answer)}</div>')
    parts.append("</div>")
    return "".join(parts)


def notice(msg: str) -> str:
    return f'<div class="notice">{html.escape(msg)}</div>'


def analyze(question: str, max_new_tokens: int = 320, temperature: float = 0.0) -> Iterator[tuple[str, dict[str, Any]]]:
    """Stream the chain as HTML; the last item also carries the JSON result for API users."""
    try:
        question = clean_question(question)
        llm = HOLDER.get()
        final = None
        for text, chain in llm.stream(question, int(max_new_tokens), float(temperature)):
            if chain is None:
                yield render(text, final=False), {}
            else:
                final = chain
        assert final is not None
        result = {
            "question": question,
            "model": llm.name,
            "answer": final.answer,
            "stop_reason": final.meta.get("stop_reason"),
            "steps": [{"text": step_body(s), "scores": {}} for s in final.steps],
        }
        yield render(final.text, final=True), result
    except InputError as e:
        yield notice(str(e)), {"error": str(e)}
    except Exception as e:  # the page must never show a traceback
        logger.exception("analyze failed")
        yield notice(f"Something went wrong while generating ({e.__class__.__name__}). Please try again."), {
            "error": e.__class__.__name__
        }


def build() -> gr.Blocks:
    with gr.Blocks(title="uhead-viz") as demo:
        gr.Markdown(
            "# uhead-viz\nStep-by-step reasoning from a local LLM, checked step by step. "
            f"Model: **{HOLDER.name}**."
        )
        with gr.Row():
            with gr.Column(scale=2):
                question = gr.Textbox(label="Question", lines=4, placeholder="Type a math word problem…")
                with gr.Accordion("Generation settings", open=False):
                    max_tokens = gr.Slider(32, 1024, value=320, step=16, label="Max new tokens")
                    temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="Temperature (0 = greedy)")
                go = gr.Button("Solve", variant="primary")
                gr.Examples(EXAMPLES, inputs=[question])
            with gr.Column(scale=3):
                chain_html = gr.HTML(label="Reasoning chain")
                result = gr.JSON(label="Result", visible=False)
        go.click(analyze, [question, max_tokens, temperature], [chain_html, result], api_name="analyze")
        question.submit(analyze, [question, max_tokens, temperature], [chain_html, result], api_name=False)
    return demo


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    HOLDER.start()
    demo = build()
    demo.queue(default_concurrency_limit=1, max_size=32)
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        show_error=False,
        css=CSS,
        theme=gr.themes.Soft(),
    )


if __name__ == "__main__":
    main()
