"""Which numeric precision the model runs in on this machine: the rule, in one place.

The head reads attention weights and probabilities, so the precision changes both the
speed and the numbers the head sees. What matters most in the app is single-stream
decoding, which on a CPU is bound by the bytes each token reads; int8 weights read half
of bf16's. The rule, from measurements on the CPUs in ``docs/benchmarks.md``:

===========================================  ==========  =======================================
machine                                      precision   why
===========================================  ==========  =======================================
CUDA GPU                                     ``bf16``    tensor cores; what the head was trained on
x86 with AVX2 (AVX-512, AVX512-BF16 and AMX  ``int8``    fastest decoding on every x86 CPU measured:
included)                                                2-3x bf16's tokens/s even where bf16
                                                         matrix units exist; KL to fp32 0.009
ARM with the BF16 extension                  ``bf16``    native bf16 dot products; the int8
                                                         kernels are x86 (fbgemm) only
anything else                                ``fp32``    the only precision with fast kernels everywhere
===========================================  ==========  =======================================

bf16 captures long chains faster than int8 where the CPU has bf16 units, so dataset-scale
``features``/``evaluate`` runs there may set ``UHEAD_VIZ_PRECISION=bf16``; ``w8`` (int8
weights, bf16 arithmetic) is there for measuring, not chosen by the rule (its single-token
kernel was the slowest on the CPUs measured).
``UHEAD_VIZ_PRECISION`` (``int8``, ``w8``, ``bf16`` or ``fp32``) overrides the rule.
``benchmarks/bench_llm.py`` measures every precision a machine can run; the figures behind
the rule, with the CPUs they came from, are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import logging
import platform
import subprocess
from dataclasses import dataclass
from functools import lru_cache

from . import settings
from .settings import PRECISIONS

logger = logging.getLogger(__name__)

ENV = "UHEAD_VIZ_PRECISION"
# the CPU flags the rule reads (Linux /proc/cpuinfo names); printed by the benchmark too
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "bf16", "sve")


@dataclass(frozen=True)
class Choice:
    """A precision and the reason it was chosen, for logs and the benchmark's output."""

    precision: str
    reason: str


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags: x86 ``flags`` or ARM ``Features`` from /proc/cpuinfo, or macOS sysctl."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    if platform.system() == "Darwin":  # Apple silicon reports its extensions through sysctl
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            return frozenset({"bf16"} if out == "1" else ())
        except (OSError, subprocess.SubprocessError):
            return frozenset()
    return frozenset()


def choose(flags: frozenset[str] | set[str], machine: str, cuda: bool) -> Choice:
    """The rule of the module docstring, as a pure function of what the machine has."""
    if cuda:
        return Choice("bf16", "a CUDA GPU is present")
    x86 = machine.lower() in ("x86_64", "amd64", "i686", "i386")
    if x86 and "avx2" in flags:
        names = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512"))
        units = [unit for flag, unit in names if flag in flags]
        extra = f" ({units[0]} too; int8 still decodes fastest there)" if units else ""
        return Choice("int8", f"x86 CPU with AVX2{extra}: int8 kernels")
    if not x86 and "bf16" in flags:
        return Choice("bf16", f"{machine} CPU with the BF16 extension")
    return Choice("fp32", f"{machine or 'unknown'} CPU without fast int8 or bf16 kernels")


def default_choice() -> Choice:
    """``UHEAD_VIZ_PRECISION`` when set (validated), else the rule for this machine."""
    env = settings.precision()  # validated there
    if env:
        return Choice(env, f"set by {ENV}")
    import torch

    return choose(cpu_flags(), platform.machine(), torch.cuda.is_available())


def default_precision() -> str:
    """The precision to load the model in when the caller names none."""
    choice = default_choice()
    logger.info("precision %s (%s)", choice.precision, choice.reason)
    return choice.precision


def runnable(flags: frozenset[str] | set[str], machine: str) -> list[str]:
    """The precisions this CPU has kernels for, for the benchmark: int8 needs x86 (fbgemm)."""
    x86 = machine.lower() in ("x86_64", "amd64")
    return [p for p in PRECISIONS if x86 or p not in ("int8",)]
