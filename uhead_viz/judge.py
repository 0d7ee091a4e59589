"""A local LLM as step judge: P(step k is correct) read from the Yes/No answer distribution.

The judge is a causal chat LM (by default the loaded model itself, judging its own steps:
the self-annotation set-up of the paper). It sees one user turn holding an instruction,
the problem, optionally a reference solution, and the numbered steps, followed by one
short question about step k (the step's text repeated, then "Is Step k correct? Answer Yes
or No."), and then the opening of the assistant turn, so the next token *is* the answer.
Nothing is generated or parsed: with ``lse(G)`` the log-sum-exp of the logits of token
group ``G``,

    P(correct) = exp(lse(Yes)) / (exp(lse(Yes)) + exp(lse(No))) = sigmoid(lse(Yes) - lse(No))

where each group holds the variants of its word ("Yes", " Yes", "yes", " yes", "YES", ...).
The softmax over the whole vocabulary cancels, so this is the probability of "Yes" given
that the model answers Yes or No.

- **First tokens.** A variant's *first* token stands for it. Qwen and Llama tokenizers have
  each variant as one token, but a small BPE vocabulary (the test models') may split "Yes"
  into "Y" + "es"; the first token is then the decision the model makes first. A token that
  starts variants of both words (a bare space) is dropped from both groups.
- **fp32 answer logits.** Only those few logits are computed, in fp32, from the final hidden
  state and the matching rows of the output layer. The int8 default model's weight-only LM
  head returns bf16 logits, whose spacing (0.125 at magnitudes 16-32) would round
  P(correct) to a handful of values (0.5, 0.53, 0.59, 0.62, ...) and tie many steps.

Cost: the shared part (template, instruction, problem, reference, all steps) is run once
per chain; its KV cache is then repeated over a batch of rows, one row per step question,
laid out as in ``LLM.prefill``: ``[shared][padding][own question]`` with the padding
masked out and skipped by the position ids, so every row computes what a fresh run of its
full prompt would. In fp32 the two agree to float rounding (the unit tests check 1e-5). The
int8 default model quantizes activations per tensor, so its numbers depend on which tokens
share a forward pass and the two paths do not agree exactly. On one 3-step GSM8K chain with
its reference (measured before the fp32 answer logits), fp32 full runs gave 0.69/0.50/0.39,
int8 cached and batched 0.73/0.53/0.38, int8 full runs 0.73/0.32/0.62: the cached path was
the closer to fp32, plausibly because the question tokens are quantized without the first
token's outsized activations in the same tensor.

Everything the user supplied (problem, reference, steps) is tokenized with special tokens
split, as in ``LLM.prompt_ids``, so a typed ``<|im_start|>`` is text and cannot open a turn.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InputError
from .generate import pad_tails
from .llm import LLM, clean_question
from .steps import step_body

JUDGE_SYSTEM = "You are a meticulous math teacher who checks solutions one step at a time."
INSTRUCTION = (
    "Below is a math problem and a proposed solution written as numbered steps. You will be asked "
    "about one step. A step is correct when its reasoning is valid, it follows from the problem and "
    "the steps before it, and every calculation in it is right."
)
REFERENCE_NOTE = (
    " A correct reference solution is given for comparison; a step may take another route than the "
    "reference and still be correct."
)
QUESTION = "\n\nConsider Step {k}: {body}\nIs Step {k} correct? Answer Yes or No."
YES_WORDS = ("Yes", " Yes", "yes", " yes", "YES")
NO_WORDS = ("No", " No", "no", " no", "NO")
MAX_JUDGE_TOKENS = 6144  # shared part + longest question; longer prompts are refused
MAX_STEPS = 200
BATCH_ROWS = 8  # step questions per forward pass (each row holds a copy of the shared cache)
_SLOT = "\u2063UHEAD_JUDGE\u2063"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class JudgePrompt:
    """Token ids of one chain's judge prompts: ``shared + tails[k]`` asks about step k."""

    shared: list[int]
    tails: list[list[int]]

    def full(self, k: int) -> list[int]:
        return self.shared + self.tails[k]


def answer_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Token ids standing for "Yes" and for "No": the first token of each variant, shared ones dropped."""

    def firsts(words: tuple[str, ...]) -> set[int]:
        out = set()
        for w in words:
            ids = tokenizer(w, add_special_tokens=False)["input_ids"]
            if ids:
                out.add(int(ids[0]))
        return out

    yes, no = firsts(YES_WORDS), firsts(NO_WORDS)
    both = yes & no
    yes, no = sorted(yes - both), sorted(no - both)
    if not yes or not no:
        raise ValueError("The judge's tokenizer has no tokens that tell 'Yes' from 'No'.")
    return yes, no


def p_correct(logits: torch.Tensor, yes: list[int], no: list[int]) -> torch.Tensor:
    """P(Yes) normalized between the Yes and No token groups, for logits of shape [..., V]."""
    x = logits.float()
    return torch.sigmoid(torch.logsumexp(x[..., yes], -1) - torch.logsumexp(x[..., no], -1))


def _head_rows(model: Any, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """fp32 weight rows (and bias) of the output layer for ``ids``; None for a layer type we do not know."""
    head = model.get_output_embeddings()
    bias = getattr(head, "bias", None)
    if hasattr(head, "qweight") and hasattr(head, "scales"):  # quant.W8Linear: int8 rows, one scale each
        w = head.qweight[ids].float() * head.scales[ids].float()[:, None]
    elif isinstance(getattr(head, "weight", None), torch.Tensor):  # nn.Linear (also tied to the embedding)
        w = head.weight[ids].float()
    elif callable(getattr(head, "weight", None)):  # torch.ao dynamic quantized Linear
        w = head.weight().dequantize()[ids].float()
        bias = head.bias() if callable(getattr(head, "bias", None)) else None
    else:
        return None
    return w, None if bias is None else bias[ids].float()


def _prefix_cache(model: Any, ids: torch.Tensor) -> Any:
    """The KV cache of ``ids``, skipping the output layer when ``answer_logits`` does not need it."""
    if hasattr(model, "get_decoder") and _head_rows(model, [0]) is not None:
        return model.get_decoder()(input_ids=ids, use_cache=True).past_key_values
    return model(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values


def answer_logits(model: Any, forward: dict[str, Any], ids: list[int]) -> torch.Tensor:
    """Last-position logits [B, len(ids)] of the answer tokens, in fp32 (see the module docstring).

    Runs the decoder, then only the output-layer rows of ``ids``; a model whose output layer
    this does not know runs whole and its logits are sliced.
    """
    rows = _head_rows(model, ids)
    if rows is None or not hasattr(model, "get_decoder"):
        return model(**forward, logits_to_keep=1).logits[:, -1, ids].float()
    h = model.get_decoder()(**forward).last_hidden_state[:, -1, :].float()
    w, b = rows
    logits = h @ w.T.to(h.device) + (0 if b is None else b.to(h.device))
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"The {what} must be text.")
    return _CONTROL.sub("", value).strip()


def _template(tokenizer: Any) -> tuple[str, str]:
    """The chat text before and after one user turn's content, ending with the assistant turn start."""
    if getattr(tokenizer, "chat_template", None):
        for messages in (
            [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": _SLOT}],
            [{"role": "user", "content": JUDGE_SYSTEM + "\n\n" + _SLOT}],  # templates without a system role
        ):
            try:
                rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception:  # jinja raises plain exceptions for roles a template does not know
                continue
            if rendered.count(_SLOT) == 1:
                pre, post = rendered.split(_SLOT)
                return pre, post
    return f"{JUDGE_SYSTEM}\n\nUser: ", "\n\nAssistant:"


def build_prompt(
    llm: LLM, problem: str, steps: list[str], reference: str | None = None, max_tokens: int = MAX_JUDGE_TOKENS
) -> JudgePrompt:
    """The judge's prompt ids for every step; InputError for empty, malformed or over-long input.

    Fixed text (template, instruction, labels) is tokenized as it is; the problem, the
    reference and the steps with special tokens split. Steps are renumbered ``Step k:``
    after their own marker, if any, is stripped, so the question's numbers always match.
    """
    tok = llm.tokenizer
    problem = clean_question(problem)
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise InputError("The steps must be a list of texts.")
    if len(steps) > MAX_STEPS:
        raise InputError(f"The solution has {len(steps)} steps; the judge takes at most {MAX_STEPS}.")
    bodies = [step_body(_text(s, "step")) for s in steps]
    ref = _text(reference, "reference solution") if reference is not None else ""
    chars = len(problem) + len(ref) + 2 * sum(len(b) for b in bodies)
    if chars > 16 * max_tokens:  # far over any tokenization: refuse before tokenizing megabytes
        raise InputError(
            f"The problem and solution are too long to judge: {chars:,} characters. "
            "Shorten the problem, the reference or the steps."
        )

    def fixed(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    def user(text: str) -> list[int]:
        return tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] if text else []

    pre, post = _template(tok)
    shared = fixed(pre) + fixed(INSTRUCTION + (REFERENCE_NOTE if ref else "") + "\n\nProblem:\n") + user(problem)
    if ref:
        shared += fixed("\n\nReference solution:\n") + user(ref)
    shared += fixed("\n\nProposed solution:")
    for k, body in enumerate(bodies, start=1):
        shared += fixed(f"\nStep {k}: ") + user(body)
    post_ids = fixed(post)
    tails = []
    before, after = QUESTION.split("{body}")
    for k, body in enumerate(bodies, start=1):
        tails.append(fixed(before.format(k=k)) + user(body) + fixed(after.format(k=k)) + post_ids)
    longest = len(shared) + max((len(t) for t in tails), default=0)
    if longest > max_tokens:
        raise InputError(
            f"The problem and solution are too long to judge: {longest:,} tokens, the limit is {max_tokens:,}. "
            "Shorten the problem, the reference or the steps."
        )
    return JudgePrompt(shared=shared, tails=tails)


@torch.inference_mode()
def step_correct_probs(
    llm: LLM,
    problem: str,
    steps: list[str],
    reference: str | None = None,
    max_tokens: int = MAX_JUDGE_TOKENS,
    batch_rows: int = BATCH_ROWS,
    ask: Sequence[int] | None = None,
) -> list[float]:
    """P(step k is correct) for every step, as judged by ``llm`` (see the module docstring).

    The shared prompt is run once; the step questions then run ``batch_rows`` at a time over
    copies of its KV cache. ``ask`` limits the questions to those step indices (the judge
    still sees every step); the result then has one entry per index. Returns ``[]`` for no
    steps.
    """
    prompt = build_prompt(llm, problem, steps, reference, max_tokens)
    if ask is not None:
        ask = [int(k) for k in ask]
        if any(not 0 <= k < len(prompt.tails) for k in ask):
            raise IndexError(f"ask={ask} holds a step index outside 0..{len(prompt.tails) - 1}")
        prompt = JudgePrompt(shared=prompt.shared, tails=[prompt.tails[k] for k in ask])
    if not prompt.tails:
        return []
    model, tok = llm.model, llm.tokenizer
    yes, no = answer_ids(tok)
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else next(iter(llm.eos_ids), 0)
    shared_kv = _prefix_cache(model, torch.tensor([prompt.shared], device=device))
    n_shared = len(prompt.shared)
    both = yes + no
    is_yes, is_no = list(range(len(yes))), list(range(len(yes), len(both)))
    out: list[float] = []
    for lo in range(0, len(prompt.tails), max(1, batch_rows)):
        tails = prompt.tails[lo : lo + max(1, batch_rows)]
        past = copy.deepcopy(shared_kv)
        if len(tails) > 1:
            past.batch_repeat_interleave(len(tails))
        ids, mask, pos = pad_tails(tails, n_shared, pad, device)
        forward = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": pos,
            "past_key_values": past,
            "use_cache": True,
        }
        logits = answer_logits(model, forward, both)  # [b, len(both)]
        out += [float(p) for p in p_correct(logits, is_yes, is_no).cpu()]
    return out
