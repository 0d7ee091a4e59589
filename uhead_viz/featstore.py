"""Token features of many chains on disk, in shards, so training never re-runs the LLM.

The teacher-forced capture costs seconds per chain on a CPU while a head's training epoch
over the cached features costs milliseconds per chain, so features are computed once and
kept. Layout of a store folder:

    meta.json               the feature recipe and the base model it was captured from
    index.jsonl             one line per stored chain: key, row id, shard, tokens, spans, and
                            (stores written since heads pool step bodies) the spans without
                            their ``Step k:`` markers
    shard-00000.safetensors float16 [T, F] per chain, named by the chain's key

A shard is written whole (tmp file, then rename) before its chains' index lines are
appended, so a killed job leaves at worst an orphan shard that nothing points to: a rerun
recomputes those chains and writes a new shard; nothing is lost or duplicated. The key is
``chain_key`` (a hash of the exact prompt and chain token ids), so the same chain text
under another id is stored once and a changed chain is never served stale features.

Parallel workers (``features --ray``) never write this folder's index: each fills a store of
its own under ``parts/`` (``WorkerStore``), and ``merge_parts`` moves their shards in when
the run ends, or when the store is next opened by a command after a run was killed. One
process writes the folder at a time (``writer.lock``, an ``flock``): a second ``features`` or
``evaluate --store`` run on the same folder fills a part as a worker does, instead of numbering
shards over the first one's. Until then every reader also finds the chains held in parts
(``elsewhere``), so a run never captures again what a parallel one has already stored.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import InputError
from .internals import CaptureSpec, covers
from .jsonl import ResumableWriter, read_rows

logger = logging.getLogger(__name__)

META = "meta.json"
INDEX = "index.jsonl"
PARTS = "parts"
LOCK = "writer.lock"
_SHARD_RE = re.compile(r"shard-(\d+)\.safetensors$")


Spans = list[list[int]] | list[tuple[int, int]]  # [start, end) token ranges, one per step

def open_store(root: str | Path, spec: CaptureSpec, base: dict[str, Any]) -> FeatureStore:
    """The store at ``root`` for features of ``spec``.

    A store captured with a recipe that covers ``spec`` (more hidden layers, a longer window,
    more top-k) is opened with its own recipe, so its rows serve narrower heads too
    (``features.narrow_features``); any other recipe is refused by ``FeatureStore``.
    """
    meta = Path(root) / META
    if meta.is_file():
        have = CaptureSpec.from_dict(json.loads(meta.read_text(encoding="utf-8"))["features"])
        if covers(have, spec):
            spec = have
    return FeatureStore(root, spec, base)


def _being_written(folder: Path) -> bool:
    """Whether a live process holds ``folder``'s writer lock (a part's writer takes it at its first
    shard, like the store's own writer; the lock dies with its process)."""
    lock = folder / LOCK
    if not lock.is_file():
        return False
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return False


class FeatureStore:
    """Append-only feature cache; ``add`` buffers, ``flush`` writes a shard (also on close)."""

    def __init__(self, root: str | Path, spec: CaptureSpec, base: dict[str, Any], shard_size: int = 64) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.spec = spec
        self.shard_size = shard_size
        meta = {"features": spec.to_dict(), "base_model": {k: base.get(k) for k in ("name", "fingerprint")}}
        path = self.root / META
        if path.exists():
            have = json.loads(path.read_text(encoding="utf-8"))
            if have != meta:
                raise InputError(
                    f"The feature store {self.root} holds features of {have}, not {meta}. "
                    "Use another --store folder for another model or feature recipe."
                )
        else:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, path)
        self.index: dict[str, dict[str, Any]] = {}
        for _, row, err in read_rows(self.root / INDEX) if (self.root / INDEX).exists() else []:
            if row is not None and not err and (self.root / row["shard"]).exists():
                self.index[row["key"]] = row
        self._drop_unheld()
        # chains held in parts/ (parallel writers' stores, not yet merged): readable, never merged twice
        self.elsewhere: dict[str, dict[str, Any]] = self._parts_index()
        self._buf: list[tuple[str, str, torch.Tensor, list[list[int]], list[list[int]] | None]] = []
        self._lock: Any = None  # the folder's writer lock, taken at the first write (see ``_writer``)
        self._part: FeatureStore | None = None  # where this process writes when another holds the lock

    def _drop_unheld(self) -> None:
        """Forget index lines whose shard does not hold their chain (reading only the shards' headers),
        so ``features`` captures those chains again. Stores written by two processes at once before
        the writer lock existed have such lines: a shard overwritten by the other process."""
        by_shard: dict[str, list[str]] = {}
        for k, row in self.index.items():
            by_shard.setdefault(row["shard"], []).append(k)
        lost = []
        for shard, keys in by_shard.items():
            with safe_open(str(self.root / shard), framework="pt") as f:
                held = set(f.keys())
            lost += [k for k in keys if k not in held]
        for k in lost:
            del self.index[k]
        if lost:
            logger.warning("%d chains indexed in %s are not in their shards; they will be captured again",
                           len(lost), self.root)

    def _parts_index(self) -> dict[str, dict[str, Any]]:
        """Index lines of the parts under ``parts/`` that this folder's index lacks, with shard paths
        inside this folder. A part's shard is written before its index line, so a part that is being
        written is read safely."""
        out: dict[str, dict[str, Any]] = {}
        parts = self.root / PARTS
        for part in sorted(parts.iterdir()) if parts.is_dir() else []:
            if not (part / INDEX).is_file():
                continue
            for _, row, err in read_rows(part / INDEX):
                if row is None or err or row["key"] in self.index or not (part / row["shard"]).exists():
                    continue
                out[row["key"]] = {**row, "shard": str(Path(PARTS) / part.name / row["shard"])}
        return out

    def _row(self, key: str) -> dict[str, Any] | None:
        return self.index.get(key) or self.elsewhere.get(key)

    def entries(self) -> dict[str, dict[str, Any]]:
        """Index line of every readable chain by key: this folder's own and those still in parts."""
        return {**self.elsewhere, **self.index}

    def _writer(self) -> bool:
        """Take the folder's writer lock if no other process holds it; True if this process writes here.

        Two processes appending shards and index lines to one folder would overwrite each other's
        shards (each numbers them from what it saw at open). The second writer therefore fills a
        part under ``parts/`` instead, as a parallel worker does, and the next command that opens
        the store while no one writes it merges the part in (``merge_parts``). The lock is an
        ``flock``: it goes with the process, also when the process is killed.
        """
        if self._lock is None:
            fh = open(self.root / LOCK, "a+")  # noqa: SIM115  (held open as long as this store writes)
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                return False
            self._lock = fh
            numbers = [int(m.group(1)) for p in self.root.iterdir() if (m := _SHARD_RE.search(p.name))]
            self._next = max(numbers, default=-1) + 1
        return True

    def _release(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __contains__(self, key: str) -> bool:
        return key in self.index or key in self.elsewhere or any(k == key for k, *_ in self._buf)

    def __len__(self) -> int:
        return len(self.index) + len(self.elsewhere) + len(self._buf)

    def add(
        self,
        key: str,
        row_id: str,
        feats: torch.Tensor,
        spans: Spans,
        bodies: Spans | None = None,
    ) -> None:
        if key in self:
            return
        f = feats.detach().to(torch.float16).cpu().contiguous()
        self._buf.append((key, row_id, f, [list(s) for s in spans], [list(b) for b in bodies] if bodies else None))
        if len(self._buf) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        if self._part is None and not self._writer():
            name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            have = json.loads((self.root / META).read_text(encoding="utf-8"))
            self._part = FeatureStore(self.root / PARTS / name, self.spec, have["base_model"], self.shard_size)
            logger.info("Another process is writing %s; this one's captures go to %s and are merged in by the "
                        "next command that opens the store", self.root, self._part.root)
        if self._part is not None:
            for k, rid, f, spans, bodies in self._buf:
                self._part.add(k, rid, f, spans, bodies)
            self._part.flush()
            where = Path(PARTS) / self._part.root.name  # readable here as well, by a path inside the store
            self.elsewhere.update({k: {**r, "shard": str(where / r["shard"])} for k, r in self._part.index.items()})
            self._buf.clear()
            return
        name = f"shard-{self._next:05d}.safetensors"
        tmp = self.root / (name + ".tmp")
        save_file({k: f for k, _, f, _, _ in self._buf}, str(tmp))
        os.replace(tmp, self.root / name)
        self._next += 1
        with ResumableWriter(self.root / INDEX, id_key="key") as w:
            for k, rid, f, spans, bodies in self._buf:
                row = {"key": k, "id": rid, "shard": name, "n_tokens": int(f.shape[0]), "spans": spans}
                if bodies is not None:
                    row["bodies"] = bodies
                w.write(row)
                self.index[k] = row
        self._buf.clear()

    def absorb(self, other: str | Path, move: bool = False) -> int:
        """Copy in the chains of another store with the same recipe; returns how many were new.

        A store has one writer at a time, so parallel ``features`` jobs (one per GPU
        process or machine) each fill a store of their own and are merged here before
        training. Shards are copied whole and renamed into this store's numbering; with
        ``move`` (the other store is discarded afterwards), a shard whose chains are all
        new is renamed instead of rewritten.
        """
        if not (Path(other) / META).is_file():
            raise InputError(f"{other} is not a feature store (no {META}).")
        have = json.loads((self.root / META).read_text(encoding="utf-8"))
        src = FeatureStore(other, self.spec, have["base_model"])  # refuses another model or recipe
        self.flush()
        if not self._writer():
            raise InputError(f"Another process is writing the feature store {self.root}; merge when it is done.")
        by_shard: dict[str, list[dict[str, Any]]] = {}
        for row in src.index.values():
            if row["key"] not in self.index:
                by_shard.setdefault(row["shard"], []).append(row)
        added = 0
        with ResumableWriter(self.root / INDEX, id_key="key") as w:
            for shard, rows in sorted(by_shard.items()):
                name = f"shard-{self._next:05d}.safetensors"
                whole = sum(1 for r in src.index.values() if r["shard"] == shard) == len(rows)
                if move and whole:
                    os.replace(src.root / shard, self.root / name)
                else:
                    tmp = self.root / (name + ".tmp")
                    with safe_open(str(src.root / shard), framework="pt") as f:
                        save_file({r["key"]: f.get_tensor(r["key"]) for r in rows}, str(tmp))
                    os.replace(tmp, self.root / name)  # the shard is whole before its index lines exist
                self._next += 1
                for r in rows:
                    row = {**r, "shard": name}
                    w.write(row)
                    self.index[r["key"]] = row
                added += len(rows)
        return added

    def merge_parts(self) -> int:
        """Absorb, then delete, the worker stores under ``parts/``; returns how many chains were new.

        Only the process that owns this store calls it, while no worker is writing.
        """
        added = 0
        parts = self.root / PARTS
        self.flush()  # this process's own part, if it has one, is merged with the others
        if not parts.is_dir() or not self._writer():  # nothing to merge, or someone is writing: later
            return 0
        for part in sorted(parts.iterdir()):
            if part == getattr(self._part, "root", None):
                self._part.close()  # this process's own part: whole on disk before it is merged
            elif _being_written(part):
                continue  # another process still fills it: merged by a later opening
            if (part / META).is_file():
                added += self.absorb(part, move=True)
            shutil.rmtree(part, ignore_errors=True)
        if parts.is_dir() and not any(parts.iterdir()):
            parts.rmdir()
        self.elsewhere = self._parts_index()  # what a part being written still holds
        self._part = None  # merged (and gone): this process holds the lock and writes here from now on
        if added:
            logger.info("Merged %d chains captured by parallel workers into %s", added, self.root)
        return added

    def close(self) -> None:
        self.flush()
        if self._part is not None:
            self._part.close()
        self._release()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def bodies(self, key: str) -> list[list[int]] | None:
        """A stored chain's step spans without their ``Step k:`` markers; None if the store did not keep them."""
        for k, _, _, _, bodies in self._buf:
            if k == key:
                return bodies
        row = self._row(key)
        return row.get("bodies") if row is not None else None

    def load(self, keys: list[str] | None = None) -> dict[str, tuple[torch.Tensor, list[list[int]]]]:
        """Features and spans of ``keys`` (default: all), read shard by shard."""
        rows = self.entries()
        want = list(rows) if keys is None else [k for k in keys if k in rows]
        by_shard: dict[str, list[str]] = {}
        for k in want:
            by_shard.setdefault(rows[k]["shard"], []).append(k)
        out: dict[str, tuple[torch.Tensor, list[list[int]]]] = {}
        for k, _, f, spans, _ in self._buf:  # added but not yet flushed
            if keys is None or k in keys:
                out[k] = (f, spans)
        for shard, ks in by_shard.items():
            with safe_open(str(self.root / shard), framework="pt") as f:
                for k in ks:
                    out[k] = (f.get_tensor(k), rows[k]["spans"])
        return out


class WorkerStore:
    """One parallel worker's view of a store: reads the store, writes a store of its own under
    ``parts/`` (the folder's index has one writer, the process that merges)."""

    def __init__(self, root: str | Path, spec: CaptureSpec, base: dict[str, Any]) -> None:
        self.main = FeatureStore(root, spec, base)  # read only here: refuses another model or recipe
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.part = FeatureStore(self.main.root / PARTS / name, spec, base)
        self.spec = spec

    def __contains__(self, key: str) -> bool:
        return key in self.main or key in self.part

    def __len__(self) -> int:
        return len(self.main) + len(self.part)

    def add(self, key: str, row_id: str, feats: torch.Tensor, spans: Spans, bodies: Spans | None = None) -> None:
        if key not in self.main:
            self.part.add(key, row_id, feats, spans, bodies)

    def bodies(self, key: str) -> list[list[int]] | None:
        return self.main.bodies(key) if key in self.main else self.part.bodies(key)

    def load(self, keys: list[str] | None = None) -> dict[str, tuple[torch.Tensor, list[list[int]]]]:
        return {**self.main.load(keys), **self.part.load(keys)}

    def flush(self) -> None:
        self.part.flush()

    def close(self) -> None:
        self.part.close()
