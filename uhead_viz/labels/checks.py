"""Self-supervised step labels from the answer and the arithmetic written in each step.

No model is needed: a step that writes ``12 * 3 = 34`` is wrong whoever reads it, and a
chain whose final answer matches the gold answer is evidence (weaker) that its steps are
fine. The rules, in order:

1. **Arithmetic.** Every ``a op b = c`` (also chains ``a op b op c = d = ...``) in a step's
   text is found by a regex and both sides are evaluated by ``safe_eval`` (Python's ``ast``,
   numeric literals and ``+ - * /``, unary minus and parentheses only; the text is never
   passed to ``eval``). Numbers may carry ``$`` / ``%`` signs and thousands commas
   (``1,000``); ``x``, ``×``, ``·``, ``\\times``, ``\\cdot`` multiply, ``÷`` and ``\\div``
   divide, and simple ``\\frac{a}{b}`` divides. A written result that differs from its
   evaluated side (relative tolerance ``REL_TOL``) marks the step wrong, unless the writer
   rounded or truncated to the places shown (``10/3 = 3.33``, ``2/3 = 0.66``; to a whole
   number rounding up counts too: ``10/3 = 4 buses``), which is only an excuse when the
   exact value needs more places than shown (``5.5 + 2 = 7.4`` is wrong). A ``%`` is read
   both as ``/100`` and as a plain number, and either reading that balances the equation is
   accepted (``5/20*100 = 25%`` and ``50% * 20 = 10``).
   A unit word after the result rescales it (``$2.50 - $2.24 = 26 cents``), and ``a / b/c``
   may mean ``a / (b/c)``. An equation is only checked when it is complete on both sides:
   one that starts right after a variable, an operator or a power (``2x + 3 = 7``,
   ``2^3 + 1 = 9``) or runs into one (``= 8x``, ``= 2\\pi``) is skipped, and so is a bare
   number left of an expression (``10% of 150 = 75 + 15``: the tail of a phrase) and
   anything with zero-led numbers (``0900 - 0130 = 0730``: clock times). The arithmetic
   label is thus precise (``CONF_ARITH_ERROR``) rather than complete: on GSM8K's train
   solutions 22 of 24,320 equations are flagged, nearly all real slips in the data
   (``2*8 = 24``, ``70 + 40 = 100``); on PRM800K's phase-1 test steps 20 of 228, 18 of them
   in steps the raters marked wrong (the other two are real slips rated good).
2. **Final answer vs gold** (``reference``: a GSM8K answer ending ``#### N``, or a plain
   answer). A numeric reference is compared as a number with the chain's answer (the whole
   answer if it is a number, else what follows its last ``=``, else its last number;
   commas and ``$`` removed); a non-numeric one (``\\sqrt{53}``) as a normalized string.
   - Answer correct: steps with an arithmetic error get 1 (``CONF_ARITH_ERROR``), all others
     0 with ``CONF_CORRECT_ANSWER`` only (a correct answer can follow a flawed step).
   - Answer wrong or missing, some arithmetic error: steps before the first error are
     unknown (None), the first error is 1, later steps None (the ProcessBench convention:
     after the first error, steps are unlabelled).
   - Answer wrong or missing, no arithmetic error: all steps None, except a weak guess: the
     last step gets 1 with ``CONF_LAST_STEP_GUESS`` when its result (the written result of
     its last checked equation, else its last number) equals the wrong final answer. The
     last step then produced the wrong number, but the mistake may be an earlier step's
     carried through, hence the coin-flip confidence.
   - No reference: the answer cannot be judged; only the arithmetic labels the chain, as in
     the wrong-answer case without the last-step guess.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass

from ..steps import Chain, step_body
from .base import Labeler, StepLabels, register

CONF_ARITH_ERROR = 0.95  # a written result that does not evaluate: almost surely a wrong step
CONF_CORRECT_ANSWER = 0.7  # a step on the way to the right answer: usually fine, not always
CONF_LAST_STEP_GUESS = 0.5  # the last step wrote the wrong final answer: weak evidence it is the culprit
REL_TOL = 1e-4
MAX_EXPR_CHARS = 300  # longer "expressions" are prose, not arithmetic; also bounds parser work

_NUM_BODY = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
_NUM = rf"(?:\\?\$[ \t]*)?{_NUM_BODY}(?:[ \t]*\\?%)?"
# ``x``/``X`` multiply only between numbers (``3 x 4``, ``2x3``), never as a variable (``2x + 3``)
_OP = r"(?:\\times|\\cdot|\\div|[-+*/×÷·⋅−–=]|(?<=[\d \t)%])[xX](?=[ \t]*(?:\\?\$)?[ \t]*[\d(.]))"
_TOKEN = rf"(?:{_NUM}|{_OP}|\\left\(|\\right\)|[()])"
RUN_RE = re.compile(rf"{_TOKEN}(?:[ \t]*{_TOKEN})*")
NUM_RE = re.compile(rf"-?{_NUM_BODY}")
BARE_RE = re.compile(rf"^[-−–]?[ \t]*(?:\\?\$[ \t]*)?({_NUM_BODY})[ \t]*(\\?%)?$")
FRAC_RE = re.compile(r"\\[dt]?frac\s*\{([\d\s.,+\-*/()]+)\}\s*\{([\d\s.,+\-*/()]+)\}")
_ALLOWED = re.compile(r"[\d.+\-*/() ]*")
_PERCENT_RE = re.compile(r"(\d+\.?\d*|\.\d+)\s*%")
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_LEADING_ZEROS = re.compile(r"(?<![\d.])0+(?=\d)")
_SYMBOLS = str.maketrans({"×": "*", "·": "*", "⋅": "*", "x": "*", "X": "*", "÷": "/", "−": "-", "–": "-", "$": ""})
_BLOCK_BEFORE = set("._^\\}])!'√∛|")  # right before an equation: it continues something else
_BLOCK_AFTER = set("_^\\{([!'²³|")  # right after it: the result is not the whole right side
_BINARY_START = ("+", "*", "/", "×", "÷", "·", "⋅", "x", "X", "\\times", "\\cdot", "\\div", ")", "\\right")


def _normalize(text: str, percent: bool) -> str:
    """Arithmetic text to a plain Python expression over ``+ - * /`` (may still be invalid)."""
    s = text.replace("\\left", "").replace("\\right", "")
    s = FRAC_RE.sub(r"((\1)/(\2))", s)
    for a, b in (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("\\$", ""), ("\\%", "%")):
        s = s.replace(a, b)
    s = s.translate(_SYMBOLS)
    s = _DIGIT_COMMA.sub("", s)
    s = _PERCENT_RE.sub(r"(\1/100)" if percent else r"\1", s)
    s = _LEADING_ZEROS.sub("", s)  # ``007`` is a SyntaxError in Python 3
    return s.replace("\t", " ")


def _eval_node(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        v = float(node.value)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval_node(node.operand)
        v = -v if isinstance(node.op, ast.USub) else v
    elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        a, b = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Add):
            v = a + b
        elif isinstance(node.op, ast.Sub):
            v = a - b
        elif isinstance(node.op, ast.Mult):
            v = a * b
        else:
            v = a / b  # ZeroDivisionError is caught by the caller
    else:
        raise ValueError(f"not plain arithmetic: {type(node).__name__}")
    if not math.isfinite(v):
        raise ValueError("not finite")
    return v


def safe_eval(text: str, percent: bool = True) -> float | None:
    """The value of an arithmetic expression written in text, or None if it is not one.

    Only numeric literals, ``+ - * /``, unary signs and parentheses are evaluated, from the
    parsed ``ast`` (powers, names, calls, attribute access etc. are refused), so any text is
    safe to pass. ``percent`` reads ``20%`` as 0.2 (else as 20). Never raises; never returns
    a non-finite number.
    """
    try:
        if not isinstance(text, str) or len(text) > MAX_EXPR_CHARS:
            return None
        s = _normalize(text, percent).strip()
        if not s or not _ALLOWED.fullmatch(s) or not re.search(r"\d", s):
            return None
        return _eval_node(ast.parse(s, mode="eval"))
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError, RecursionError, MemoryError):
        return None


@dataclass
class Equation:
    """One checked equality as written: the computed side's value, the written result, the verdict."""

    text: str
    value: float  # the expression side, evaluated
    written: float  # the side the writer stated as the result (the bare number, else the right side)
    ok: bool

    def __str__(self) -> str:
        return self.text if self.ok else f"{self.text} (but it is {self.value:.6g})"


def _decimals(num: str) -> int:
    return len(num.split(".")[1]) if "." in num else 0


def _accept(value: float, written: float, places: int | None) -> bool:
    """Does ``written`` state ``value``? ``places``: decimals shown when ``written`` is a bare number."""
    if math.isclose(value, written, rel_tol=REL_TOL, abs_tol=1e-9):
        return True
    if places is None:
        return False
    unit = 10.0**-places
    tiny = unit * 1e-6
    # rounding or truncation is only an excuse when the exact value needs more places than shown
    if math.isclose(value, round(value, places), rel_tol=REL_TOL, abs_tol=tiny):
        return False
    if abs(value - written) <= unit / 2 + tiny:  # rounded to the places shown
        return True
    scaled = value / unit
    cut = {math.trunc(scaled)} if places else {math.floor(scaled), math.ceil(scaled)}  # 10/3 = 3 or 4 boxes
    return any(abs(written - c * unit) <= tiny for c in cut)


def _strip_parens(side: str) -> str:
    s = side.strip()
    while s.startswith("(") and s.count("(") > s.count(")"):
        s = s[1:].strip()
    while s.endswith(")") and s.count(")") > s.count("("):
        s = s[:-1].strip()
    return s


def _left_open(text: str, start: int, side0: str) -> bool:
    """Is the first side cut off on the left (it continues a variable, power, operator...)?"""
    s = side0.strip()
    if not s or s.startswith(_BINARY_START) or s.count(")") > s.count("("):  # ``(1 and 1/3) = 28``
        return True
    before = text[:start]
    prev_any = before[-1:] if before else ""
    prev = before.rstrip()[-1:]
    if s.startswith(("-", "−", "–")):
        return bool(prev) and (prev.isalnum() or prev in _BLOCK_BEFORE)
    if prev_any.isalnum() or prev_any in _BLOCK_BEFORE:
        return True
    if prev_any in ",:" and before[-2:-1].isdigit():  # ``3,5 + 1``, ``1:2 + 1``
        return True
    return bool(prev) and prev in "+-*/^×÷·⋅−–"


def _right_open(text: str, end: int, last: str) -> bool:
    """Is the last side cut off on the right (``= 8x``, ``= 2\\pi``, ``= 5 +`` something)?"""
    s = last.strip()
    if not s or not (s[-1].isdigit() or s[-1] in ")%") or s.count("(") > s.count(")"):
        return True
    nxt = text[end : end + 1]
    if nxt.isalnum() or nxt in _BLOCK_AFTER:
        return not text.startswith(("\\)", "\\]", "\\,", "\\;", "\\quad", "\\text", "\\$"), end)
    return nxt in ",:" and text[end + 1 : end + 2].isdigit()


# a word right after a result that rescales it: ``$2.50 - $2.24 = 26 cents``, ``5 * 3 = 15 thousand``
UNIT_SCALE = {"cents": 0.01, "cent": 0.01, "thousand": 1e3, "million": 1e6, "billion": 1e9}
_NEXT_WORD = re.compile(r"[ \t]*([A-Za-z]+)")
_DIV_FRACTION = re.compile(rf"/[ \t]*({_NUM_BODY})[ \t]*/[ \t]*({_NUM_BODY})")
_ZERO_LED = re.compile(r"(?<![\d.,])0\d")


def find_equations(text: str) -> list[Equation]:
    """Every complete arithmetic equality in ``text`` with both sides evaluated.

    Adjacent sides of a chain ``a = b = c`` are compared pairwise; a pair is checked when at
    least one side has an operator (two bare numbers state nothing to verify), and not when a
    bare number stands left of an expression: that number is nearly always the tail of a
    phrase (``10% of 150 = 75 + 15``, ``Week 2 = 35 + 35``, ``P(X=4) = 8/25``).
    """
    if not text:
        return []
    text = FRAC_RE.sub(r"((\1)/(\2))", text)
    out: list[Equation] = []
    for m in RUN_RE.finditer(text):
        run = m.group(0)
        if "=" not in run or _ZERO_LED.search(run):  # ``0900 - 0130 = 0730``: clock times, codes
            continue
        sides = run.split("=")
        if _left_open(text, m.start(), sides[0]):
            sides[0] = ""
        if _right_open(text, m.end(), sides[-1]):
            sides[-1] = ""
        word = _NEXT_WORD.match(text, m.end())
        unit = word.group(1).lower() if word else ""
        if unit == "percent" and sides[-1]:
            sides[-1] += "%"
        parts = [_strip_parens(x) for x in sides]
        for i, (a, b) in enumerate(zip(parts, parts[1:])):
            scale = UNIT_SCALE.get(unit, 1.0) if i == len(parts) - 2 else 1.0
            eq = _check_pair(a, b, scale)
            if eq is not None:
                out.append(eq)
    return out


def _readings(expr: str) -> list[str]:
    """``a / b/c`` is often meant as ``a / (b/c)`` (``25 / 1/3 = 75``): both are tried."""
    alt = _DIV_FRACTION.sub(r"/ (\1/\2)", expr)
    return [expr, alt] if alt != expr else [expr]


def _check_pair(a: str, b: str, scale: float = 1.0) -> Equation | None:
    """Check ``a = b`` (``scale``: a unit word after ``b``); None when there is nothing to check."""
    if not a or not b:
        return None
    bare_a, bare_b = BARE_RE.match(a), BARE_RE.match(b)
    if bare_a:  # two bare numbers state nothing; a bare number left of an expression ends a phrase
        return None
    found = None
    for percent in (True, False) if "%" in a + b else (True,):
        r = safe_eval(b, percent)
        places = None
        if bare_b:
            places = _decimals(bare_b.group(1)) + (2 if percent and bare_b.group(2) else 0)
        for expr in _readings(a):
            v = safe_eval(expr, percent)
            if v is None or r is None:
                continue
            ok = _accept(v, r, places) or (scale != 1.0 and _accept(v, r * scale, None))
            if ok or found is None:
                found = Equation(f"{a} = {b}", v, r, ok)
            if ok:
                return found
    return found


def arithmetic_errors(text: str) -> list[Equation]:
    """The equations in ``text`` whose written result is wrong."""
    return [e for e in find_equations(text) if not e.ok]


def _clean_answer(text: str) -> str:
    s = text.strip()
    m = re.fullmatch(r"\\boxed\{(.*)\}", s, flags=re.S)
    if m:
        s = m.group(1)
    s = re.sub(r"\\text\{\s*[^{}]*\}", "", s)  # units: ``10\text{ inches}``
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\!", "").replace("\\,", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return s.strip().rstrip(".").strip()


def answer_value(text: str | None, whole_only: bool = False) -> float | None:
    """The value of an answer string, evaluated: the whole string if it is a number or an
    expression (LaTeX fractions included), else (unless ``whole_only``) what follows its last
    ``=``, else its last number; commas and ``$`` removed. ``llm.last_number`` only takes the
    last number literal."""
    if text is None:
        return None
    s = _clean_answer(str(text))
    v = safe_eval(s, percent=False)
    if v is not None or whole_only:
        return v
    if "=" in s:
        v = safe_eval(_clean_answer(s.rsplit("=", 1)[1]), percent=False)
        if v is not None:
            return v
    nums = NUM_RE.findall(s.replace("−", "-"))
    return safe_eval(nums[-1], percent=False) if nums else None


def reference_answer(reference: str | None) -> str | None:
    """The gold answer text: after the last ``####`` of a GSM8K solution, else the whole string."""
    if reference is None:
        return None
    s = str(reference)
    if "####" in s:
        s = s.rsplit("####", 1)[1]
    s = s.strip()
    return s or None


def _norm_text(s: str) -> str:
    s = _clean_answer(s).replace("\\left", "").replace("\\right", "").replace("$", "")
    return re.sub(r"\s+", "", s).lower()


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-9)


_LIST_SEP = re.compile(r"\s*(?:;|,(?!\d{3}(?!\d))|\\text\{\s*(?:and|or)\s*\}|\b(?:and|or)\b)\s*")
_VAR_PREFIX = re.compile(r"^[A-Za-z]\w*\s*=\s*")


def stated_values(text: str) -> list[float]:
    """Every number an answer states as a value of its own: each side of ``x = 3``, ``3 and 5``,
    ``\\frac{1}{2}``, ``$18``; a number that is part of a larger expression (``2\\sqrt{3}``,
    ``x^2``, ``3x``) is not one."""
    s = FRAC_RE.sub(r"((\1)/(\2))", _clean_answer(text))
    out: list[float] = []
    for m in RUN_RE.finditer(s):
        sides = m.group(0).split("=")
        before, after = s[: m.start()][-1:], s[m.end() : m.end() + 1]
        if before and (before.isalnum() or before in "^_{\\"):
            sides[0] = ""  # ``x^2 = 4``: the 2 is an exponent, the 4 a value
        if after and (after.isalnum() or after in "^_{\\"):
            sides[-1] = ""  # ``= 2\\sqrt{3}``, ``= 3x``
        for side in sides:
            v = safe_eval(_strip_parens(side), percent=False) if side.strip() else None
            if v is not None:
                out.append(v)
    return out


def gold_values(gold: str) -> list[float] | None:
    """The numbers of a list-valued gold answer (``2, 3``, ``(3,5)``, ``x=1 or x=-2``), or None."""
    s = _strip_parens(FRAC_RE.sub(r"((\1)/(\2))", _clean_answer(gold)))
    parts = [p for p in _LIST_SEP.split(s) if p.strip()]
    if len(parts) < 2:
        return None
    vals = [safe_eval(_strip_parens(_VAR_PREFIX.sub("", p)), percent=False) for p in parts]
    return None if any(v is None for v in vals) else [v for v in vals if v is not None]


def answer_correct(answer: str | None, reference: str | None) -> bool | None:
    """Does the chain's answer match the gold? None without a reference; False when it is missing.

    A numeric gold matches when the answer's number (see ``answer_value``) or any number it
    states as a value of its own (``stated_values``: "18 dollars a day, 126 a week") equals it;
    a list-valued gold (two-part answers: ``2, 3``) when the answer states the same numbers in any
    order; any other gold as normalized text.
    """
    gold = reference_answer(reference)
    if gold is None:
        return None
    if answer is None or not str(answer).strip():
        return False
    g = answer_value(gold, whole_only=True)
    if g is not None:
        a = answer_value(str(answer))
        return (a is not None and _close(a, g)) or any(_close(v, g) for v in stated_values(str(answer)))
    parts = gold_values(gold)
    if parts is not None:
        said = sorted(stated_values(str(answer)))
        return len(said) == len(parts) and all(_close(a, b) for a, b in zip(said, sorted(parts)))
    return _norm_text(str(answer)) == _norm_text(gold)


def step_result(text: str) -> float | None:
    """What a step concluded: the written result of its last checked equation, else its last number."""
    eqs = find_equations(text)
    if eqs:
        return eqs[-1].written
    return answer_value(text)


@register
class ChecksLabeler(Labeler):
    """Answer and arithmetic checks (rules in the module docstring)."""

    name = "checks"

    def label(self, chain: Chain, reference: str | None) -> StepLabels:
        n = len(chain.steps)
        bodies = [step_body(s) for s in chain.steps]
        errors = [arithmetic_errors(b) for b in bodies]
        notes = ["; ".join(f"wrong arithmetic: {e}" for e in errs) for errs in errors]
        labels: list[int | None] = [None] * n
        conf = [0.0] * n
        first = next((i for i, errs in enumerate(errors) if errs), None)
        correct = answer_correct(chain.answer, reference)
        if correct:
            for i in range(n):
                labels[i], conf[i] = (1, CONF_ARITH_ERROR) if errors[i] else (0, CONF_CORRECT_ANSWER)
        elif first is not None:
            labels[first], conf[first] = 1, CONF_ARITH_ERROR
        elif correct is False and n:
            final = answer_value(chain.answer) if chain.answer is not None else None
            last = step_result(bodies[-1])
            if final is not None and last is not None and math.isclose(final, last, rel_tol=REL_TOL, abs_tol=1e-9):
                labels[-1], conf[-1] = 1, CONF_LAST_STEP_GUESS
                notes[-1] = f"the last step gives the wrong final answer {chain.answer!r}"
        return StepLabels(labels=labels, confidence=conf, source=self.name, notes=notes)
