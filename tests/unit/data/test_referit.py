"""ReferIt loader: real annotations in ../shared/data/referit, bad input on tiny layouts in tmp."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io

from refexp.data import referit
from refexp.data.schema import COLUMNS
from refexp.data.skips import DataError, SkipCounter
from tests.conftest import require_shared

# Counts stated in PROVENANCE.md (Hu et al.'s released query files).
REAL_COUNTS = {"trainval": 59_976, "test": 60_105, "train": 54_134, "val": 5_842}


@pytest.fixture(scope="module")
def real_root() -> Path:
    return require_shared("referit")


@pytest.fixture(scope="module")
def real_split(real_root):
    """split -> (frame, skips), each real split loaded once per module."""
    loaded: dict[str, tuple] = {}

    def get(split: str):
        if split not in loaded:
            skips = SkipCounter()
            loaded[split] = referit.load(real_root, split, skips=skips), skips
        return loaded[split]
    return get


@pytest.mark.shared
@pytest.mark.parametrize("split", list(REAL_COUNTS))
def test_real_split_sizes(real_root, real_split, split):
    df, skips = real_split(split)
    assert len(df) == REAL_COUNTS[split]
    assert skips.total == 0
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert (df["split"] == split).all()
    # Every expression of the raw file, and nothing else.
    raw = json.loads((real_root / "annotations" / f"referit_query_{split}.json").read_text())
    assert df["region_id"].nunique() == len(raw)
    assert df["image_id"].nunique() == len({k.rsplit("_", 1)[0] for k in raw})


@pytest.mark.shared
def test_real_rows_match_raw_files(real_root, real_split):
    df, _ = real_split("test")
    ann = real_root / "annotations"
    bbox = json.loads((ann / "referit_bbox.json").read_text())
    queries = json.loads((ann / "referit_query_test.json").read_text())
    rows = df[df["region_id"] == "38100_2"]
    assert list(rows["expression"]) == queries["38100_2"]
    assert rows[["x1", "y1", "x2", "y2"]].iloc[0].tolist() == bbox["38100_2"]
    assert (rows["image_width"] == 480).all() and (rows["image_height"] == 360).all()
    # The two real images present give image paths; all others are absent.
    with_image = df.dropna(subset=["image_path"])
    assert set(with_image["image_id"]) == {"38100", "40429"}
    assert all(Path(p).is_file() for p in with_image["image_path"])
    assert df["kind"].isna().all() and df["mask_rle"].isna().all()
    # Boxes are inclusive and inside their images.
    assert ((df.x2 >= df.x1) & (df.y2 >= df.y1)).all()
    assert ((df.x2 <= df.image_width - 1) & (df.y2 <= df.image_height - 1)).all()


@pytest.mark.shared
def test_real_tokens(real_split):
    df, _ = real_split("val")
    for tokens in df["tokens"].head(500):
        assert all(t == t.lower() and t.isalnum() for t in tokens)


@pytest.mark.shared
def test_real_proposals(real_root):
    boxes = referit.load_proposals(real_root / "proposals" / "40429.txt")
    assert boxes.shape == (100, 4) and boxes.dtype == np.int64
    assert boxes[0].tolist() == [126, 234, 200, 305]
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert (boxes[:, 2] < 480).all() and (boxes[:, 3] < 360).all()  # 40429.jpg is 480x360
    assert referit.proposals_path(real_root, "40429") == real_root / "proposals" / "40429.txt"


# ---------------------------------------------------------------- tiny layouts

def write_layout(root: Path, queries: dict, boxes: dict, sizes: dict, split: str = "train",
                 annotations: str = "annotations", **extra_json) -> Path:
    ann = root / annotations
    ann.mkdir(parents=True, exist_ok=True)
    (ann / f"referit_query_{split}.json").write_text(json.dumps(queries))
    (ann / "referit_bbox.json").write_text(json.dumps(boxes))
    (ann / "referit_imsize.json").write_text(json.dumps(sizes))
    for name, data in extra_json.items():
        (ann / f"{name}.json").write_text(json.dumps(data))
    return root


GOOD_QUERIES = {"1_1": ["the red car", "car on the left"], "1_2": ["sky"], "2_1": ["man in hat"]}
GOOD_BOXES = {"1_1": [0, 10, 49, 59], "1_2": [0, 0, 99, 9], "2_1": [5, 5, 20, 30]}
GOOD_SIZES = {"1.jpg": [100, 80], "2.jpg": [40, 60]}


def test_tiny_layout_and_images(tmp_path):
    root = write_layout(tmp_path, GOOD_QUERIES, GOOD_BOXES, GOOD_SIZES)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.jpg").write_bytes(b"jpg")
    df = referit.load(root, "train")
    assert len(df) == 4
    assert df["tokens"].tolist()[0] == ["the", "red", "car"]
    assert set(df.loc[df.image_id == "1", "image_path"]) == {str(tmp_path / "images" / "1.jpg")}
    assert df.loc[df.image_id == "2", "image_path"].isna().all()
    assert df.loc[df.region_id == "2_1", ["image_width", "image_height"]].iloc[0].tolist() == [40, 60]


def test_official_flat_layout(tmp_path):
    """Hu et al.'s extracted layout: exp-referit/data/*.json, referit-dataset/images/."""
    root = write_layout(tmp_path, GOOD_QUERIES, GOOD_BOXES, GOOD_SIZES, annotations="exp-referit/data")
    images = tmp_path / "exp-referit" / "referit-dataset" / "images"
    images.mkdir(parents=True)
    (images / "2.jpg").write_bytes(b"jpg")
    (tmp_path / "exp-referit" / "data" / "referit_train_imlist.txt").write_text("1\n2\n")
    df = referit.load(root, "train")
    assert len(df) == 4
    assert df.loc[df.image_id == "2", "image_path"].iloc[0] == str(images / "2.jpg")


def test_kinds_sidecar(tmp_path):
    kinds = {"1_1": ["attribute", "position"], "1_2": ["position"], "2_1": ["relation"]}
    root = write_layout(tmp_path, GOOD_QUERIES, GOOD_BOXES, GOOD_SIZES, referit_expression_kinds=kinds)
    df = referit.load(root, "train")
    assert df["kind"].tolist() == ["attribute", "position", "position", "relation"]


def test_kinds_sidecar_length_mismatch_is_error(tmp_path):
    kinds = {"1_1": ["attribute"]}
    root = write_layout(tmp_path, GOOD_QUERIES, GOOD_BOXES, GOOD_SIZES, referit_expression_kinds=kinds)
    with pytest.raises(DataError, match=r"referit_expression_kinds\.json.*1_1"):
        referit.load(root, "train")


def test_missing_file_names_file_and_root(tmp_path):
    root = write_layout(tmp_path, GOOD_QUERIES, GOOD_BOXES, GOOD_SIZES)
    (tmp_path / "annotations" / "referit_bbox.json").unlink()
    with pytest.raises(DataError) as err:
        referit.load(root, "train")
    assert "referit_bbox.json" in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(DataError, match="referit_query_test.json"):
        referit.load(root, "test")
    with pytest.raises(DataError, match="root directory not found"):
        referit.load(tmp_path / "absent", "train")


def test_truncated_json_names_file(tmp_path):
    root = write_layout(tmp_path, GOOD_QUERIES, GOOD_BOXES, GOOD_SIZES)
    path = tmp_path / "annotations" / "referit_imsize.json"
    path.write_text(path.read_text()[:-7])
    with pytest.raises(DataError) as err:
        referit.load(root, "train")
    assert type(err.value) is DataError
    assert str(path) in str(err.value) and "malformed JSON" in str(err.value)


def test_wrong_json_shape_names_file_and_record(tmp_path):
    root = write_layout(tmp_path, GOOD_QUERIES, {**GOOD_BOXES, "1_2": [0, 0, 5]}, GOOD_SIZES)
    with pytest.raises(DataError, match=r"referit_bbox\.json, record '1_2'"):
        referit.load(root, "train")
    root = write_layout(tmp_path, {**GOOD_QUERIES, "2_1": "man in hat"}, GOOD_BOXES, GOOD_SIZES)
    with pytest.raises(DataError, match=r"referit_query_train\.json, record '2_1'"):
        referit.load(root, "train")
    root = write_layout(tmp_path, GOOD_QUERIES, GOOD_BOXES, {**GOOD_SIZES, "2.jpg": [0, 60]})
    with pytest.raises(DataError, match=r"referit_imsize\.json, record '2\.jpg'"):
        referit.load(root, "train")
    root = write_layout(tmp_path, GOOD_QUERIES, {**GOOD_BOXES, "1_1": [0, True, 5, 5]}, GOOD_SIZES)
    with pytest.raises(DataError, match=r"referit_bbox\.json, record '1_1'"):
        referit.load(root, "train")


def test_region_without_box_is_counted_skip(tmp_path):
    boxes = {k: v for k, v in GOOD_BOXES.items() if k != "1_1"}
    root = write_layout(tmp_path, GOOD_QUERIES, boxes, GOOD_SIZES)
    skips = SkipCounter()
    df = referit.load(root, "train", skips=skips)
    assert len(df) == 2 and "1_1" not in set(df.region_id)
    assert skips.as_metrics() == {"skipped/region_without_box": 2}  # both expressions of 1_1


def test_bad_boxes_and_expressions_are_counted_skips(tmp_path):
    queries = {**GOOD_QUERIES, "1_3": ["tree"], "1_4": ["rock"], "1_5": ["bush"], "2_2": ["", "  \t", "dog"]}
    boxes = {**GOOD_BOXES,
             "1_3": [90, 0, 100, 10],   # x2 = 100 = width: beyond the 100-px image
             "1_4": [-1, 0, 10, 10],    # negative x1
             "1_5": [30, 30, 29, 40],   # x2 < x1: zero width
             "2_2": [0, 0, 39, 59]}     # exactly the whole 40x60 image: fine
    root = write_layout(tmp_path, queries, boxes, GOOD_SIZES)
    skips = SkipCounter()
    df = referit.load(root, "train", skips=skips)
    assert skips.as_metrics() == {"skipped/box_outside_image": 2, "skipped/empty_expression": 2,
                                  "skipped/nonpositive_box_size": 1}
    assert len(df) == 5 and df.loc[df.region_id == "2_2", "expression"].tolist() == ["dog"]
    assert len(df) + skips.total == sum(len(v) for v in queries.values())


def test_image_list_and_imcrop_cross_checks(tmp_path):
    root = write_layout(tmp_path, GOOD_QUERIES, GOOD_BOXES, GOOD_SIZES,
                        referit_imcrop={"1.jpg": ["1_1"], "2.jpg": ["2_1"]})
    (tmp_path / "annotations" / "referit_train_imlist.txt").write_text("1\n")
    skips = SkipCounter()
    df = referit.load(root, "train", skips=skips)
    assert df["region_id"].tolist() == ["1_1", "1_1"]
    assert skips.as_metrics() == {"skipped/image_not_in_split": 1, "skipped/region_not_in_imcrop": 1}


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="unknown ReferIt split"):
        referit.load(tmp_path, "testA")


# ---------------------------------------------------------------- masks

def test_read_mask_region_is_zero_pixels(tmp_path):
    seg = np.ones((6, 8), dtype=np.uint8)
    seg[2:4, 1:5] = 0
    mask_dir = tmp_path / "ImageCLEF" / "mask"
    mask_dir.mkdir(parents=True)
    scipy.io.savemat(mask_dir / "7_3.mat", {"segimg_t": seg})
    path = referit.mask_path(tmp_path, "7_3")
    assert path == mask_dir / "7_3.mat"
    mask = referit.read_mask(path, image_size=(8, 6))
    assert mask.dtype == bool and mask.shape == (6, 8)
    assert mask.sum() == 8 and mask[2:4, 1:5].all()
    with pytest.raises(DataError, match=r"7_3\.mat.*8x6"):
        referit.read_mask(path, image_size=(6, 8))
    with pytest.raises(DataError, match="9_9"):
        referit.mask_path(tmp_path, "9_9")


def test_read_mask_bad_files(tmp_path):
    scipy.io.savemat(tmp_path / "nokey.mat", {"other": np.zeros((2, 2))})
    with pytest.raises(DataError, match=r"nokey\.mat.*segimg_t"):
        referit.read_mask(tmp_path / "nokey.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(DataError, match=r"junk\.mat"):
        referit.read_mask(tmp_path / "junk.mat")


def test_proposals_bad_files(tmp_path):
    (tmp_path / "1.txt").write_text("1 2 3\n4 5 6\n")
    with pytest.raises(DataError, match=r"1\.txt.*4 columns"):
        referit.load_proposals(tmp_path / "1.txt")
    (tmp_path / "2.txt").write_text("1 2 x 4\n")
    with pytest.raises(DataError, match=r"2\.txt"):
        referit.load_proposals(tmp_path / "2.txt")
    (tmp_path / "3.txt").write_text("")
    assert referit.load_proposals(tmp_path / "3.txt").shape == (0, 4)


# ---------------------------------------------------------------- the synthetic world

def test_reads_the_synthetic_world(tmp_path):
    from refexp.data import synthetic

    counts = synthetic.generate(tmp_path, 8, seed=3, formats=("referit",))
    root = tmp_path / "referit"
    skips = SkipCounter()
    df = referit.load(root, "all", skips=skips)
    assert skips.total == 0 and len(df) == counts["referit_expressions"]
    assert df["region_id"].nunique() == counts["referit_regions"]
    for kind in ("attribute", "position", "relation"):
        assert (df["kind"] == kind).sum() == counts[f"expressions_{kind}"]
    assert df["image_path"].map(lambda p: Path(p).is_file()).all()
    parts = sum(len(referit.load(root, s)) for s in ("train", "val", "test"))
    assert parts == len(df)
    layout = referit.ReferItLayout.discover(root)
    for row in df.drop_duplicates("region_id").itertuples():
        mask = referit.read_mask(layout.mask_path(row.region_id), (row.image_width, row.image_height))
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == (row.x1, row.y1, row.x2, row.y2), row.region_id
    proposals = referit.load_proposals(layout.proposals_path(df["image_id"].iloc[0]))
    assert proposals.ndim == 2 and proposals.shape[1] == 4


def test_released_scrc_vocabulary(real_root, tmp_path):
    from refexp.data.prepare import referit_vocab

    path, words = referit.released_vocabulary(real_root)
    assert path.name == "vocabulary_scrc.txt"
    # 8,800 tokens in the file, the first of them <unk>: 8,799 words, in the file's order.
    assert len(words) == 8799 and words[:3] == ["a", "on", "of"] and "<unk>" not in words
    assert ', "' in words  # the release's tokenizer keeps punctuation runs; ours never emits them
    vocab, source = referit_vocab(real_root, pd.Series([["zzz"]]), 1, "released")
    assert len(vocab) == 4 + 8799 and vocab.encode(["on"]) == [5] and "released vocabulary_scrc.txt" in source
    own, source = referit_vocab(real_root, pd.Series([["zzz", "a"]]), 1, "train")
    assert own.words[4:] == ("a", "zzz") and source.startswith("train split")
    assert referit.released_vocabulary(tmp_path) is None
    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab" / "vocabulary_scrc.txt").write_text("<unk>\nred\nball\nred\n")
    with pytest.raises(DataError, match="vocabulary_scrc.txt.*line 4.*'red' is listed twice"):
        referit.released_vocabulary(tmp_path)
