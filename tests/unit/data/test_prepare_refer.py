"""prepare_refer: a refer API layout (refs(<split_by>).p + instances.json + COCO images) -> tuples with
boxes, masks, tokens and a train-only vocabulary, and metrics in which every sentence read is a row or
a counted skip.

No real refs(*).p exists in ../shared/data (PROVENANCE.md: no sample of it is stored anywhere), so each
test builds a tiny layout by hand in tmp_path, in the released structure: a list of ref dicts pickled
with protocol 2, a COCO-format instances.json (polygons, an uncompressed and a compressed RLE), and
JPEGs written with PIL at the sizes instances.json gives.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from refexp.config import DatasetConfig
from refexp.data import refer
from refexp.data.coco import decode_rle
from refexp.data.prepare import prepare_refer
from refexp.data.skips import DataError

IMAGE_DIR = Path("images/mscoco/images/train2014")


def sentence(sent_id: int, raw: str) -> dict:
    tokens = raw.lower().split()
    return {"tokens": tokens, "raw": raw, "sent": " ".join(tokens), "sent_id": sent_id}


def make_ref(ref_id: int, ann_id: int, image_id: int, split: str, sentences: list[dict], category_id: int = 1):
    return {"ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "split": split, "category_id": category_id,
            "sent_ids": [s["sent_id"] for s in sentences],
            "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg", "sentences": sentences}


def file_name(image_id: int) -> str:
    return f"COCO_train2014_{image_id:012d}.jpg"


# image id -> (width, height)
SIZES = {1: (40, 30), 2: (20, 20), 3: (24, 16), 4: (16, 12)}

# A 6 x 4 block at (x 3..8, y 2..5) of image 4, as COCO compressed RLE (what crowd annotations hold).
_BLOCK = np.zeros((12, 16), dtype=np.uint8)
_BLOCK[2:6, 3:9] = 1
BLOCK_RLE = mask_utils.encode(np.asfortranarray(_BLOCK))
BLOCK_RLE = {"size": BLOCK_RLE["size"], "counts": BLOCK_RLE["counts"].decode("ascii")}


def annotations() -> list[dict]:
    return [
        # polygon: the 10 x 5 rectangle x 2..11, y 3..7 of image 1
        {"id": 101, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 50.0, "bbox": [2, 3, 10, 5],
         "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8]]},
        # uncompressed RLE: image 2's first column (column-major counts)
        {"id": 102, "image_id": 2, "category_id": 3, "iscrowd": 1, "area": 20.0, "bbox": [0, 0, 1, 20],
         "segmentation": {"size": [20, 20], "counts": [0, 20, 380]}},
        # polygon on the val image
        {"id": 103, "image_id": 3, "category_id": 2, "iscrowd": 0, "area": 24.0, "bbox": [4, 4, 6, 4],
         "segmentation": [[4, 4, 10, 4, 10, 8, 4, 8]]},
        # compressed RLE on the testA image
        {"id": 104, "image_id": 4, "category_id": 1, "iscrowd": 1, "area": 24.0, "bbox": [3, 2, 6, 4],
         "segmentation": BLOCK_RLE},
    ]


def base_refs() -> list[dict]:
    return [
        make_ref(0, 101, 1, "train", [sentence(0, "Man on the left"), sentence(1, "guy in RED shirt")]),
        make_ref(1, 102, 2, "train", [sentence(2, "left zebra")], category_id=3),
        make_ref(2, 103, 3, "val", [sentence(3, "purple woman on the left")], category_id=2),
        make_ref(3, 104, 4, "testA", [sentence(4, "man right")]),
    ]


def write_layout(raw: Path, refs: list | None = None, dataset: str = "refcoco", split_by: str = "unc",
                 images: bool = True, refs_bytes: bytes | None = None) -> Path:
    """raw/<dataset>/refs(<split_by>).p + instances.json, and raw/images/mscoco/images/train2014/*.jpg."""
    folder = raw / dataset
    folder.mkdir(parents=True, exist_ok=True)
    refs = base_refs() if refs is None else refs
    data = pickle.dumps(refs, protocol=2) if refs_bytes is None else refs_bytes
    (folder / refer.refs_file(split_by)).write_bytes(data)
    (folder / "instances.json").write_text(json.dumps({
        "images": [{"id": i, "file_name": file_name(i), "width": w, "height": h} for i, (w, h) in SIZES.items()],
        "annotations": annotations(),
        "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                       {"id": 2, "name": "woman", "supercategory": "person"},
                       {"id": 3, "name": "zebra", "supercategory": "animal"}]}))
    if images:
        image_dir = raw / IMAGE_DIR
        image_dir.mkdir(parents=True, exist_ok=True)
        for i, size in SIZES.items():
            Image.new("RGB", size, (i * 40, 80, 120)).save(image_dir / file_name(i), "JPEG")
    return raw


def refcoco(**kw) -> DatasetConfig:
    return DatasetConfig(**{"format": "refer", "source": "synthetic", "split_by": "unc", **kw})


def run(raw: Path, cfg: DatasetConfig | None = None, dataset: str = "refcoco", max_tokens: int = 20,
        min_word_count: int = 1):
    return prepare_refer(raw, dataset, cfg or refcoco(), min_word_count, max_tokens, raw.parent)


def assert_accounted(df: pd.DataFrame, metrics: dict) -> None:
    """input/expressions = the rows (= the <split>/tuples) + every skipped/<reason>."""
    tuples = sum(v for k, v in metrics.items() if k.endswith("/tuples"))
    skipped = sum(v for k, v in metrics.items() if k.startswith("skipped/"))
    assert tuples == len(df)
    assert metrics["input/expressions"] == tuples + skipped


# ---------------------------------------------------------------- the table

def test_one_row_per_sentence_with_boxes_and_splits(tmp_path):
    raw = write_layout(tmp_path / "raw")
    df, vocab, metrics = run(raw)
    assert df["expression"].tolist() == ["Man on the left", "guy in RED shirt", "left zebra",
                                         "purple woman on the left", "man right"]
    assert df["tokens"].iloc[1] == ["guy", "in", "red", "shirt"]
    assert df["ref_id"].tolist() == [0, 0, 1, 2, 3] and df["sent_id"].tolist() == [0, 1, 2, 3, 4]
    assert df["split"].tolist() == ["train", "train", "train", "val", "testA"]
    assert df["region_id"].tolist() == ["101", "101", "102", "103", "104"]
    assert df["image_id"].tolist() == ["1", "1", "2", "3", "4"]
    assert df["category"].tolist() == ["person", "person", "zebra", "woman", "person"]
    assert set(df["dataset"]) == {"refcoco"}
    # [x, y, w, h] -> inclusive ends: x2 = x + w - 1, y2 = y + h - 1
    first = df.iloc[0]
    assert (first.x1, first.y1, first.x2, first.y2) == (2, 3, 11, 7)
    assert (df.iloc[2].x1, df.iloc[2].x2, df.iloc[2].y2) == (0, 0, 19)
    assert (first.image_width, first.image_height) == (40, 30)
    # image paths relative to the repo root (here tmp_path)
    assert df["image_path"].iloc[0] == str(Path("raw") / IMAGE_DIR / file_name(1))
    assert df["image_path"].notna().all()
    assert metrics["train/tuples"] == 3 and metrics["val/tuples"] == 1 and metrics["testA/tuples"] == 1
    assert metrics["train/images"] == 2 and metrics["train/refs"] == 2 and metrics["val/refs"] == 1
    assert metrics["tuples_with_mask"] == 5
    assert metrics["checks/image_files_checked"] is True and metrics["checks/split_images_disjoint"] is True
    assert metrics["images_in_several_splits"] == 0
    assert not any(k.startswith(("skipped/", "kept_with_defect/")) for k in metrics)
    assert_accounted(df, metrics)


def test_masks_decode_to_the_annotated_pixels(tmp_path):
    df, _, _ = run(write_layout(tmp_path / "raw"))
    rows = df.set_index("region_id").drop_duplicates("ref_id")
    poly = decode_rle(rows.loc["101", "mask_rle"], 30, 40)
    expected = np.zeros((30, 40), dtype=bool)
    expected[3:8, 2:12] = True  # the polygon's 10 x 5 rectangle
    assert (poly == expected).all()
    column = decode_rle(rows.loc["102", "mask_rle"], 20, 20)
    expected = np.zeros((20, 20), dtype=bool)
    expected[:, 0] = True  # uncompressed RLE [0, 20, 380]: the first 20 pixels, column-major
    assert (column == expected).all()
    block = decode_rle(rows.loc["104", "mask_rle"], 12, 16)
    assert (block == _BLOCK.astype(bool)).all()  # compressed RLE passes through unchanged
    # every mask is the image's size and lies inside the row's box
    for row in df.itertuples():
        mask = decode_rle(row.mask_rle, row.image_height, row.image_width)
        ys, xs = np.nonzero(mask)
        assert xs.min() >= row.x1 and xs.max() <= row.x2 and ys.min() >= row.y1 and ys.max() <= row.y2


def test_vocabulary_is_the_train_splits(tmp_path):
    df, vocab, metrics = run(write_layout(tmp_path / "raw"))
    unk = vocab.unk_id
    assert vocab.encode(["purple"]) == [unk]  # only in the val sentence
    assert unk not in vocab.encode(["left", "man", "zebra", "red"])  # train words
    assert vocab.encode(["right"]) == [unk]  # only in testA
    assert metrics["vocab/size"] == len(vocab)
    assert metrics["train/unk_rate"] == 0
    assert metrics["val/unk_rate"] == pytest.approx(2 / 5)  # purple, woman
    assert metrics["vocab/source"] == "train split (words seen >= 1 times)"
    _, vocab2, _ = run(write_layout(tmp_path / "raw2"), min_word_count=2)
    assert vocab2.encode(["left", "man", "zebra"]) == [vocab2.encode(["left"])[0], unk, unk]


def test_tokens_clipped_and_counted(tmp_path):
    df, _, metrics = run(write_layout(tmp_path / "raw"), max_tokens=3)
    assert df["tokens"].map(len).max() == 3
    assert df["tokens"].iloc[1] == ["guy", "in", "red"]
    assert df["expression"].iloc[1] == "guy in RED shirt"  # the text is kept whole
    assert metrics["truncated_expressions"] == 3  # 4 + 4 + 5 tokens
    assert_accounted(df, metrics)


def test_refer_dataset_and_image_dir_come_from_the_config(tmp_path):
    raw = tmp_path / "raw"
    write_layout(raw, dataset="refcocog", split_by="umd", images=False)
    image_dir = raw / "coco"
    image_dir.mkdir()
    for i, size in SIZES.items():
        Image.new("RGB", size).save(image_dir / file_name(i), "JPEG")
    cfg = refcoco(split_by="umd", refer_dataset="refcocog", image_dir="coco")
    df, _, metrics = prepare_refer(raw, "gref", cfg, 1, 20, tmp_path)
    assert set(df["dataset"]) == {"gref"} and len(df) == 5
    assert df["image_path"].iloc[0] == str(Path("raw") / "coco" / file_name(1))


def test_annotation_only_copy_has_no_image_paths_and_no_defects(tmp_path):
    df, _, metrics = run(write_layout(tmp_path / "raw", images=False))
    assert df["image_path"].isna().all() and len(df) == 5
    assert metrics["checks/image_files_checked"] is False
    assert not any(k.startswith("kept_with_defect/") for k in metrics)


def test_missing_and_mis_sized_images_are_kept_with_a_defect(tmp_path):
    raw = write_layout(tmp_path / "raw")
    (raw / IMAGE_DIR / file_name(1)).unlink()  # two sentences
    Image.new("RGB", (10, 10)).save(raw / IMAGE_DIR / file_name(3), "JPEG")  # val image, annotated 24 x 16
    df, _, metrics = run(raw)
    assert len(df) == 5
    assert metrics["kept_with_defect/image_missing"] == 2
    assert metrics["kept_with_defect/image_size_mismatch"] == 1
    assert df["image_path"].isna().tolist() == [True, True, False, True, False]
    assert_accounted(df, metrics)


# ---------------------------------------------------------------- bad input

def test_ref_without_annotation_is_a_counted_skip(tmp_path):
    refs = base_refs() + [make_ref(9, 999, 1, "train", [sentence(90, "ghost"), sentence(91, "no one")])]
    df, _, metrics = run(write_layout(tmp_path / "raw", refs=refs))
    assert metrics["skipped/ref_without_annotation"] == 2  # both of its sentences
    assert metrics["input/expressions"] == 7 and len(df) == 5
    assert 9 not in df["ref_id"].tolist()
    assert_accounted(df, metrics)


@pytest.mark.parametrize("raw_text", ["?!", "...", " - ", "(*)"])
def test_sentence_without_tokens_is_a_counted_skip(tmp_path, raw_text, caplog):
    refs = base_refs()
    refs[1]["sentences"].append(sentence(77, raw_text))
    df, _, metrics = run(write_layout(tmp_path / "raw", refs=refs))
    assert metrics["skipped/no_tokens"] == 1
    assert 77 not in df["sent_id"].tolist() and (df["tokens"].map(len) > 0).all()
    assert "refs(unc).p" in caplog.text and "ref_id 1 sent_id 77" in caplog.text  # names file, ref and sentence
    assert_accounted(df, metrics)


def test_empty_sentence_is_still_empty_expression(tmp_path):
    refs = base_refs()
    refs[0]["sentences"].append(sentence(55, "   "))
    _, _, metrics = run(write_layout(tmp_path / "raw", refs=refs))
    assert metrics["skipped/empty_expression"] == 1 and "skipped/no_tokens" not in metrics


@pytest.mark.parametrize("split", ["trainval", "Train", "testD", ""])
def test_unknown_split_is_a_data_error_naming_file_and_ref(tmp_path, split):
    refs = base_refs()
    refs[2]["split"] = split
    raw = write_layout(tmp_path / "raw", refs=refs)
    with pytest.raises(DataError, match="unknown split") as err:
        run(raw)
    assert Path(err.value.file).name == "refs(unc).p" and err.value.record == "ref_id 2"
    # checked over every ref, whichever split is asked for
    with pytest.raises(DataError, match="unknown split"):
        refer.load(raw, "refcoco", "unc", split="train")


class RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CallsEval:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [RunsShell, CallsEval])
def test_pickle_that_would_run_code_is_refused(tmp_path, payload):
    marker = tmp_path / "pwned"
    refs = base_refs()
    refs[0]["sentences"][0]["raw"] = payload(marker)
    raw = write_layout(tmp_path / "raw", refs_bytes=pickle.dumps(refs, protocol=2))
    with pytest.raises(refer.UnsafePickleError, match="refused global") as err:
        run(raw)
    assert Path(err.value.file).name == "refs(unc).p"
    assert not marker.exists()


def test_no_train_rows_is_a_data_error(tmp_path):
    refs = [r for r in base_refs() if r["split"] != "train"]
    with pytest.raises(DataError, match=r"train split.*no expressions left") as err:
        run(write_layout(tmp_path / "raw", refs=refs))
    assert Path(err.value.file).name == "refs(unc).p"


def test_image_in_two_splits_of_a_by_image_split_is_a_data_error(tmp_path):
    refs = base_refs()
    refs[2].update(ann_id=101, image_id=1)  # the val ref on train image 1
    with pytest.raises(DataError, match=r"image 1 is in the train and the val split.*'unc' splits by image") as err:
        run(write_layout(tmp_path / "raw", refs=refs))
    assert Path(err.value.file).name == "refs(unc).p" and err.value.record == "image 1"


def test_google_split_by_object_shares_images_and_reports_it(tmp_path):
    refs = base_refs()[:3]
    refs[2].update(ann_id=101, image_id=1)  # google: train and val share images by design
    raw = write_layout(tmp_path / "raw", refs=refs, dataset="refcocog", split_by="google")
    df, _, metrics = prepare_refer(raw, "refcocog", refcoco(split_by="google"), 1, 20, tmp_path)
    assert metrics["checks/split_images_disjoint"] is False  # not made: the split is by object
    assert metrics["images_in_several_splits"] == 1
    assert metrics["val/images"] == 1 and len(df) == 4
    assert_accounted(df, metrics)


def test_a_non_refer_dataset_is_refused(tmp_path):
    from refexp.config import ConfigError

    with pytest.raises(ConfigError, match=r"datasets\.coco: format 'coco'"):
        prepare_refer(tmp_path, "coco", DatasetConfig(format="coco", source="synthetic"), 1, 20, tmp_path)
