"""Recipe of the GRN paper (refexp.models.grn): retrieval training on cached region maps, and exact
corpus-wide ranking.

- Data: the mined benchmark (build_region_benchmark: corpus.parquet, queries.parquet) and the frozen
  backbone's k x k region maps (extract_region_features: regions.pt in corpus row order; the RPN's
  proposals.parquet + proposals.pt). The backbone never trains, so its maps are computed once.
- Vocabulary: the words of the training split's region expressions seen at least `min_word_count`
  times ("more than once"); the others are <unk>.
- Training examples: one per (query, target) of the training split. GT setting: the positive is the
  target's region map. RPN setting: a proposal with IoU > train_positive_iou to the target (queries
  whose targets have no such proposal are counted). Negatives (Eq. 6): `negatives` positives of other
  queries' sets in the same batch ("sampled from the positive regions for other queries in the same
  minibatch"; in the RPN setting these are false positives for the query). The query text modulates the
  query region and every candidate.
- Evaluation: every test query ranked against the whole test corpus (GT: every test region that survived
  the filters; RPN: every proposal of the test images), the query region itself excluded (RPN: the
  proposals of the query's image with IoU > test_hit_iou to it). A candidate is a target when it is one
  of the query's target regions (GT) or a proposal with IoU > test_hit_iou to one (RPN).
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from torch.utils.data import Dataset
from torchvision.ops import box_iou

from refexp.artifacts import save_torch
from refexp.config import Config, GrnConfig
from refexp.data.skips import DataError, SkipCounter
from refexp.metrics.retrieval import best_target_ranks, recall_from_ranks
from refexp.models.grn import RetrievalModel, build_retrieval_model, retrieval_loss
from refexp.paths import Paths
from refexp.text.embeddings import embedding_matrix
from refexp.text.tokenize import tokenize
from refexp.text.vocab import Vocab
from refexp.training.engine import fit, pick_device, run_key, write_curve
from refexp.training.seed import seed_everything

log = logging.getLogger(__name__)

TRAIN_STAGE, EVAL_STAGE = "train_grn", "evaluate_grn"
MODEL_FILE = "model.pt"
BOX = ["x1", "y1", "x2", "y2"]
TOP_RESULTS = 5  # retrievals kept per test query for the report's figures


# ---------------------------------------------------------------- data


@dataclass
class RetrievalData:
    corpus: pd.DataFrame  # corpus.parquet: one row per filtered region of a split image
    features: torch.Tensor  # (N_corpus, C, k, k) float32, corpus row order
    queries: pd.DataFrame  # queries.parquet: set_id, query_region_id, image_id, split, target_region_ids
    proposals: pd.DataFrame | None = None  # proposals.parquet (RPN setting)
    proposal_features: torch.Tensor | None = None  # (N_proposals, C, k, k) float32


def benchmark_dir(paths: Paths, s: GrnConfig) -> Path:
    return paths.stage_dir("build_region_benchmark", s.dataset)


def features_dir(paths: Paths, s: GrnConfig) -> Path:
    return paths.stage_dir("extract_region_features", s.dataset)


def _read_parquet(path: Path, stage: str) -> pd.DataFrame:
    if not path.exists():
        raise DataError(path, f"missing; run {stage} first")
    return pd.read_parquet(path)


def _read_features(path: Path, rows: int, stage: str) -> torch.Tensor:
    if not path.exists():
        raise DataError(path, f"missing; run {stage} first")
    features = torch.load(path, map_location="cpu", weights_only=True)["features"]
    if features.shape[0] != rows:
        raise DataError(path, f"{features.shape[0]} feature maps for {rows} rows of its table")
    return features.float()


def load_data(paths: Paths, s: GrnConfig, setting: str) -> RetrievalData:
    bench, feats = benchmark_dir(paths, s), features_dir(paths, s)
    corpus = _read_parquet(bench / "corpus.parquet", "build_region_benchmark").reset_index(drop=True)
    queries = _read_parquet(bench / "queries.parquet", "build_region_benchmark").reset_index(drop=True)
    data = RetrievalData(corpus, _read_features(feats / "regions.pt", len(corpus), "extract_region_features"), queries)
    if setting == "rpn":
        data.proposals = _read_parquet(feats / "proposals.parquet", "extract_region_features").reset_index(drop=True)
        data.proposal_features = _read_features(feats / "proposals.pt", len(data.proposals), "extract_region_features")
    return data


def build_vocab(corpus: pd.DataFrame, min_count: int) -> Vocab:
    train = corpus[corpus["split"] == "train"]
    if train.empty:
        raise DataError("<corpus.parquet>", "no training regions to build the vocabulary from")
    return Vocab.build((tokenize(e) for e in train["expression"]), min_count=min_count)


def encode(expressions, vocab: Vocab, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(N, T) ids (0 = pad), (N,) lengths, and how many expressions have no known word (scored through
    <unk>; an expression with no token at all is a single <unk>)."""
    ids = [vocab.encode(tokenize(e))[:max_tokens] or [vocab.unk_id] for e in expressions]
    unknown = sum(all(i == vocab.unk_id for i in seq) for seq in ids)
    tokens = torch.zeros(len(ids), max(len(i) for i in ids), dtype=torch.long)
    for row, seq in enumerate(ids):
        tokens[row, :len(seq)] = torch.tensor(seq)
    return tokens, torch.tensor([len(i) for i in ids]), unknown


@dataclass(frozen=True)
class QueryTargets:
    """The queries of one split with their corpus rows, after the bad-input checks."""

    queries: pd.DataFrame  # the kept queries.parquet rows
    query_row: np.ndarray  # (Q,) corpus row of each query region
    target_rows: list[np.ndarray]  # per query, corpus rows of its targets (all in the split)


QUERIES_FILE = "queries.parquet"


def split_queries(data: RetrievalData, split: str, skips: SkipCounter) -> QueryTargets:
    """A query whose region is not in the corpus, or whose targets all fall outside its split (or outside
    the corpus), is a counted skip; targets in another split are dropped from the query and counted."""
    corpus = data.corpus
    row_of = pd.Series(np.arange(len(corpus)), index=corpus["region_id"].astype(str).to_numpy())
    split_of = corpus["split"].astype(str).to_numpy()
    kept, query_rows, target_rows = [], [], []
    for q in data.queries[data.queries["split"] == split].itertuples():
        skips.read("queries")
        record = f"set {q.set_id}, query region {q.query_region_id}"
        qrow = row_of.get(str(q.query_region_id))
        if qrow is None:
            skips.add("query_region_not_in_corpus", QUERIES_FILE, record)
            continue
        rows = np.array([row_of[t] for t in map(str, q.target_region_ids) if t in row_of.index], dtype=np.int64)
        if len(rows) < len(q.target_region_ids):  # counted per target, the query may still stand
            skips.add("targets_not_in_corpus", QUERIES_FILE, record, len(q.target_region_ids) - len(rows))
        same = rows[split_of[rows] == split]
        if len(same) < len(rows):
            skips.add("targets_in_other_split", QUERIES_FILE, record, len(rows) - len(same))
        if len(same) == 0:
            skips.add("query_without_target_in_split", QUERIES_FILE, record)
            continue
        kept.append(q.Index)
        query_rows.append(int(qrow))
        target_rows.append(same)
    return QueryTargets(data.queries.loc[kept].reset_index(drop=True), np.asarray(query_rows, np.int64), target_rows)


def proposal_matches(data: RetrievalData, gt_rows: np.ndarray, threshold: float) -> sparse.csr_matrix:
    """(N_gt_rows, N_proposals) boolean: proposal of the same image with IoU > threshold to the region."""
    props, corpus = data.proposals, data.corpus
    prop_boxes = torch.tensor(props[BOX].to_numpy(np.float64))
    gt = corpus.iloc[gt_rows]
    by_image = pd.Series(np.arange(len(props))).groupby(props["image_id"].astype(str).to_numpy()).agg(list)
    ii, jj = [], []
    for image_id, local in pd.Series(np.arange(len(gt_rows))).groupby(gt["image_id"].astype(str).to_numpy()):
        cand = by_image.get(image_id)
        if cand is None:
            continue
        # Inclusive pixel boxes: +1 on the far side gives their true extent to box_iou.
        a = torch.tensor(gt[BOX].to_numpy(np.float64)[local.to_numpy()]) + torch.tensor([0, 0, 1, 1])
        b = prop_boxes[cand] + torch.tensor([0, 0, 1, 1])
        hit = (box_iou(a, b) > threshold).nonzero().numpy()
        ii.append(local.to_numpy()[hit[:, 0]])
        jj.append(np.asarray(cand)[hit[:, 1]])
    i = np.concatenate(ii) if ii else np.zeros(0, np.int64)
    j = np.concatenate(jj) if jj else np.zeros(0, np.int64)
    return sparse.csr_matrix((np.ones(len(i), bool), (i, j)), shape=(len(gt_rows), len(props)))


class PairExamples(Dataset):
    """One (query, positive) pair per item: region maps, the query's tokens and its set."""

    def __init__(self, query_maps: torch.Tensor, positive_maps: torch.Tensor, tokens: torch.Tensor,
                 lengths: torch.Tensor, set_ids: torch.Tensor):
        self.query_maps, self.positive_maps = query_maps, positive_maps  # (M, C, k, k) each
        self.tokens, self.lengths, self.set_ids = tokens, lengths, set_ids  # (M, T), (M,), (M,)

    def __len__(self) -> int:
        return len(self.set_ids)

    def __getitem__(self, i: int) -> dict:
        return {"query": self.query_maps[i], "positive": self.positive_maps[i], "tokens": self.tokens[i],
                "lengths": self.lengths[i], "set_id": self.set_ids[i]}


def training_pairs(data: RetrievalData, s: GrnConfig, setting: str, vocab: Vocab, max_tokens: int,
                   skips: SkipCounter, source: Path) -> PairExamples:
    """The (query, positive) pairs of the training queries; `source` is the file an error names (the
    benchmark's queries for the GT setting, the proposals for RPN)."""
    targets = split_queries(data, "train", skips)
    if setting == "rpn":
        rows = np.unique(np.concatenate(targets.target_rows))
        match = proposal_matches(data, rows, s.train_positive_iou)
        local = {r: i for i, r in enumerate(rows)}
    q_index, pos_maps_index, set_ids, texts = [], [], [], []
    expr = data.corpus["expression"].astype(str).to_numpy()
    for qrow, trows, set_id in zip(targets.query_row, targets.target_rows, targets.queries["set_id"]):
        found = 0
        for t in trows:
            if setting == "gt":
                positives = [int(t)]
            else:  # every proposal matching the target is a positive of its own
                positives = list(match[local[t]].indices)
            found += len(positives)
            for p in positives:
                q_index.append(qrow)
                pos_maps_index.append(p)
                set_ids.append(int(set_id))
                texts.append(expr[qrow])
        if setting == "rpn" and found == 0:
            skips.add("query_without_positive_proposal", "proposals.parquet", f"set {set_id}, query row {qrow}")
    if not q_index:
        raise DataError(source, "no training pairs (no training query has a positive)")
    tokens, lengths, _ = encode(texts, vocab, max_tokens)
    positive_source = data.features if setting == "gt" else data.proposal_features
    return PairExamples(data.features[q_index], positive_source[pos_maps_index], tokens, lengths,
                        torch.tensor(set_ids))


def collate(items: list[dict]) -> dict:
    width = max(int(it["lengths"]) for it in items)
    return {"query": torch.stack([it["query"] for it in items]),  # (B, C, k, k)
            "positive": torch.stack([it["positive"] for it in items]),  # (B, C, k, k)
            "tokens": torch.stack([it["tokens"][:width] for it in items]),  # (B, T)
            "lengths": torch.stack([it["lengths"] for it in items]),  # (B,)
            "set_id": torch.stack([it["set_id"] for it in items])}  # (B,)


def batch_negatives(set_ids: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n) indices into the batch: for each query, n other items of other sets, drawn at random
    (from the engine's seeded stream), with replacement only when the batch has fewer than n."""
    other = set_ids[:, None] != set_ids[None, :]  # (B, B)
    if not bool(other.any(1).all()):
        raise ValueError("a training batch holds a single set: no negatives for Eq. 6")
    noise = torch.rand(other.shape).masked_fill(~other, -1.0)
    if int(other.sum(1).min()) >= n:
        return noise.topk(n, dim=1).indices
    return torch.multinomial(other.float(), n, replacement=True)


def make_loss_fn(model: RetrievalModel, negatives: int, temperature: float):
    def loss_fn(model: RetrievalModel, batch: dict):
        b = batch["query"].shape[0]
        neg = batch_negatives(batch["set_id"], negatives)  # (B, n)
        cand = torch.cat([batch["positive"][:, None], batch["positive"][neg]], 1)  # (B, 1+n, C, k, k)
        n_cand = cand.shape[1]
        tokens = batch["tokens"].repeat_interleave(n_cand, 0)  # each candidate under its query's text
        lengths = batch["lengths"].repeat_interleave(n_cand, 0)
        query = model.embed(batch["query"], batch["tokens"], batch["lengths"])  # (B, R)
        candidates = model.embed(cand.flatten(0, 1), tokens, lengths).view(b, n_cand, -1)  # (B, 1+n, R)
        loss = retrieval_loss(query, candidates, temperature)
        with torch.no_grad():
            sims = (query[:, None] * candidates).sum(-1)  # (B, 1+n)
            accuracy = (sims.argmax(1) == 0).float().mean()
        return loss, {"train/positive_first": float(accuracy)}
    return loss_fn


# ---------------------------------------------------------------- training


def grn_run_key(cfg: Config, variant: str, files: list[Path]) -> str:
    import refexp.models.grn

    s = cfg.grn
    params = {**s.model_dump(include={"dataset", "backbone", "pretrained", "image_size", "region_map_size",
                                      "embeddings", "embeddings_file", "min_word_count", "temperature",
                                      "negatives", "train_positive_iou"}),
              "model": s.variant_model(variant).model_dump()}
    return run_key(files, [refexp.models.grn, sys.modules[__name__]], params)


def build(s: GrnConfig, variant: str, vocab: Vocab, channels: int, seed: int) -> RetrievalModel:
    m = s.variant_model(variant)
    matrix, _ = embedding_matrix(s.embeddings, vocab, m.embed_dim, s.embeddings_file, seed=seed)
    return build_retrieval_model(m, channels, s.region_map_size, matrix)


def training_files(paths: Paths, s: GrnConfig, setting: str) -> list[Path]:
    files = [benchmark_dir(paths, s) / "corpus.parquet", benchmark_dir(paths, s) / "queries.parquet",
             features_dir(paths, s) / "regions.pt"]
    if setting == "rpn":
        files += [features_dir(paths, s) / "proposals.parquet", features_dir(paths, s) / "proposals.pt"]
    return files


def train(cfg: Config, paths: Paths, variant: str, progress: bool = True) -> dict:
    s = cfg.grn
    m = s.variant_model(variant)
    data = load_data(paths, s, m.setting)
    vocab = build_vocab(data.corpus, s.min_word_count)
    skips = SkipCounter()
    source = (benchmark_dir(paths, s) / "queries.parquet" if m.setting == "gt"
              else features_dir(paths, s) / "proposals.parquet")
    examples = training_pairs(data, s, m.setting, vocab, m.max_tokens, skips, source)
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    model = build(s, variant, vocab, data.features.shape[1], cfg.run.seed)
    out = paths.model_dir("grn", variant)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"train/pairs": len(examples), "train/vocabulary": len(vocab),
               "train/parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    metrics.update(skips.as_metrics("train/skipped/"))
    if metrics["train/parameters"] == 0:  # Visual Feature: cosines of the CNN features, nothing to learn
        save_torch(model.state_dict(), out / MODEL_FILE)
        write_curve(paths.plots(TRAIN_STAGE, variant), [])  # the stage's plot: a header, no step
        return {**metrics, "train/steps": 0}
    training = cfg.training.merged(s.training, "grn.training")
    started = time.perf_counter()
    result = fit(model, examples, make_loss_fn(model, s.negatives, s.temperature), training, out,
                 seed=cfg.run.seed, collate_fn=collate, curve_path=paths.plots(TRAIN_STAGE, variant),
                 deterministic=cfg.run.deterministic, progress=progress,
                 run_key=grn_run_key(cfg, variant, training_files(paths, s, m.setting)))
    if not result.get("train/stopped_early"):
        save_torch(model.state_dict(), out / MODEL_FILE)
    metrics.update(result)
    metrics["train/stage_seconds"] = round(time.perf_counter() - started, 2)
    return metrics


# ---------------------------------------------------------------- evaluation


def load_trained(cfg: Config, paths: Paths, variant: str, vocab: Vocab, channels: int) -> RetrievalModel:
    weights = paths.model_dir("grn", variant) / MODEL_FILE
    if not weights.exists():
        raise DataError(weights, f"missing; run {TRAIN_STAGE} {variant} first")
    model = build(cfg.grn, variant, vocab, channels, cfg.run.seed)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval().to(pick_device())  # ranking on CUDA when present


@dataclass(frozen=True)
class TestCorpus:
    """The candidates of one setting: their maps, and per query which are targets and which are excluded."""

    maps: torch.Tensor  # (N, C, k, k)
    table: pd.DataFrame  # one row per candidate: image_id, box, and region_id (GT) or proposal index (RPN)
    is_target: np.ndarray  # (Q, N) bool
    excluded: np.ndarray  # (Q, N) bool: the query region itself


def test_corpus(data: RetrievalData, targets: QueryTargets, setting: str, hit_iou: float, split: str = "test"
                ) -> TestCorpus:
    corpus = data.corpus
    test_rows = np.flatnonzero(corpus["split"].astype(str).to_numpy() == split)
    if len(test_rows) == 0:
        raise DataError("<corpus.parquet>", f"empty {split} corpus: no {split} region survived the benchmark")
    q = len(targets.query_row)
    # (Q, N_test) incidences of each query's targets and of the query region among the test regions.
    position = np.full(len(corpus), -1)
    position[test_rows] = np.arange(len(test_rows))
    t_i = np.repeat(np.arange(q), [len(t) for t in targets.target_rows])
    t_j = position[np.concatenate(targets.target_rows)] if q else np.zeros(0, np.int64)
    target_of = sparse.csr_matrix((np.ones(len(t_i), bool), (t_i, t_j)), shape=(q, len(test_rows)))
    query_of = sparse.csr_matrix((np.ones(q, bool), (np.arange(q), position[targets.query_row])),
                                 shape=(q, len(test_rows)))
    if setting == "gt":
        table = corpus.iloc[test_rows][["image_id", "region_id", *BOX]].reset_index(drop=True)
        return TestCorpus(data.features[test_rows], table, target_of.toarray(), query_of.toarray())
    props = data.proposals
    prop_rows = np.flatnonzero(props["split"].astype(str).to_numpy() == split)
    if len(prop_rows) == 0:
        raise DataError("<proposals.parquet>", f"no {split} proposals: the RPN proposed nothing on the {split} images")
    match = proposal_matches(data, test_rows, hit_iou)[:, prop_rows].astype(np.int32)  # (N_test, N_prop)
    is_target = (target_of.astype(np.int32) @ match).toarray() > 0
    excluded = (query_of.astype(np.int32) @ match).toarray() > 0
    table = props.iloc[prop_rows].reset_index(drop=True)
    return TestCorpus(data.proposal_features[prop_rows], table, is_target & ~excluded, excluded)


def evaluate(cfg: Config, paths: Paths, variant: str, split: str = "test"
             ) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Metrics, per-query ranks (for intervals resampled by query image) and the top results."""
    s = cfg.grn
    m = s.variant_model(variant)
    data = load_data(paths, s, m.setting)
    vocab = build_vocab(data.corpus, s.min_word_count)
    skips = SkipCounter()
    targets = split_queries(data, split, skips)
    if not len(targets.query_row):
        raise DataError("<queries.parquet>", f"no {split} query to evaluate")
    cands = test_corpus(data, targets, m.setting, s.test_hit_iou, split)
    model = load_trained(cfg, paths, variant, vocab, data.features.shape[1])
    device = next(iter(model.buffers()), torch.zeros(0)).device if not list(model.parameters()) \
        else next(model.parameters()).device
    expressions = data.corpus["expression"].astype(str).to_numpy()[targets.query_row]
    tokens, lengths, unknown = encode(expressions, vocab, m.max_tokens)
    started = time.perf_counter()
    with torch.no_grad():
        cache = model.prepare_corpus(cands.maps.to(device))
        scores = model.score(data.features[targets.query_row].to(device), tokens.to(device), lengths.to(device),
                             cache, s.eval_chunk).float().cpu().numpy()  # (Q, N)
    seconds = time.perf_counter() - started
    scores[cands.excluded] = -np.inf
    has_target = cands.is_target.any(1)
    ranks = np.full(len(scores), len(cands.table) + 1, np.int64)  # no target among the candidates: never found
    if has_target.any():
        ranks[has_target] = best_target_ranks(scores[has_target], cands.is_target[has_target])
    metrics = {f"{split}/{k}": v for k, v in recall_from_ranks(ranks, tuple(s.recall_ks)).items()}
    metrics.update({f"{split}/queries": int(len(ranks)), f"{split}/candidates": int(len(cands.table)),
                    f"{split}/queries_without_target_candidate": int((~has_target).sum()),
                    f"{split}/targets_per_query": float(cands.is_target.sum(1).mean()),
                    f"{split}/queries_no_known_word": int(unknown),
                    f"{split}/ms_per_query": round(1000 * seconds / len(ranks), 3),
                    "eval/device": str(device)})
    metrics.update(skips.as_metrics(f"{split}/skipped/"))
    rank_table = pd.DataFrame({"query_region_id": targets.queries["query_region_id"].astype(str).to_numpy(),
                               "image_id": targets.queries["image_id"].astype(str).to_numpy(),
                               "expression": expressions, "set_id": targets.queries["set_id"].to_numpy(), "rank": ranks,
                               "targets": cands.is_target.sum(1)})
    return metrics, rank_table, top_results(scores, cands, targets, TOP_RESULTS)


def top_results(scores: np.ndarray, cands: TestCorpus, targets: QueryTargets, k: int) -> pd.DataFrame:
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (Q, k)
    q = np.repeat(np.arange(len(top)), k)
    picked = cands.table.iloc[top.ravel()].reset_index(drop=True)
    return pd.DataFrame({"query_region_id": targets.queries["query_region_id"].astype(str).to_numpy()[q],
                         "position": np.tile(np.arange(1, k + 1), len(top)),
                         "image_id": picked["image_id"].astype(str).to_numpy(),
                         **{c: picked[c].to_numpy() for c in BOX},
                         "score": scores[q, top.ravel()], "hit": cands.is_target[q, top.ravel()]})
