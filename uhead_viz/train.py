"""Train an uncertainty head on labelled chains: cached features in, a checkpoint out.

Two stages, both resumable:

1. ``extract_features``: teacher-force every chain through the frozen LLM once and keep
   its token features in a ``FeatureStore`` (seconds per chain on a CPU; done once).
2. ``train_head``: split chains by question into train and validation, standardize the
   features, and fit the head with BCE (``pos_weight`` for the rare wrong steps, each
   step weighted by its label's confidence), AdamW, fixed seeds, and early stopping on
   validation PR-AUC, averaged over the data's sources (``source_pr_auc``). The decision
   threshold for "first wrong step" is the one that maximizes ProcessBench F1 on
   validation, averaged over the sources too. The state is saved after every epoch, so a
   killed run continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from . import metrics
from .capture import teacher_force
from .errors import InputError, RowError
from .featstore import FeatureStore
from .features import narrow_features, token_features
from .internals import CaptureSpec
from .jsonl import problem_of
from .scorers.base import chain_key
from .scoring import row_to_chain
from .steps import body_spans
from .train_batches import (
    Example,
    batches,
    branch_pairs,
    loss_view,
    make_batch,
    pair_loss,
    position_pos_weights,
    prefix_keys,
    problem_groups,
    source_weights,
)
from .uhead import UHead, UHeadConfig, body_mask, collate, save_head

logger = logging.getLogger(__name__)
STATE = ".train_state"


def capture_rows(rows: list[dict[str, Any]], llm: Any, store: Any, spec: CaptureSpec, trunks: Any = None) -> list[dict]:
    """Rows in, one result per row out: ``{"id", "status": "added" | "stored" | "error", "error"?}``.

    Captures and adds the features of each row whose chain is not yet in ``store`` (a
    ``FeatureStore``, or a parallel worker's ``WorkerStore``). The one implementation of
    feature capture: ``extract_features`` calls it here, Ray workers on their share.
    """
    out = []
    for row in rows:
        rid = str(row.get("id"))
        try:
            chain = row_to_chain(row, llm)
        except RowError as e:
            out.append({"id": rid, "status": "error", "error": str(e)})
            continue
        key = chain_key(chain)
        if key in store:
            out.append({"id": rid, "status": "stored"})
            continue
        internals = teacher_force(llm, chain, spec, trunks=trunks)
        store.add(key, rid, token_features(internals, spec), chain.spans, body_spans(llm.tokenizer, chain))
        out.append({"id": rid, "status": "added"})
    return out


def extract_features(rows: Iterable[dict[str, Any]], llm: Any, store: FeatureStore, spec: CaptureSpec) -> int:
    """Capture and store the features of every row not yet in ``store``; returns how many were added."""
    from .capture import TrunkCache

    added = 0
    trunks = TrunkCache()  # rows that branch off an earlier row's steps run only their new tokens
    for row in tqdm(list(rows), desc="features", unit="chain"):
        (r,) = capture_rows([row], llm, store, spec, trunks)
        if r["status"] == "error":
            logger.warning("Skipping row %s: %s", row.get("id"), r["error"])
        added += r["status"] == "added"
    store.flush()
    return added


@dataclass
class TrainConfig:
    """Everything that decides the result; stored in the checkpoint's ``training`` section."""

    # Sizes chosen by 4-fold cross-validated PR-AUC on 96 GSM8K-train chains (see docs/experiments.md):
    # with a few hundred chains a small causal head generalizes better than a wide one, and
    # the causal mode beat the per-step mode at a fraction of its cost.
    d_model: int = 64
    n_layers: int = 1
    n_heads: int = 2
    d_ff: int = 128
    dropout: float = 0.2
    mode: str = "causal"
    pool: str = "mean"
    context: str = "chain"
    attn: str = "raw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 16
    # A batch is also cut where it would pad past this many tokens: PRM800K chains reach 6,000
    # tokens, and 16 of them padded to that length (features and attention maps) exceed 20 GB.
    batch_tokens: int = 8192
    # on 1,600-3,200 chains the best epoch came at 1-6 in every run (docs/experiments.md)
    max_epochs: int = 10
    patience: int = 3
    val_fraction: float = 0.2
    seed: int = 0
    use_confidence: bool = True
    # Steps after a chain's first wrong step are unlabelled in the ProcessBench convention.
    # Most of them carry the wrong value on (a Math-Shepherd-style "cannot reach the right
    # answer any more" label), so for training they may count as wrong at a lower weight;
    # validation always uses the labels as given. The default leaves them out: counted as
    # wrong (at weight 0.5) they teach "later = wrong", and on 3,200 chains leaving
    # them out gave the better validation PR-AUC (0.530 / 0.507 against 0.469 / 0.503).
    after_error_weight: float = 0.0
    # A chain's later steps are more often wrong (they follow its first error), so a head can
    # learn "late = wrong", which does not carry to longer chains by other authors. With
    # balance_position, wrong steps get a pos_weight per step-index bucket instead of one
    # global one, so that position alone predicts nothing in the training loss.
    balance_position: bool = False
    # Give every source (``row_source``) the same weight in the loss, and wrong and fine steps the
    # same weight inside each (``train_batches.source_weights``), instead of one global pos_weight:
    # otherwise the source with the most steps decides what the head learns, and validation, which
    # averages over sources, disagrees with training.
    balance_sources: bool = False
    # Weight of a ranking term on wrong and fine steps that branch from the same prefix
    # (``train_batches.branch_pairs``; PRM800K's rated alternatives). 0: BCE alone.
    pair_weight: float = 0.0
    # Pool a step's body only, not its "Step k:" marker tokens (see UHeadConfig.pool_body).
    pool_body: bool = True
    # With hidden states among the features (``features --hidden-layers``), the width they are
    # projected to before joining the others.
    d_hidden: int = 64


def row_source(row: dict[str, Any]) -> str:
    """Where a row's labels and text come from, e.g. ``reference/qwen-coder-1.5b`` (the ``reference``
    labeler on the default model's chains) or ``prm800k-phase1-train/gpt-4``."""
    labels = row.get("source") or row.get("label_source") or ""
    return f"{labels}/{row.get('model') or ''}"


def source_pr_auc(examples: list[Example], scores: list[list[float]]) -> tuple[float, dict[str, float]]:
    """Validation PR-AUC as the mean over sources of each source's own PR-AUC, and the per-source figures.

    Pooled over sources, PR-AUC rewards a head that tells the sources apart (one author's chains
    hold more wrong steps than another's) instead of the wrong steps within each; the mean of the
    per-source figures does not. Sources without both wrong and fine steps are left out.
    """
    groups: dict[str, tuple[list, list]] = {}
    for e, sc in zip(examples, scores):
        labels, got = groups.setdefault(e.source, ([], []))
        labels.append(e.labels)
        got.append(sc)
    per = {src: metrics.pr_auc(lab, sc) for src, (lab, sc) in sorted(groups.items())}
    per = {k: v for k, v in per.items() if not math.isnan(v)}
    return (sum(per.values()) / len(per) if per else float("nan")), per


def is_val(problem: str, fraction: float) -> bool:
    """Stable split by question text, so no question is in both train and validation."""
    h = int(hashlib.sha1(problem.strip().encode("utf-8")).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def load_examples(
    rows: Iterable[dict[str, Any]],
    store: FeatureStore,
    llm: Any = None,
    need: CaptureSpec | None = None,
    shape: tuple[int, int] | None = None,
) -> list[Example]:
    """Join labelled rows with their stored features by row id; rows without either are skipped.

    Each example also gets its steps' body spans (without the ``Step k:`` marker tokens), for
    heads that pool only those: from the store, else (stores written before it kept them)
    computed with ``llm``'s tokenizer, else the whole spans (logged). With ``need`` (and the
    base model's ``shape``, layers x heads), features of a wider store are cut to that recipe.
    """
    by_id = {r["id"]: r["key"] for r in store.entries().values()}
    rows = list(rows)
    keys = [by_id.get(str(r.get("id"))) for r in rows]
    feats = store.load([k for k in keys if k])
    out, skipped, whole = [], 0, 0
    for row, key in zip(rows, keys):
        labels = row.get("labels")
        if key is None or key not in feats or not isinstance(labels, list):
            skipped += 1
            continue
        f, spans = feats[key]
        if need is not None and need != store.spec:
            if shape is None:
                raise ValueError("Cutting stored features to another recipe needs the base model's shape.")
            f = narrow_features(f, shape[0], shape[1], store.spec, need)
        if len(spans) != len(labels) or all(lab is None for lab in labels):
            skipped += 1
            continue
        conf = row.get("label_confidence") or [1.0] * len(labels)
        bodies = store.bodies(key) or (_bodies(row, key, spans, llm) if llm is not None else [])
        whole += not bodies
        problem = problem_of(row) or ""
        steps = row.get("steps")
        prefixes = prefix_keys(problem, [str(x) for x in steps]) if isinstance(steps, list) else []
        out.append(Example(str(row["id"]), problem, f, spans, labels, conf, bodies, row_source(row),
                           prefixes if len(prefixes) == len(labels) else []))
    if skipped:
        logger.info("%d labelled rows had no stored features or no usable labels; skipped", skipped)
    if whole:
        logger.warning("%d chains have no body spans (an older store, no model given): their steps are pooled "
                       "whole, markers included", whole)
    return out


def _bodies(row: dict[str, Any], key: str, spans: list[list[int]], llm: Any) -> list[list[int]]:
    """The body spans of a stored chain, from its row tokenized again (the same ids: the key says so)."""
    from .scoring import row_to_chain

    try:
        chain = row_to_chain(row, llm)
    except RowError:
        return []
    if chain_key(chain) != key or [list(s) for s in chain.spans] != [list(s) for s in spans]:
        logger.warning("Row %s no longer matches its stored features; its steps are pooled whole", row.get("id"))
        return []
    return [list(b) for b in body_spans(llm.tokenizer, chain)]


@torch.no_grad()
def predict(head: UHead, exs: list[Example], batch_size: int = 32, max_tokens: int = 16384) -> list[list[float]]:
    """Per example, per step: p_error."""
    head.eval()
    out: list[list[float]] = []
    for idx in batches([e.feats.shape[0] for e in exs], list(range(len(exs))), batch_size, max_tokens):
        part = [exs[j] for j in idx]
        feats, valid, steps = collate([(e.feats.float(), e.spans) for e in part])
        p = torch.sigmoid(head(feats, valid, steps, body_mask([e.bodies for e in part], feats.shape[1])))
        out += [p[j, : len(e.spans)].tolist() for j, e in enumerate(part)]
    return out


def _save_state(folder: Path, head: UHead, opt: torch.optim.Optimizer, info: dict[str, Any], best: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"head.{k}": v.detach().contiguous() for k, v in head.state_dict().items()}
    tensors.update({f"best.{k}": v.contiguous() for k, v in best.items()})
    for i, st in opt.state_dict()["state"].items():
        for name, v in st.items():
            tensors[f"opt.{i}.{name}"] = torch.as_tensor(v).contiguous()
    save_file(tensors, str(folder / "state.safetensors.tmp"))
    os.replace(folder / "state.safetensors.tmp", folder / "state.safetensors")
    (folder / "state.json.tmp").write_text(json.dumps(info, indent=2), encoding="utf-8")
    os.replace(folder / "state.json.tmp", folder / "state.json")


def _load_state(folder: Path, head: UHead, opt: torch.optim.Optimizer) -> tuple[dict[str, Any], dict] | None:
    if not (folder / "state.json").exists() or not (folder / "state.safetensors").exists():
        return None
    info = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    t = load_file(str(folder / "state.safetensors"))
    head.load_state_dict({k[5:]: v for k, v in t.items() if k.startswith("head.")})
    best = {k[5:]: v for k, v in t.items() if k.startswith("best.")}
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in t.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)
    return info, best


def feature_stats(head: UHead, exs: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (n-1) standard deviation of the head's inputs over every token of ``exs``.

    Summed chain by chain in float64: one float32 copy of all training tokens would be several
    GB at PRM800K scale (thousands of chains x 4,000+ columns).
    """
    n, total, squares = 0, None, None
    for e in exs:
        x = head.prepare(e.feats.float()).double()
        total = x.sum(0) if total is None else total + x.sum(0)
        squares = (x * x).sum(0) if squares is None else squares + (x * x).sum(0)
        n += x.shape[0]
    if total is None or squares is None or n < 2:
        raise InputError("Too few training tokens to standardize the features.")
    mean = total / n
    var = ((squares - n * mean * mean) / (n - 1)).clamp(min=0)
    return mean.float(), var.sqrt().float()


def train_head(
    examples: list[Example], llm_info: dict[str, Any], spec: CaptureSpec, cfg: TrainConfig, out: str | Path,
    data_summary: dict[str, Any] | None = None,
) -> UHead:
    """Fit a head (see the module docstring) and write it to ``out``; resumes from ``out/.train_state``."""
    train = [e for e in examples if not is_val(e.problem, cfg.val_fraction)]
    val = [e for e in examples if is_val(e.problem, cfg.val_fraction)]
    n_pos = sum(lab == 1 for e in train for lab in e.labels)
    n_neg = sum(lab == 0 for e in train for lab in e.labels)
    n_after = sum(
        lab is None and k > metrics.first_error(e.labels) >= 0 for e in train for k, lab in enumerate(e.labels)
    )
    if not train or not val or n_pos == 0 or n_neg == 0 or not any(1 in e.labels for e in val):
        raise InputError(
            f"Not enough labelled data to train: {len(train)} train / {len(val)} validation chains, "
            f"{n_pos} wrong and {n_neg} fine training steps. Label more chains."
        )
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    n_features = train[0].feats.shape[1]
    arch = ("d_model", "n_layers", "n_heads", "d_ff", "dropout", "mode", "pool", "context", "attn", "pool_body")
    sizes = {k: getattr(cfg, k) for k in arch}
    n_hidden = len(spec.hidden_layers) * int(llm_info.get("hidden_size") or 0)
    if n_hidden:
        sizes.update(n_hidden=n_hidden, d_hidden=cfg.d_hidden)
    head = UHead(UHeadConfig(n_features=n_features, **sizes), spec=spec, base=llm_info)
    head.set_normalization(*feature_stats(head, train))
    if cfg.mode == "causal" and cfg.context == "step":  # a step's logit reads its own tokens only
        train = [loss_view(e, cfg.after_error_weight) for e in train]
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    pos_weight = torch.tensor(n_neg / (n_pos + cfg.after_error_weight * n_after))
    pos_by_step = by_source = None
    if cfg.balance_position and cfg.balance_sources:
        raise InputError("Choose one of balance_position and balance_sources: each sets the wrong steps' weight.")
    if cfg.balance_position:
        pos_by_step = position_pos_weights(train, cfg.use_confidence, cfg.after_error_weight)
        logger.info("pos_weight by step index: %s", ", ".join(f"{v:.2f}" for v in pos_by_step))
        pos_weight = torch.tensor(1.0)
    if cfg.balance_sources:
        by_source = source_weights(train, cfg.use_confidence, cfg.after_error_weight)
        logger.info("weights (fine, wrong) by source: %s",
                    "; ".join(f"{k} {a:.2f}, {b:.2f}" for k, (a, b) in sorted(by_source.items())))
        pos_weight = torch.tensor(1.0)
    out = Path(out)
    state_dir = out / STATE
    fingerprint = hashlib.sha1(json.dumps([asdict(cfg), sorted(e.rid for e in examples)]).encode()).hexdigest()
    info: dict[str, Any] = {"fingerprint": fingerprint, "epoch": 0, "best_pr_auc": -1.0, "best_epoch": 0, "log": []}
    best = {k: v.clone() for k, v in head.state_dict().items()}
    resumed = _load_state(state_dir, head, opt)
    if resumed is not None and resumed[0].get("fingerprint") == fingerprint:
        info, best = resumed
        logger.info("Resuming training at epoch %d (best val PR-AUC %.4f)", info["epoch"], info["best_pr_auc"])
    elif resumed is not None:
        logger.info("Training data or settings changed since the saved state; starting over")
        head.load_state_dict(best)
        opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    logger.info(
        "Training on %d chains (%d wrong / %d fine steps), validating on %d chains; pos_weight %.2f",
        len(train), n_pos, n_neg, len(val), pos_weight.item(),
    )
    val_labels = [e.labels for e in val]
    lengths = [e.feats.shape[0] for e in train]
    bar = tqdm(range(info["epoch"], cfg.max_epochs), desc="epochs", unit="epoch")
    for epoch in bar:
        if epoch - info["best_epoch"] >= cfg.patience and info["best_pr_auc"] >= 0:
            logger.info("Early stop: no better validation PR-AUC for %d epochs", cfg.patience)
            break
        head.train()
        torch.manual_seed(cfg.seed * 1000 + epoch)  # per-epoch seed: a resumed run replays the same epochs
        order = torch.randperm(len(train)).tolist()
        units = problem_groups(train, cfg.seed * 1000 + epoch) if cfg.pair_weight > 0 else order
        total = 0.0
        for idx in batches(lengths, units, cfg.batch_size, cfg.batch_tokens):
            part = [train[j] for j in idx]
            feats, valid, steps, pool, y, w = make_batch(
                part, cfg.use_confidence, cfg.after_error_weight, pos_by_step, by_source
            )
            logits = head(feats, valid, steps, pool)
            m = w > 0
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits[m], y[m], weight=w[m], pos_weight=pos_weight, reduction="sum"
            ) / w[m].sum().clamp(min=1e-6)
            if cfg.pair_weight > 0:
                loss = loss + cfg.pair_weight * pair_loss(logits, branch_pairs(part, cfg.after_error_weight))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            opt.step()
            total += float(loss.detach()) * len(feats)
        val_scores = predict(head, val)
        pr, per_source = source_pr_auc(val, val_scores)
        info["log"].append({"epoch": epoch + 1, "loss": total / len(train), "val_pr_auc": pr,
                            "val_pr_auc_pooled": metrics.pr_auc(val_labels, val_scores), "by_source": per_source})
        bar.set_postfix(loss=f"{total / len(train):.3f}", val_pr_auc=f"{pr:.3f}")
        if not math.isnan(pr) and pr > info["best_pr_auc"]:
            info["best_pr_auc"], info["best_epoch"] = pr, epoch + 1
            best = {k: v.detach().clone() for k, v in head.state_dict().items()}
        info["epoch"] = epoch + 1
        _save_state(state_dir, head, opt, info, best)
    head.load_state_dict(best)
    scores = predict(head, val)
    gold = [metrics.first_error(lab) for lab in val_labels]
    threshold, _ = metrics.best_threshold_by_group(gold, scores, [e.source for e in val])
    head.threshold = threshold
    mean_pr, per_source = source_pr_auc(val, scores)
    head.metrics = {"validation": {**metrics.summary(val_labels, scores, threshold), "n_chains": len(val),
                                   "pr_auc_mean_over_sources": mean_pr, "pr_auc_by_source": per_source}}
    head.training_summary = {
        "config": asdict(cfg),
        "n_train_chains": len(train),
        "n_val_chains": len(val),
        "n_train_steps": {"wrong": n_pos, "fine": n_neg, "after_first_error": n_after},
        "best_epoch": info["best_epoch"],
        "epochs_run": info["epoch"],
        "data": data_summary or {},
    }
    save_head(head, out)
    logger.info(
        "Saved %s: val PR-AUC %.4f, ROC-AUC %.4f, threshold %.3f, %d parameters",
        out, head.metrics["validation"]["pr_auc"], head.metrics["validation"]["roc_auc"], threshold,
        head.num_parameters(),
    )
    return head

