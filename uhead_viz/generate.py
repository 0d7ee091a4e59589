"""The batched, KV-cached decoding loop and the rules that end each chain.

A plain loop rather than ``model.generate``: token by token it applies our own stop
rules (an answer line, repeated lines, a line without end) and calls a streaming hook,
for batches as well as single chains. Loading and prompting stay in :mod:`uhead_viz.llm`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from .steps import ANSWER_RE, STEP_RE


class Decoder(Protocol):
    """What the loop needs of a loaded model (:class:`uhead_viz.llm.LLM` is one)."""

    model: Any
    tokenizer: Any
    eos_ids: set[int]

    def prefill(self, prompts: list[list[int]], pad: int) -> tuple[Any, torch.Tensor, torch.Tensor]: ...


def _norm_line(line: str) -> str:
    line = STEP_RE.sub("", line)
    return re.sub(r"\s+", " ", line).strip().lower()


_ORDINALS = (
    r"\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|"
    r"thirteenth|fourteenth|fifteenth|sixteenth|seventeenth|eighteenth|nineteenth|twentieth|next|last)\b"
)


def _shape(line: str) -> str:
    """A line with its numbers and ordinal words blanked: 'the 3rd glass costs $3' -> 'the # glass costs $#'."""
    return re.sub(_ORDINALS, "#", re.sub(r"\d+(?:\.\d+)?(?:st|nd|rd|th)?", "#", _norm_line(line)))


class StopRules:
    """Decide, after each token, whether one sequence is done.

    Stops at EOS, once an ``Answer:`` line is complete, and on degenerate repetition: a
    step whose content repeats an earlier step, or one line that runs on without end.
    Repeated lines are cut from the output so a looping chain still ends cleanly.
    """

    def __init__(
        self, tokenizer: Any, eos_ids: set[int], max_line_chars: int = 600, max_same_shape: int = 4
    ) -> None:
        self.tok = tokenizer
        self.eos_ids = eos_ids
        self.max_line_chars = max_line_chars
        self.max_same_shape = max_same_shape

    def check(self, ids: list[int], text: str) -> tuple[str | None, int]:
        """Return (stop reason or None, number of tokens to keep)."""
        if ids and ids[-1] in self.eos_ids:
            return "eos", len(ids) - 1
        lines = text.split("\n")
        current = lines[-1]
        complete = lines[:-1]
        if complete and ANSWER_RE.match(complete[-1]) and ANSWER_RE.match(complete[-1]).group(1).strip():
            return "answer", len(ids)
        if len(current) > self.max_line_chars:
            return "long_line", len(ids)
        if text.endswith("\n") and complete:
            last = _norm_line(complete[-1])
            if len(last) >= 4 and last in {_norm_line(x) for x in complete[:-1]}:
                return "repetition", self._keep_before_last_line(ids)
            # the same step again and again with only the numbers changed ("the 4th glass...")
            tail = [_shape(x) for x in complete[-self.max_same_shape :] if x.strip()]
            if len(tail) == self.max_same_shape and len(set(tail)) == 1:
                return "repetition", len(ids)
        return None, len(ids)

    def _keep_before_last_line(self, ids: list[int]) -> int:
        """Number of tokens that end just before the last complete line (cutting the repeat)."""
        text = self.tok.decode(ids)
        target = text.rstrip("\n").rfind("\n") + 1
        for n in range(len(ids), -1, -1):
            if len(self.tok.decode(ids[:n])) <= target:
                return n
        return 0


@torch.inference_mode()
def decode(
    llm: Decoder,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
    on_token: Callable[[int, str], None] | None = None,
    progress: bool = False,
    prefix: list[int] | None = None,
) -> Iterator[tuple[int, list[int], str]]:
    """KV-cached batched decoding with per-sequence stop rules; yields (index, ids, stop reason).

    ``prefix`` tokens are forced at the start of every answer and returned as part of it.
    Prompts are left-padded; finished rows keep stepping on a pad token (cheap on CPU
    next to the alternative of rebuilding the cache) until all rows are done.
    """
    prefix = list(prefix or [])
    prompts = [list(p) + prefix for p in prompts]
    model, tok = llm.model, llm.tokenizer
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else next(iter(llm.eos_ids))
    b = len(prompts)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rules = StopRules(tok, llm.eos_ids)
    out: list[list[int]] = [list(prefix) for _ in range(b)]
    done = [False] * b
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=max_new_tokens, desc=f"generating x{b}", unit="tok", leave=False)
    past, logits, mask = llm.prefill(prompts, pad)
    for n_step in range(max_new_tokens):
        logits = logits.float()
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(1).to(device)
        else:
            nxt = logits.argmax(-1)
        for i in range(b):
            if done[i]:
                nxt[i] = pad
                continue
            out[i].append(int(nxt[i]))
            text = tok.decode(out[i][:-1] if out[i][-1] in llm.eos_ids else out[i])
            reason, keep = rules.check(out[i], text)
            if on_token is not None and reason is None:
                on_token(i, text)
            if reason is not None:
                done[i] = True
                yield i, out[i][:keep], reason
        if bar is not None:
            bar.update(1)
        if all(done) or n_step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=device)], dim=1)
        pos = mask.sum(-1, keepdim=True) - 1
        res = model(
            input_ids=nxt.unsqueeze(1), attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True
        )
        past = res.past_key_values
        logits = res.logits[:, -1, :]
    if bar is not None:
        bar.close()
    for i in range(b):
        if not done[i]:
            yield i, out[i], "max_tokens"


def pad_tails(
    tails: list[list[int]], shared: int, pad: int, device: Any = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``[shared prefix][padding][own tail]`` over a cache of ``shared`` slots.

    Returns (tail ids [B, W], attention mask [B, shared + W], position ids [B, W]): the mask
    hides the padding and the positions skip it, so each row sees exactly its own tokens.
    """
    b, width = len(tails), max(len(t) for t in tails)
    ids = torch.full((b, width), pad, dtype=torch.long)
    mask = torch.zeros((b, shared + width), dtype=torch.long)
    mask[:, :shared] = 1
    for i, t in enumerate(tails):
        ids[i, width - len(t) :] = torch.tensor(t)
        mask[i, shared + width - len(t) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
    return ids.to(device), mask.to(device), pos.to(device)


def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(x) for x in seqs)
    for i in range(n):
        t = seqs[0][i]
        if any(x[i] != t for x in seqs):
            return i
    return n
