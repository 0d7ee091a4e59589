"""Shareable links: which query opens which chain (no model, no browser)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from uhead_viz.ui import share
from uhead_viz.ui.examples import EXAMPLES

BASE = "http://127.0.0.1:7860/"


def test_an_example_chain_links_to_its_stored_example():
    a = {"question": "  " + EXAMPLES[1]["question"].replace(" ", "  "), "steps": [{}]}
    assert share.link_for(a, BASE) == f"{BASE}?example={EXAMPLES[1]['id']}"
    q, how, msg = share.read_query({"example": EXAMPLES[1]["id"]})
    assert (q, how, msg) == (EXAMPLES[1]["question"], "example", "")


def test_any_other_question_round_trips_through_q():
    question = "What is 17 * 23? Use & and = and ü, then say #1."
    link = share.link_for({"question": question, "steps": [{}]}, BASE)
    assert link.startswith(f"{BASE}?q=") and " " not in link and "&" not in link.split("?q=")[1]
    params = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert share.read_query(params) == (question, "q", "")


def test_nothing_to_link_and_bad_queries():
    assert share.link_for(None, BASE) == ""
    assert share.link_for({"question": "q", "steps": []}, BASE) == ""  # an error or an empty chain
    assert share.read_query({}) == (None, "", "")
    assert share.read_query({"q": "   "}) == (None, "", "")
    q, how, msg = share.read_query({"example": "no-such"})
    assert q is None and how == "" and "no-such" in msg and EXAMPLES[0]["id"] in msg
    q, how, msg = share.read_query({"example": "<b>x</b>"})
    assert "<b>" not in msg  # the name is shown as text
