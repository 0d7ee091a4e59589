"""Parallel workers' captures reach the feature store without a manual step.

Each worker fills a part of its own (``WorkerStore``) and the owner of the store merges the
parts (``merge_parts``), at the end of a run or on the next open after a run was stopped.
No Ray here: the workers are objects in this process, as each Ray actor holds one.
"""

from __future__ import annotations

import torch

from uhead_viz.capture import CaptureSpec, TrunkCache
from uhead_viz.featstore import PARTS, FeatureStore, WorkerStore
from uhead_viz.train import capture_rows, extract_features
from uhead_viz.uhead import base_info

SPEC = CaptureSpec(window=3, top_k=2)
BASE = {"name": "m", "fingerprint": "f"}


def test_worker_parts_are_merged_once_and_then_removed(tmp_path):
    with FeatureStore(tmp_path / "s", SPEC, BASE) as main:
        main.add("k0", "r0", torch.zeros(2, 5), [[0, 2]])
    a, b = WorkerStore(tmp_path / "s", SPEC, BASE), WorkerStore(tmp_path / "s", SPEC, BASE)
    assert "k0" in a and a.part.root != b.part.root
    a.add("k0", "r0", torch.ones(2, 5), [[0, 2]])  # already in the store: not captured again
    for i in (1, 2):
        a.add(f"k{i}", f"r{i}", torch.full((3, 5), float(i)), [[0, 3]])
    b.add("k2", "r2", torch.full((3, 5), 2.0), [[0, 3]])  # the same chain on another worker
    b.add("k3", "r3", torch.full((4, 5), 3.0), [[0, 1], [1, 4]])
    a.flush()
    b.flush()
    b.add("k4", "r4", torch.full((1, 5), 4.0), [[0, 1]])  # never flushed: that worker was killed
    store = FeatureStore(tmp_path / "s", SPEC, BASE)
    assert store.merge_parts() == 0 and "k3" in store  # both workers live: their parts are read, not merged
    a.close()  # a finished
    b.part._release()  # b was killed: its lock went with its process, its buffer was lost
    assert store.merge_parts() == 3
    assert not (tmp_path / "s" / PARTS).exists()
    got = FeatureStore(tmp_path / "s", SPEC, BASE).load()  # what a later command sees on disk
    assert sorted(got) == ["k0", "k1", "k2", "k3"]
    assert torch.equal(got["k0"][0], torch.zeros(2, 5, dtype=torch.float16))
    assert torch.equal(got["k3"][0], torch.full((4, 5), 3.0, dtype=torch.float16))
    assert got["k3"][1] == [[0, 1], [1, 4]]
    assert store.merge_parts() == 0


def test_captures_through_workers_equal_one_process(tmp_path, llama_llm):
    rows = [{"id": f"r{i}", "problem": f"What is {i} + {i}?", "steps": [f"{i} + {i} = {2 * i}.", "Done."]}
            for i in range(6)]
    rows.append({"id": "bad", "problem": "No steps."})
    with FeatureStore(tmp_path / "one", SPEC, base_info(llama_llm)) as one:
        assert extract_features(rows, llama_llm, one, SPEC) == 6
    workers = [WorkerStore(tmp_path / "many", SPEC, base_info(llama_llm)) for _ in range(2)]
    results = []
    for k, w in enumerate(workers):  # rows dealt out as Ray deals out tasks
        results += capture_rows(rows[k::2], llama_llm, w, SPEC, TrunkCache())
        w.close()  # the worker is done (a Ray actor's lock goes with its process)
    assert sorted(r["status"] for r in results) == ["added"] * 6 + ["error"]
    many = FeatureStore(tmp_path / "many", SPEC, base_info(llama_llm))
    assert many.merge_parts() == 6
    want, got = FeatureStore(tmp_path / "one", SPEC, base_info(llama_llm)).load(), many.load()
    assert sorted(want) == sorted(got)
    for key, (feats, spans) in want.items():
        assert torch.equal(feats, got[key][0]) and spans == got[key][1]


def test_a_second_writer_fills_a_part_instead_of_overwriting_shards(tmp_path):
    """While another process holds a store's writer lock, this one's shards go to a part that the
    next opening merges; nothing the other wrote is overwritten and every chain stays readable."""
    import subprocess
    import sys
    import textwrap

    from uhead_viz.featstore import LOCK, PARTS

    root = tmp_path / "store"
    first = FeatureStore(root, SPEC, BASE, shard_size=2)
    for i in range(2):
        first.add(f"a{i}", f"a{i}", torch.full((3, 4), float(i)), [[0, 3]])  # a shard: first holds the lock
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, sys, time
        fh = open({str(root / LOCK)!r}, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print("busy", flush=True)
        else:
            print("held", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "busy"  # first's lock is real
        first.close()
        holder.stdin.close()
        holder.wait(timeout=30)
        holder = subprocess.Popen(holder.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"  # now another process writes the store
        second = FeatureStore(root, SPEC, BASE, shard_size=2)
        for i in range(3):
            second.add(f"b{i}", f"b{i}", torch.full((2, 4), 10.0 + i), [[0, 2]])
        second.close()
        assert (root / PARTS).is_dir() and sorted(p.name for p in root.glob("shard-*")) == ["shard-00000.safetensors"]
        assert set(second.load()) == {"a0", "a1", "b0", "b1", "b2"}
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    third = FeatureStore(root, SPEC, BASE)
    assert third.merge_parts() == 3 and not (root / PARTS).exists()
    got = third.load()
    assert {k: float(f[0, 0]) for k, (f, _) in got.items()} == {"a0": 0.0, "a1": 1.0, "b0": 10.0, "b1": 11.0,
                                                                "b2": 12.0}
    third.close()


def test_an_index_line_whose_shard_lacks_the_chain_is_dropped_not_fatal(tmp_path, caplog):
    root = tmp_path / "store"
    with FeatureStore(root, SPEC, BASE, shard_size=1) as st:
        st.add("k0", "r0", torch.ones(2, 4), [[0, 2]])
        st.add("k1", "r1", torch.ones(2, 4), [[0, 2]])
    (root / "shard-00001.safetensors").replace(root / "shard-00000.safetensors")  # k0's shard now holds k1
    (root / "shard-00001.safetensors").write_bytes((root / "shard-00000.safetensors").read_bytes())
    st = FeatureStore(root, SPEC, BASE)
    assert "k0" not in st and set(st.load()) == {"k1"} and "captured again" in caplog.text


def _hold_lock(root):
    """Another process holding ``root``'s writer lock until its stdin closes."""
    import subprocess
    import sys
    import textwrap

    from uhead_viz.featstore import LOCK

    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, sys
        fh = open({str(root / LOCK)!r}, "a+")
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("held", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_chains_in_a_part_are_read_before_the_part_is_merged(tmp_path):
    """While one process writes a store, what a second one captured (into a part) is already read
    by a third (``evaluate --store``, ``train``), so it is neither captured again nor skipped."""
    root = tmp_path / "store"
    with FeatureStore(root, SPEC, BASE) as st:
        st.add("a0", "ra0", torch.zeros(2, 4), [[0, 2]])
    holder = _hold_lock(root)
    try:
        second = FeatureStore(root, SPEC, BASE, shard_size=1)
        second.add("b0", "rb0", torch.full((3, 4), 7.0), [[0, 1], [1, 3]], bodies=[[0, 1], [2, 3]])
        reader = FeatureStore(root, SPEC, BASE)
        assert "b0" in reader and len(reader) == 2
        assert {r["id"] for r in reader.entries().values()} == {"ra0", "rb0"}
        feats, spans = reader.load(["b0"])["b0"]
        assert float(feats[0, 0]) == 7.0 and spans == [[0, 1], [1, 3]] and reader.bodies("b0") == [[0, 1], [2, 3]]
        assert reader.merge_parts() == 0 and "b0" in reader  # the lock is held: nothing merged, still read
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    second.close()
    assert second.merge_parts() == 1  # its own part too: merged, not dropped as "already indexed"
    assert not (root / PARTS).exists()
    assert set(FeatureStore(root, SPEC, BASE).load()) == {"a0", "b0"}
    second.add("c0", "rc0", torch.ones(1, 4), [[0, 1]])  # after the merge it writes the folder itself
    second.close()
    assert set(FeatureStore(root, SPEC, BASE).load()) == {"a0", "b0", "c0"}
