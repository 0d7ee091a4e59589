"""On Ray, scoring gives the single-process output row for row and survives a worker's death,
features fill the store as one process does, and a worker with another model is refused.

These tests start a two-CPU Ray cluster in this process (10-20 s) and load a tiny model
built in code into each of its workers. They skip where Ray is not installed (``make ray``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (make ray, or pip install -r requirements-ray.txt)")

from tiny_models import build_model, build_tokenizer  # noqa: E402

from uhead_viz.cli import main  # noqa: E402
from uhead_viz.llm import InputError, load_llm  # noqa: E402
from uhead_viz.ray_run import local_cluster_options  # noqa: E402
from uhead_viz.uhead import UHead, save_head  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 2}


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of two CPUs whose workers import the package and this folder."""
    env = {"UHEAD_VIZ_PRECISION": "fp32", "OMP_NUM_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    ray.init(num_cpus=2, **local_cluster_options(str(ROOT / "tests")))  # the cluster `--ray` starts, of 2 CPUs
    yield
    ray.shutdown()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def setup(tmp_path_factory, cluster):
    """A tiny model folder, a head for it, a chains file, and its single-process scores."""
    tmp = tmp_path_factory.mktemp("ray")
    tok = build_tokenizer()
    model = build_model("llama", tok, seed=3)
    model.save_pretrained(tmp / "tiny")
    tok.save_pretrained(tmp / "tiny")
    llm = load_llm(str(tmp / "tiny"))
    save_head(UHead.for_llm(llm, mode="causal", **SIZES).eval(), tmp / "head")
    lines = []
    for i in range(11):
        steps = [f"{i * 4} / 2 = {i * 2} clips in May.", f"{i * 4} + {i * 2} = {i * 6} clips."][: 1 + i % 2]
        lines.append(json.dumps({"id": f"r{i}", "problem": f"Natalia sold {i * 4} clips. How many in all?",
                                 "steps": steps * (1 + i % 3)}))
    lines.insert(4, json.dumps({"id": "bad", "problem": "No steps here."}))
    lines.insert(7, "{not json")
    src = tmp / "chains.jsonl"
    src.write_text("\n".join(lines) + "\n")
    common = ["--input", str(src), "--model", str(tmp / "tiny"), "--head", str(tmp / "head"), "--batch-size", "2"]
    expected = tmp / "one-process.jsonl"
    assert main(["score", *common, "--output", str(expected)]) == 0
    return tmp, common, expected.read_text()


def test_workers_of_a_local_cluster_run_at_the_commands_priority(cluster):
    """Ray's own default would nice them to 15, behind every other job on the machine."""

    @ray.remote
    def niceness() -> int:
        return os.nice(0)

    assert ray.get(niceness.remote()) == os.nice(0)


def test_score_on_ray_equals_one_process_row_for_row(setup, caplog):
    tmp, common, expected = setup
    out = tmp / "ray.jsonl"
    ray_args = ["--ray", "--ray-actors", "2", "--ray-batch-size", "4"]
    with caplog.at_level("INFO"):
        assert main(["score", *common, "--output", str(out), *ray_args]) == 0
    assert "Ray plan: 12 chains in 3 tasks" in caplog.text and "2 actor(s) x (1 CPU, 0 GPU)" in caplog.text
    assert "(id bad)" in caplog.text  # the malformed row is reported and skipped, as in one process
    assert len(expected.splitlines()) == 11 and '"uhead"' in expected
    assert out.read_text() == expected


def test_a_worker_that_dies_is_replaced_and_a_resumed_run_writes_every_row_once(setup, caplog):
    from ray_support import dying_open_score

    from uhead_viz.evaluate import resolve_methods
    from uhead_viz.ray_run import RayRunner, RaySettings
    from uhead_viz.scoring import score_file
    from uhead_viz.workers import ModelRecipe, ScoreRecipe

    tmp, _, expected = setup
    llm = load_llm(str(tmp / "tiny"))
    recipe = ScoreRecipe(ModelRecipe.of(llm), tuple(resolve_methods(None)[0]), str(tmp / "head"))
    marker = tmp / "died.txt"
    runner = RayRunner(dying_open_score, (recipe, str(marker), "r7"), RaySettings(rows_per_task=2, actors=2))
    out = tmp / "survived.jsonl"
    out.write_text("\n".join(expected.splitlines()[:4]) + "\n")  # a run stopped after four rows
    with caplog.at_level("INFO"):
        written, skipped = score_file(tmp / "chains.jsonl", out, batch_size=2, runner=runner)
    assert "4 already scored, 8 to score" in caplog.text  # the written rows are not sent again
    assert marker.exists()  # a worker did die, on r7
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert sorted(ids) == sorted(f"r{i}" for i in range(11)) and len(ids) == len(set(ids))
    assert (written, skipped) == (7, 2)
    assert out.read_text() == expected


def test_features_on_ray_fill_the_store_as_one_process_does(setup, caplog):
    import torch

    from uhead_viz.capture import CaptureSpec
    from uhead_viz.featstore import PARTS, FeatureStore

    tmp, _, _ = setup
    src = tmp / "chains.jsonl"
    base = ["features", "--input", str(src), "--model", str(tmp / "tiny"), "--limit", "6"]
    assert main([*base, "--store", str(tmp / "one")]) == 0
    with caplog.at_level("INFO"):
        assert main([*base, "--store", str(tmp / "many"), "--ray", "--ray-actors", "2", "--ray-batch-size", "2"]) == 0
    assert "Ray plan: 6 chains in 3 tasks" in caplog.text
    assert "Skipping row bad" in caplog.text  # the row without steps, reported by its worker's result
    assert not (tmp / "many" / PARTS).exists()  # the workers' parts were merged
    meta = json.loads((tmp / "one" / "meta.json").read_text())
    spec = CaptureSpec.from_dict(meta["features"])
    want = FeatureStore(tmp / "one", spec, meta["base_model"]).load()
    got = FeatureStore(tmp / "many", spec, meta["base_model"]).load()
    assert len(want) == 5 and sorted(want) == sorted(got)
    assert all(torch.equal(want[k][0], got[k][0]) and want[k][1] == got[k][1] for k in want)


def test_a_worker_with_another_build_of_the_model_is_refused_in_one_line(setup):
    from uhead_viz.ray_run import RayRunner, RaySettings
    from uhead_viz.workers import ModelRecipe, ScoreRecipe, open_score

    tmp, _, _ = setup
    recipe = ScoreRecipe(ModelRecipe(str(tmp / "tiny"), None, "not-its-fingerprint"), ("maxprob",))
    runner = RayRunner(open_score, recipe, RaySettings(rows_per_task=1, actors=1))
    with pytest.raises(InputError, match="different builds of the model"):
        list(runner([[{"id": "a", "problem": "1 + 1?", "steps": ["1 + 1 = 2."]}]]))


def test_evaluate_on_ray_reports_what_one_process_reports(setup, caplog):
    tmp, _, _ = setup
    data = tmp / "labelled.jsonl"
    rows = []
    for i in range(6):
        steps = [f"{i * 4} / 2 = {i * 2} clips in May.", f"{i * 4} + {i * 2} = {i * 6 + i % 2} clips."]
        rows.append({"id": f"e{i}", "problem": f"Natalia sold {i * 4} clips. How many in all?", "steps": steps,
                     "labels": [0, i % 2]})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = ["evaluate", "--data", str(data), "--format", "jsonl", "--model", str(tmp / "tiny"),
            "--head", str(tmp / "head")]
    assert main([*base, "--out", str(tmp / "ev1" / "report.json")]) == 0
    with caplog.at_level("INFO"):
        ray_args = ["--ray", "--ray-actors", "2", "--ray-batch-size", "2"]
        assert main([*base, "--out", str(tmp / "ev2" / "report.json"), *ray_args]) == 0
    assert "Ray plan: 6 labelled chains in 3 tasks" in caplog.text

    def without_time(path: Path) -> dict:
        report = json.loads(path.read_text())
        return {m: {k: v for k, v in r.items() if k != "seconds_per_chain"} for m, r in report["methods"].items()}

    assert without_time(tmp / "ev1" / "report.json") == without_time(tmp / "ev2" / "report.json")
    assert without_time(tmp / "ev1" / "report.json")["uhead"]["pr_auc"] is not None
