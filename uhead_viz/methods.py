"""Scoring methods' names as people read them (``minprob`` -> "Min token prob").

The pipeline names a method in what it returns (the verifier's label in an analysis),
and the page, the plots and the exports show the same names, so the table lives below
both: the pipeline must not import the UI to find a name.
"""

from __future__ import annotations

METHOD_LABELS = {
    "uhead": "UHead",
    "minprob": "Min token prob",
    "maxprob": "Mean token prob",
    "perplexity": "Perplexity",
    "mean_entropy": "Mean entropy",
    "max_entropy": "Max entropy",
    "seqprob": "Step probability",
    "judge": "LLM judge",
    "verifier": "Verifier",
    "combined": "Combined",
}


def method_label(name: str) -> str:
    """A method's name as the page shows it."""
    if name.startswith("prm:"):
        return f"PRM ({name.split(':')[-1].split('/')[-1]})"
    return METHOD_LABELS.get(name, name)
