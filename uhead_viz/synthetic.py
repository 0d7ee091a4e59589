"""Exact synthetic errors: GSM8K reference solutions with one calculation changed, and everything after it redone.

Why: self-labelled chains know *that* a chain went wrong far better than *where*, and their
wrong steps cluster late in the chain. Here the wrong step is known exactly and its position
is drawn uniformly, so the only thing that tells a changed step from a fine one is its
content. Each GSM8K solution annotates its calculations (``48/2 = <<48/2=24>>24 clips``);
one of them is changed in one of three ways:

- ``operand``: one number of the expression is misread (``48/2`` -> ``46/2``); the step's
  own arithmetic stays right (``46/2 = 23``), so only its content is wrong;
- ``operator``: one operation is swapped (``48/2`` -> ``48*2 = 96``), again with right arithmetic;
- ``result``: the expression is kept and its result is written wrong (``48/2 = 25``), an
  arithmetic slip.

The changed value is then carried forward exactly as a careless solver would: every later
calculation that used the old value uses the new one and is recomputed, every later mention
of a changed value is rewritten, and so is the final answer. Labels: the changed step 1, the
steps before it 0, the steps after it None (the ProcessBench convention; ``train`` leaves them
out of the loss); every label has confidence 1.

A change is kept only when it can be carried forward without guessing, so the text stays
consistent: a changed value must not also be a number of the question, a number written
before it was computed, or a number computed twice (a later mention could then mean either);
every recomputed value must stay positive and plain (whole numbers stay whole, at most two
decimals); the expression being changed must be written out before its annotation (``46/2 =
23``, not only ``23``) for operand and operator changes; the final answer must change; and no
later step may gain an arithmetic error. Questions where no change passes are skipped. What
remains unchecked: a later mention of a changed value that is really a constant the solution
never wrote before (a result of 60 and, later, "/ 60" minutes) is rewritten with it.

At every step that holds a calculation, up to ``TRIES`` random changes (kind, calculation,
position and new value drawn uniformly) are tried until one passes; the changed step is then
drawn uniformly over the steps where one passed. Everything is seeded per question, so a row
does not depend on which other questions are in the run. (Later steps pass more often, since
less follows them, so over a whole set the last step is still changed more often than the first.)
"""

from __future__ import annotations

import ast
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .jsonl import problem_of
from .labels.base import first_error_labels
from .labels.checks import arithmetic_errors
from .labels.reference import strip_annotations

logger = logging.getLogger(__name__)

SOURCE = "synthetic-gsm8k"
KINDS = ("operand", "operator", "result")
TRIES = 30
_ANN = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_EXPR_TOKEN = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+|[-+*/()])")
_NUM = re.compile(r"(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d])|(?<![\w.\d])\.\d+(?![\d])")
_VISIBLE_OP = {"+": "+", "-": "-", "*": "*", "/": "/", "x": "*", "X": "*", "×": "*", "÷": "/"}
_PLAIN = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)")
_CLEAN_SPAN = re.compile(r"[\d.,\s$()+\-*/xX×÷]*")


class Reject(Exception):
    """This change cannot be carried forward exactly; draw another."""


@dataclass
class Calc:
    """One calculator note ``<<expr=result>>`` with the text before it on its line."""

    before: str  # text since the previous note on the same line (or the line start)
    expr: list[str]  # tokens: numbers, operators, parentheses
    result: str


@dataclass
class Line:
    calcs: list[Calc]
    tail: str  # text after the last note


def parse_solution(answer: str) -> tuple[list[Line], str] | None:
    """A GSM8K solution as lines of notes, and its final answer; None if it has no ``#### N``."""
    if "####" not in answer:
        return None
    body, final = answer.rsplit("####", 1)
    lines = []
    for raw in body.splitlines():
        calcs, pos = [], 0
        for m in _ANN.finditer(raw):
            tokens = _EXPR_TOKEN.findall(m.group(1))
            if "".join(tokens) != m.group(1).replace(" ", "") or not _PLAIN.fullmatch(m.group(2).strip()):
                return None  # not plain arithmetic: leave the question out
            calcs.append(Calc(raw[pos : m.start()], tokens, m.group(2).strip()))
            pos = m.end()
        lines.append(Line(calcs, raw[pos:]))
    return lines, final.strip().replace(",", "")


def render(line: Line) -> str:
    return "".join(f"{c.before}<<{''.join(c.expr)}={c.result}>>" for c in line.calcs) + line.tail


def _val(text: str) -> Fraction:
    return Fraction(text.replace(",", ""))


def _eval_node(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval_node(node.operand)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        a, b = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        return a / b  # ZeroDivisionError: caught by the caller
    raise ValueError(f"not plain arithmetic: {type(node).__name__}")


def evaluate(tokens: list[str]) -> Fraction | None:
    """The exact value of an expression's tokens (only numbers, ``+ - * /`` and parentheses)."""
    try:
        return _eval_node(ast.parse("".join(tokens), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None


def fmt(value: Fraction, like: str) -> str:
    """``value`` written like the number ``like`` (thousands commas, decimals); Reject if it is not plain."""
    if value <= 0:
        raise Reject("not positive")
    if value.denominator == 1:
        n = int(value)
        return f"{n:,}" if "," in like else str(n)
    if "." not in like:
        raise Reject("a whole number would become a fraction")
    for places in range(1, max(2, len(like.split(".")[1])) + 1):
        if (value * 10**places).denominator == 1:
            return f"{float(value):.{places}f}"
    raise Reject("more than two decimals")


def _numbers(text: str) -> list[re.Match]:
    return list(_NUM.finditer(text))


def _perturb(v: Fraction, rng: random.Random) -> Fraction | None:
    """A plausible misreading of ``v``: off by one, two or ten, doubled, halved, or two digits swapped."""
    options = [v + 1, v - 1, v + 2, v - 2, v * 2, v / 2]
    if v.denominator == 1 and v >= 10:
        n = int(v)
        options += [v + 10, v - 10]
        s = str(n)
        i = rng.randrange(len(s) - 1)
        swapped = s[:i] + s[i + 1] + s[i] + s[i + 2 :]
        if swapped != s and not swapped.startswith("0"):
            options.append(Fraction(int(swapped)))
    options = [o for o in options if o > 0 and o != v]
    return rng.choice(options) if options else None


@dataclass
class Change:
    line: int  # index into the solution's lines
    calc: int  # index into that line's notes
    kind: str
    pos: int  # operand or operator index (by order in the expression), unused for "result"
    new: Any  # the new number (operand / result) or operator symbol


def _operands(expr: list[str]) -> list[int]:
    return [i for i, t in enumerate(expr) if t[0].isdigit() or t[0] == "."]


def _operators(expr: list[str]) -> list[int]:
    """Binary operators only (a sign after ``(`` or at the start is not one)."""
    out = []
    for i, t in enumerate(expr):
        if t in "+-*/" and i > 0 and expr[i - 1] not in "+-*/(":
            out.append(i)
    return out


def draw_change(lines: list[Line], li: int, rng: random.Random) -> Change | None:
    """A random change at line ``li`` (kind, note, position, new value), or None if the line has no note."""
    calcs = lines[li].calcs
    if not calcs:
        return None
    ci = rng.randrange(len(calcs))
    kind = rng.choice(KINDS)
    expr = calcs[ci].expr
    if kind == "operand":
        ops = _operands(expr)
        if not ops:
            return None
        j = rng.randrange(len(ops))
        new = _perturb(_val(expr[ops[j]]), rng)
        return Change(li, ci, kind, j, new) if new is not None else None
    if kind == "operator":
        ops = _operators(expr)
        if not ops:
            return None
        j = rng.randrange(len(ops))
        return Change(li, ci, kind, j, rng.choice([o for o in "+-*/" if o != expr[ops[j]]]))
    new = _perturb(_val(calcs[ci].result), rng)
    return Change(li, ci, kind, 0, new) if new is not None else None


def _visible_change(before: str, calc: Calc, change: Change) -> str:
    """Apply an operand or operator change to the expression written before the note."""
    nums = _numbers(before)
    ops_at = _operands(calc.expr)
    values = [_val(calc.expr[i]) for i in ops_at]
    group = nums[-len(values) :] if len(nums) >= len(values) else []
    if not group or Counter(_val(m.group(0)) for m in group) != Counter(values):
        raise Reject("the expression is not written out before its note")
    if change.kind == "operand":
        old = values[change.pos]
        nth = values[: change.pos].count(old)
        m = [g for g in group if _val(g.group(0)) == old][nth]
        return before[: m.start()] + fmt(change.new, m.group(0)) + before[m.end() :]
    lo, hi = group[0].start(), group[-1].end()
    span = before[lo:hi]
    if [_val(m.group(0)) for m in group] != values or not _CLEAN_SPAN.fullmatch(span):
        raise Reject("the written expression is not plain arithmetic in the note's order")
    masked = _NUM.sub(lambda m: "#" * len(m.group(0)), span)
    sym = [(i, ch) for i, ch in enumerate(masked) if ch in _VISIBLE_OP]
    if [_VISIBLE_OP[ch] for _, ch in sym] != [calc.expr[i] for i in _operators(calc.expr)]:
        raise Reject("the written operators differ from the note's")
    i, _ = sym[change.pos]
    new = change.new
    if new == "*":  # multiply the way the writer does
        new = next((ch for _, ch in sym if _VISIBLE_OP[ch] == "*"), "*")
    return before[: lo + i] + new + before[lo + i + 1 :]


def apply_change(question: str, lines: list[Line], final: str, change: Change) -> tuple[list[Line], str, str]:
    """The solution with ``change`` made and carried forward, its new final answer, and a note.

    Raises ``Reject`` when the change cannot be carried forward exactly (see the module docstring).
    """
    # every number of the original, in reading order, with where it stands
    seen: list[tuple[Fraction, tuple[int, int, int]]] = []  # value, (line, calc, part)
    results: Counter = Counter()
    for li, line in enumerate(lines):
        for ci, c in enumerate(line.calcs):
            seen += [(_val(m.group(0)), (li, ci, 0)) for m in _numbers(c.before)]
            seen += [(_val(c.expr[i]), (li, ci, 1)) for i in _operands(c.expr)]
            results[_val(c.result)] += 1
        seen += [(_val(m.group(0)), (li, len(line.calcs), 0)) for m in _numbers(line.tail)]
    in_question = {_val(m.group(0)) for m in _numbers(question)}

    def claim(old: Fraction, li: int, ci: int) -> None:
        """``old`` (the result of note ci on line li) may be rewritten everywhere after it: check it is unambiguous."""
        if old in in_question:
            raise Reject(f"{old} is also a number of the question")
        if results[old] > 1:
            raise Reject(f"{old} is computed twice")
        if any(v == old and where <= (li, ci, 1) for v, where in seen):
            raise Reject(f"{old} is written before it is computed")

    new_lines = [Line([Calc(c.before, list(c.expr), c.result) for c in ln.calcs], ln.tail) for ln in lines]
    target = new_lines[change.line].calcs[change.calc]
    old_expr = f"{''.join(target.expr)}={target.result}"
    if evaluate(target.expr) != _val(target.result):
        raise Reject("the note itself is not exact")
    if change.kind in ("operand", "operator"):
        target.before = _visible_change(target.before, target, change)
        if change.kind == "operand":
            i = _operands(target.expr)[change.pos]
            target.expr[i] = fmt(change.new, target.expr[i])
        else:
            target.expr[_operators(target.expr)[change.pos]] = change.new
        new_value = evaluate(target.expr)
        if new_value is None:
            raise Reject("division by zero")
    else:
        new_value = change.new
    old_value = _val(target.result)
    if new_value == old_value:
        raise Reject("the result did not change")
    claim(old_value, change.line, change.calc)
    target.result = fmt(new_value, target.result)
    changed = {old_value: new_value}

    def number(m: re.Match) -> str:
        v = _val(m.group(0))
        return fmt(changed[v], m.group(0)) if v in changed else m.group(0)

    def rewrite(text: str) -> str:
        return _NUM.sub(number, text)

    line = new_lines[change.line]
    after = line.calcs[change.calc + 1].before if change.calc + 1 < len(line.calcs) else line.tail
    shown = _numbers(after)
    if not shown or shown[0].start() > 2 or _val(shown[0].group(0)) != old_value:
        raise Reject("the result is not written right after its note")

    after_target = False
    for li, line in enumerate(new_lines):
        for ci, c in enumerate(line.calcs):
            if not after_target:
                after_target = (li, ci) == (change.line, change.calc)
                continue
            c.before = rewrite(c.before)
            old_result = _val(c.result)
            if any(_val(c.expr[i]) in changed for i in _operands(c.expr)):
                if evaluate(c.expr) != old_result:
                    raise Reject("a later note is not exact")
                for i in _operands(c.expr):
                    if (v := _val(c.expr[i])) in changed:
                        c.expr[i] = fmt(changed[v], c.expr[i])
                value = evaluate(c.expr)
                if value is None:
                    raise Reject("division by zero")
                if value != old_result:
                    claim(old_result, li, ci)
                    changed[old_result] = value
                c.result = fmt(value, c.result)
            elif old_result in changed:
                raise Reject(f"{old_result} is computed again")
        if after_target:
            line.tail = rewrite(line.tail)
    new_final = _val(final)
    if new_final not in changed:
        raise Reject("the final answer did not change")
    note = f"{change.kind} changed: {old_expr} became {''.join(target.expr)}={target.result}"
    return new_lines, fmt(changed[new_final], final), note


def _steps(lines: list[Line]) -> tuple[list[str], list[int]]:
    """Step texts (notes removed, one per non-empty line) and the line index of each step."""
    steps, where = [], []
    for li, line in enumerate(lines):
        text = strip_annotations(render(line)).strip()
        if text:
            steps.append(text)
            where.append(li)
    return steps, where


def synthetic_rows(row: dict[str, Any], row_id: str, seed: int, keep_clean: bool = False) -> list[dict[str, Any]]:
    """The changed chain for one GSM8K row (and its unchanged chain with ``keep_clean``); [] if none passes."""
    question = (problem_of(row) or "").strip()
    parsed = parse_solution(str(row.get("answer") or ""))
    if not question or parsed is None:
        return []
    lines, final = parsed
    steps, where = _steps(lines)
    if not steps:
        return []
    rng = random.Random(f"{seed}:{row_id}")
    base = {"problem": question, "model": "gsm8k-reference", "label_source": SOURCE}
    out = []
    if keep_clean:
        n = len(steps)
        out.append({
            **base, "id": f"{row_id}-clean", "steps": steps, "answer": final,
            "labels": [0] * n, "label_confidence": [1.0] * n, "label_notes": [""] * n,
            "synthetic": {"kind": "none"},
        })
    feasible = []
    for k, li in enumerate(where):
        if lines[li].calcs:
            found = _first_change(question, lines, final, steps, k, li, rng)
            if found is not None:
                feasible.append((k, *found))
    if not feasible:
        logger.debug("No exact change found for %s", row_id)
        return out
    k, change, new_steps, new_final, note = rng.choice(feasible)  # uniform over the steps a change passes at
    n = len(steps)
    labels = first_error_labels(k, n)
    changed = {
        **base, "id": row_id, "steps": new_steps, "answer": new_final, "labels": labels,
        "label_confidence": [1.0] * (k + 1) + [0.0] * (n - k - 1),
        "label_notes": [note if i == k else "" for i in range(n)],
        "synthetic": {"step": k, "kind": change.kind, "answer_was": final, "seed": seed},
    }
    return [changed, *out]


def _first_change(
    question: str, lines: list[Line], final: str, steps: list[str], k: int, li: int, rng: random.Random
) -> tuple[Change, list[str], str, str] | None:
    """The first of up to ``TRIES`` random changes at step k (line li) that passes every check."""
    for _ in range(TRIES):
        change = draw_change(lines, li, rng)
        if change is None:
            continue
        try:
            new_lines, new_final, note = apply_change(question, lines, final, change)
        except Reject:
            continue
        new_steps, _ = _steps(new_lines)
        if len(new_steps) == len(steps) and new_steps[:k] == steps[:k] and _consistent(steps, new_steps, k, change):
            return change, new_steps, new_final, note
    return None


def _consistent(steps: list[str], new_steps: list[str], k: int, change: Change) -> bool:
    """No step from the changed one on gains a broken equation (the changed one may, for a result slip)."""
    for i in range(k, len(steps)):
        if i == k and change.kind == "result":
            continue
        if len(arithmetic_errors(new_steps[i])) > len(arithmetic_errors(steps[i])):
            return False
    return True


SPLITS = {"train": ("gsm8k/train.jsonl", 3200), "test": ("gsm8k/test.jsonl", 0)}


def build(rows: list[dict[str, Any]], split: str, offset: int, seed: int, keep_clean: bool) -> list[dict[str, Any]]:
    """Synthetic rows for GSM8K ``rows`` (numbered from ``offset``); ids ``synth-<split>-<row number>``."""
    out: list[dict[str, Any]] = []
    skipped = 0
    for i, row in enumerate(rows, start=offset):
        got = synthetic_rows(row, f"synth-{split}-{i}", seed, keep_clean)
        skipped += not any(r["synthetic"]["kind"] != "none" for r in got)
        out += got
    logger.info("%d of %d questions got an exact change (%d had none that passed)", len(rows) - skipped, len(rows),
                skipped)
    return out
