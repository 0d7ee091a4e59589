"""The precision rule: one choice per kind of machine, and the override."""

from __future__ import annotations

import pytest

from uhead_viz import precision as pr

AMX = {"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}
AVX512_BF16 = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
AVX512_ONLY = {"avx2", "avx512f", "avx512_vnni"}
AVX2 = {"sse4_2", "avx", "avx2", "fma"}


@pytest.mark.parametrize(
    ("flags", "machine", "cuda", "want"),
    [
        (AVX2, "x86_64", True, "bf16"),
        (AMX, "x86_64", False, "int8"),
        (AVX512_BF16, "x86_64", False, "int8"),
        (AVX512_ONLY, "x86_64", False, "int8"),
        (AVX2, "x86_64", False, "int8"),
        ({"sse4_2"}, "x86_64", False, "fp32"),
        ({"fp", "asimd", "bf16", "sve"}, "aarch64", False, "bf16"),
        ({"fp", "asimd"}, "aarch64", False, "fp32"),
        ({"bf16"}, "arm64", False, "bf16"),
        (set(), "", False, "fp32"),
    ],
)
def test_rule_per_machine(flags, machine, cuda, want):
    got = pr.choose(frozenset(flags), machine, cuda)
    assert got.precision == want
    assert got.reason


def test_override_wins_and_is_validated(monkeypatch):
    monkeypatch.setenv(pr.ENV, "FP32")
    assert pr.default_choice() == pr.Choice("fp32", f"set by {pr.ENV}")
    monkeypatch.setenv(pr.ENV, "int4")
    with pytest.raises(ValueError, match="int8, w8, bf16"):
        pr.default_choice()


def test_bad_override_is_a_clear_load_error(monkeypatch):
    from uhead_viz.errors import PackError
    from uhead_viz.llm import load_llm

    monkeypatch.setenv(pr.ENV, "half")
    with pytest.raises(PackError, match="not a precision"):
        load_llm("qwen-coder-1.5b")


def test_this_machine_has_flags_and_a_choice(monkeypatch):
    monkeypatch.delenv(pr.ENV, raising=False)
    choice = pr.default_choice()
    assert choice.precision in pr.PRECISIONS
    import platform

    if platform.system() == "Linux" and platform.machine() == "x86_64":
        assert "sse2" in pr.cpu_flags()  # every x86_64 CPU has it: proves the flags were read


def test_runnable_leaves_int8_to_x86():
    assert pr.runnable(frozenset(), "x86_64") == list(pr.PRECISIONS)
    assert "int8" not in pr.runnable(frozenset({"bf16"}), "aarch64")
