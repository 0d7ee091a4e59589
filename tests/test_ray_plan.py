"""The ``--ray`` flags and the division of work, without starting a cluster."""

from __future__ import annotations

import sys

import pytest

from uhead_viz.cli import build_parser, main
from uhead_viz.llm import InputError
from uhead_viz.ray_run import RaySettings, make_plan, ray_settings


def _args(*flags: str):
    return build_parser().parse_args(["score", "--input", "x.jsonl", "--output", "y.jsonl", *flags])


def test_flags_give_settings_and_refuse_impossible_ones():
    pytest.importorskip("ray", reason="Ray is not installed (make ray)")
    assert ray_settings(_args(), rows_per_batch=32) is None
    s = ray_settings(_args("--ray"), rows_per_batch=32)
    assert s == RaySettings(None, 32, None, 1.0, None)
    s = ray_settings(_args("--ray", "10.0.0.5:6379", "--ray-actors", "4", "--ray-gpus-per-actor", "0.5"), 32)
    assert (s.address, s.actors, s.gpus_per_actor) == ("10.0.0.5:6379", 4, 0.5)
    for bad in (["--ray-actors", "0"], ["--ray-batch-size", "0"], ["--ray-cpus-per-actor", "0"]):
        with pytest.raises(InputError):
            ray_settings(_args("--ray", *bad), rows_per_batch=32)


def test_without_ray_installed_the_flag_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as where it is not installed
    src = tmp_path / "c.jsonl"
    src.write_text('{"problem": "1 + 1?", "steps": ["1 + 1 = 2."]}\n')
    assert main(["score", "--input", str(src), "--output", str(tmp_path / "o.jsonl"), "--ray"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --ray needs Ray") and "make ray" in err and err.count("\n") == 1


def test_plan_keeps_score_batches_whole_and_fits_actors_to_the_cluster():
    units = [[{}] * 8] * 12 + [[{}] * 3]  # 99 rows in batches of 8
    plan = make_plan(units, RaySettings(rows_per_task=32), {"CPU": 6.0})
    assert (plan.rows, plan.units_per_task, plan.tasks, plan.actors, plan.gpus) == (99, 4, 4, 4, 0.0)
    assert "99 rows in 4 tasks" in plan.describe("rows")
    plan = make_plan(units, RaySettings(rows_per_task=5), {"CPU": 64.0, "GPU": 2.0})  # under one batch: one per task
    assert (plan.units_per_task, plan.tasks, plan.actors, plan.gpus) == (1, 13, 2, 1.0)
    plan = make_plan(units, RaySettings(rows_per_task=8, gpus_per_actor=0.25), {"CPU": 64.0, "GPU": 2.0})
    assert plan.actors == 8
    plan = make_plan([[{}]] * 3, RaySettings(rows_per_task=1, actors=10), {"CPU": 2.0})
    assert plan.actors == 3  # never more actors than tasks
