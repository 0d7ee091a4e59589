"""ZeroGPU glue: a no-op without a GPU Space, and InputError kept intact across the worker boundary."""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import pytest

from uhead_viz import zerogpu
from uhead_viz.errors import InputError


def test_without_spaces_or_gpu_the_decorator_is_the_function_itself():
    if zerogpu.enabled():
        pytest.skip("this machine is a GPU Space")

    def work(x: int) -> int:
        return x + 1

    assert zerogpu.gpu(work) is work
    assert zerogpu.model_work(work)(1) == 2


def boundary(fn):
    """What ``spaces.GPU`` does to a call on ZeroGPU: arguments and results are pickled across a
    process boundary, and an exception arrives as another type carrying only its text."""

    class WorkerError(Exception):
        pass

    def call(*args, **kw):
        args, kw = pickle.loads(pickle.dumps((args, kw)))
        try:
            out = fn(*args, **kw)
            if hasattr(out, "__next__"):
                return (pickle.loads(pickle.dumps(x)) for x in out)
            return pickle.loads(pickle.dumps(out))
        except Exception as e:
            raise WorkerError(str(e)) from None

    return call


@pytest.fixture
def across_processes(monkeypatch):
    monkeypatch.setattr(zerogpu, "gpu", boundary)


def test_input_error_of_a_function_arrives_as_input_error(across_processes):
    @zerogpu.model_work
    def refuse(q: str) -> dict:
        raise InputError(f"Refused: {q}")

    with pytest.raises(InputError, match="Refused: why"):
        refuse("why")


def test_generator_yields_then_its_input_error_arrives_as_input_error(across_processes):
    @zerogpu.model_work
    def events(n: int) -> Iterator[dict]:
        for i in range(n):
            yield {"i": i}
        raise InputError("the verifier cannot run")

    got = []
    with pytest.raises(InputError, match="verifier cannot run"):
        for ev in events(3):
            got.append(ev["i"])
    assert got == [0, 1, 2]


def test_closing_the_outer_generator_closes_the_model_work():
    closed = []

    @zerogpu.model_work
    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    gen = endless()
    assert next(gen) == 0 and next(gen) == 1
    gen.close()
    assert closed == [True]


def test_other_errors_are_not_turned_into_input_errors(across_processes):
    @zerogpu.model_work
    def broken() -> None:
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(Exception) as e:
        broken()
    assert not isinstance(e.value, InputError)
