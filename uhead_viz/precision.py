"""Which numeric precision the model runs in on this machine: the rule, in one place.

The head reads attention weights and probabilities, so the precision changes both the
speed and the numbers the head sees. The rule follows what each kind of CPU has:

===========================================  ==========  =====================================
machine                                      precision   why
===========================================  ==========  =====================================
CUDA GPU                                     ``bf16``    tensor cores; what the head was trained on
x86 with AMX or AVX512-BF16                  ``w8``      bf16 matrix units do the arithmetic; int8
                                                         weights halve the bytes each token reads
x86 with AVX2 (no bf16 units)                ``int8``    bf16 is emulated there and runs ~10x slower
                                                         than the int8 kernels
ARM with the BF16 extension                  ``bf16``    native bf16 dot products
anything else                                ``fp32``    the only precision with fast kernels everywhere
===========================================  ==========  =====================================

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
    if x86 and ({"amx_bf16", "avx512_bf16"} & set(flags)):
        unit = "AMX" if "amx_bf16" in flags else "AVX512-BF16"
        return Choice("w8", f"x86 CPU with {unit}: bf16 arithmetic with int8 weights")
    if x86 and "avx2" in flags:
        return Choice("int8", "x86 CPU with AVX2 and no bf16 matrix units: int8 kernels")
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
