"""What the colours mean, in words: which scores are probabilities, and the "How to read this" panel.

Only the uncertainty head is trained on labelled steps to output a probability (binary
cross-entropy, with a decision threshold chosen on validation data and stored in its
checkpoint's config). The baselines are fixed monotone maps of token statistics into
[0, 1]: they order steps as well as their statistic does, but the number itself is not a
calibrated probability and has no validated cut-off. The page's wording keeps that line:
a probability is called one only when it is one, and only a calibrated method gets a
threshold mark and flags.

This module holds words only (no colours, no page structure), so the legend in
``render`` and the exported page say the same thing.
"""

from __future__ import annotations

import html

# methods whose score is trained to be P(step is wrong)
CALIBRATED = frozenset({"uhead"})


def is_probability(method: str | None) -> bool:
    """True when ``method``'s score is a trained probability that the step is wrong."""
    return (method or "") in CALIBRATED


def step_title(label: str, calibrated: bool) -> str:
    """The legend's title line for the step colouring (plain text; the caller escapes it)."""
    if calibrated:
        return f"Step colour: probability that the step is wrong, by {label}"
    return f"Step colour: relative score by {label} (ranks steps; not a calibrated probability)"


def step_ends(calibrated: bool) -> tuple[str, str]:
    """The words under the two ends of the step colour bar."""
    return ("confident", "likely wrong") if calibrated else ("more certain", "less certain")


def score_noun(method: str, label: str) -> str:
    """How a score is named in a tooltip or a badge title: ``P(wrong) by X`` or ``score by X``."""
    return f"P(wrong) by {label}" if is_probability(method) else f"relative score by {label} (not a probability)"


def _p(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def howto_html(method: str, label: str, threshold: float | None) -> str:
    """A collapsed "How to read this" panel: what the colour means and how far to trust the number."""
    if is_probability(method):
        thr = f"{float(threshold):.2f}" if threshold is not None else "its stored value"
        colour = _p(
            f"Each step's colour and number are {label}'s estimate of the probability that the step is wrong: "
            "blue is confident, pale yellow uncertain, red likely wrong. The head was trained on labelled steps, "
            "so the number can be read as a probability."
        ) + _p(
            f"The mark on the bar is the head's threshold, {thr}, chosen on validation data and stored with the "
            "head's checkpoint. Steps at or above it are flagged ⚑."
        )
    else:
        colour = _p(
            f"No trained head fits this model, so steps are coloured by {label}, an unsupervised baseline: a fixed "
            "transform of the step's token probabilities into 0-1, where higher means the model was less certain."
        ) + _p(
            "Read it as a ranking: a redder step is less certain than a bluer one. The number is not a calibrated "
            "probability and the baseline has no validated threshold, so no step is flagged and there is no mark "
            "on the bar."
        )
    rest = _p(
        "Hover a step for every method's score. The baselines among them (Min token prob, Mean token prob, "
        "Perplexity, the entropies, Step probability) are relative scores of the same kind: they rank steps, "
        "they are not probabilities. A verifier's score and the combined score 1 − (1 − head)(1 − verifier) "
        "appear once a verifier has run."
    ) + _p(
        "Colour by Token probability: each token is coloured by 1 − the probability the model gave it "
        "(red = surprising). Colour by Token attention: each token by its look-back attention, scaled within "
        "the chain (palest = the chain's lowest token, darkest = its highest), so those colours do not compare "
        "across chains."
    )
    return (
        '<details class="uv-howto"><summary>How to read this</summary>'
        f'<div class="uv-howto-body">{colour}{rest}</div></details>'
    )
