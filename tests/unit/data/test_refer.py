"""refer API format (refs(*).p + instances.json).

No real slice of refs(*).p or instances.json exists in any stored repository
(PROVENANCE.md section 3), so these tests build a small pair with the real
structure; the Python-2 pickles are written opcode by opcode as Python 2 writes them.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from refexp.data import refer
from refexp.data.coco import decode_rle
from refexp.data.skips import DataError, SkipCounter


def make_ref(ref_id, ann_id, image_id, split, sentences, category_id=1):
    return {
        "ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "split": split,
        "category_id": category_id, "sent_ids": [s["sent_id"] for s in sentences],
        "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
        "sentences": sentences,
    }


def sentence(sent_id, raw):
    tokens = raw.lower().split()
    return {"tokens": tokens, "raw": raw, "sent": " ".join(tokens), "sent_id": sent_id}


REFS = [
    make_ref(0, 101, 1, "train", [sentence(0, "Man on the left"), sentence(1, "guy in RED shirt")]),
    make_ref(1, 102, 1, "testA", [sentence(2, "woman right")], category_id=2),
    make_ref(2, 103, 2, "train", [sentence(3, "left zebra")], category_id=3),
    make_ref(3, 999, 2, "train", [sentence(4, "ghost")]),                     # no such annotation
    make_ref(4, 104, 3, "testB", [sentence(5, "   "), sentence(6, "dog")]),  # image 3 not listed
]

INSTANCES = {
    "images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": 40, "height": 30},
               {"id": 2, "file_name": "COCO_train2014_000000000002.jpg", "width": 20, "height": 20}],
    "annotations": [
        {"id": 101, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 50.0, "bbox": [2, 3, 10, 5],
         "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8]]},
        {"id": 102, "image_id": 1, "category_id": 2, "iscrowd": 0, "area": 0.0, "bbox": [20, 0, 5.5, 30],
         "segmentation": []},
        {"id": 103, "image_id": 2, "category_id": 3, "iscrowd": 1, "area": 20.0, "bbox": [0, 0, 2, 10],
         "segmentation": {"size": [20, 20], "counts": [0, 20, 380]}},
        {"id": 104, "image_id": 3, "category_id": 1, "iscrowd": 0, "area": 4.0, "bbox": [0, 0, 2, 2],
         "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
    ],
    "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                   {"id": 2, "name": "woman", "supercategory": "person"},
                   {"id": 3, "name": "zebra", "supercategory": "animal"}],
}


def write_pair(root: Path, refs=REFS, dataset="refcoco", split_by="unc") -> Path:
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"refs({split_by}).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    (folder / "instances.json").write_text(json.dumps(INSTANCES))
    return root


# ---------------------------------------------------------------- Python-2 pickles

def _py2_repr(b: bytes) -> bytes:
    return b"'" + b"".join(bytes([c]) if 32 <= c < 127 and c not in (39, 92) else b"\\x%02x" % c
                           for c in b) + b"'"


def py2_protocol0(obj) -> bytes:
    """What Python 2's pickle.dump(obj, f) (protocol 0) writes for str/int/list/dict."""
    def enc(o) -> bytes:
        if isinstance(o, str):
            return b"S" + _py2_repr(o.encode("utf-8")) + b"\n"
        if isinstance(o, int):
            return b"I%d\n" % o
        if isinstance(o, list):
            return b"(l" + b"".join(enc(v) + b"a" for v in o)
        if isinstance(o, dict):
            return b"(d" + b"".join(enc(k) + enc(v) + b"s" for k, v in o.items())
        raise TypeError(o)
    return enc(obj) + b"."


def py2_protocol2(obj) -> bytes:
    """What Python 2's pickle.dump(obj, f, 2) writes (no memo) for str/int/list/dict."""
    def enc(o) -> bytes:
        if isinstance(o, str):
            b = o.encode("utf-8")
            return b"U" + bytes([len(b)]) + b
        if isinstance(o, int):
            return b"K" + bytes([o]) if 0 <= o < 256 else b"J" + o.to_bytes(4, "little", signed=True)
        if isinstance(o, list):
            return b"](" + b"".join(enc(v) for v in o) + b"e"
        if isinstance(o, dict):
            return b"}(" + b"".join(enc(k) + enc(v) for k, v in o.items()) + b"u"
        raise TypeError(o)
    return b"\x80\x02" + enc(obj) + b"."


PY2_REFS = [make_ref(7, 101, 1, "val", [sentence(9, "café on the left")])]


@pytest.mark.parametrize("writer", [py2_protocol0, py2_protocol2])
def test_python2_pickles_decode_utf8(tmp_path, writer):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(writer(PY2_REFS))
    refs = refer.read_refs(path)
    assert refs == PY2_REFS
    assert refs[0]["sentences"][0]["raw"] == "café on the left"


def test_python3_protocol2_refs_load(tmp_path):
    write_pair(tmp_path)
    assert refer.read_refs(tmp_path / "refcoco" / "refs(unc).p") == REFS


# ---------------------------------------------------------------- hostile pickles

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
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, payload):
    marker = tmp_path / "pwned"
    path = tmp_path / "refs(unc).p"
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        path.write_bytes(pickle.dumps([{"ref_id": 0, "evil": payload(marker)}], protocol=protocol))
        with pytest.raises(pickle.UnpicklingError) as err:
            refer.read_refs(path)
        assert isinstance(err.value, DataError) and "refs(unc).p" in str(err.value)
        assert "refused global" in str(err.value)
        assert not marker.exists()
    # The payload does work when unpickled normally, so the test would notice a leak.
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_builtins_eval_reference_refused(tmp_path):
    path = tmp_path / "refs.p"
    path.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")  # protocol 0: builtins.eval('1+1')
    with pytest.raises(refer.UnsafePickleError, match="builtins.eval"):
        refer.read_refs(path)


def test_corrupt_and_wrong_pickles(tmp_path):
    good = pickle.dumps(REFS, protocol=2)
    (tmp_path / "cut.p").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"cut\.p.*(corrupt|truncated)"):
        refer.read_refs(tmp_path / "cut.p")
    (tmp_path / "dict.p").write_bytes(pickle.dumps({"refs": []}, protocol=2))
    with pytest.raises(DataError, match="expected a list of refs"):
        refer.read_refs(tmp_path / "dict.p")
    (tmp_path / "nokeys.p").write_bytes(pickle.dumps([{"ref_id": 1}], protocol=2))
    with pytest.raises(DataError, match=r"refs\[0\].*ann_id"):
        refer.read_refs(tmp_path / "nokeys.p")
    with pytest.raises(DataError, match="file not found"):
        refer.read_refs(tmp_path / "absent.p")


# ---------------------------------------------------------------- load

def test_load_all_splits_joins_instances(tmp_path):
    write_pair(tmp_path)
    skips = SkipCounter()
    df = refer.load(tmp_path, "refcoco", "unc", skips=skips)
    assert df["expression"].tolist() == ["Man on the left", "guy in RED shirt", "woman right", "left zebra"]
    assert df["tokens"].iloc[1] == ["guy", "in", "red", "shirt"]
    assert df["split"].tolist() == ["train", "train", "testA", "train"]
    assert df["category"].tolist() == ["person", "person", "woman", "zebra"]
    assert df["region_id"].tolist() == ["101", "101", "102", "103"]
    assert df["ref_id"].tolist() == [0, 0, 1, 2] and df["sent_id"].tolist() == [0, 1, 2, 3]
    first = df.iloc[0]
    assert (first.x1, first.y1, first.x2, first.y2) == (2, 3, 11, 7)  # [x, y, w, h] -> inclusive ends
    assert (first.image_width, first.image_height) == (40, 30)
    assert df.iloc[2].x2 == pytest.approx(20 + 5.5 - 1)
    assert skips.as_metrics() == {"skipped/annotation_without_image": 2, "skipped/ref_without_annotation": 1}


def test_masks(tmp_path):
    write_pair(tmp_path)
    df = refer.load(tmp_path, "refcoco", "unc")
    poly = decode_rle(df.iloc[0].mask_rle, 30, 40)
    assert poly.sum() == 50 and poly[3:8, 2:12].all()  # 10 x 5 rectangle
    assert pd.isna(df.iloc[2].mask_rle)  # no segmentation: row kept, mask <NA>
    crowd = decode_rle(df.iloc[3].mask_rle, 20, 20)  # uncompressed RLE: first 20 pixels, column-major
    expected = np.zeros((20, 20), dtype=bool)
    expected[:, 0] = True
    assert (crowd == expected).all()


def test_split_filter_and_unknown_split(tmp_path):
    write_pair(tmp_path)
    df = refer.load(tmp_path / "refcoco", "refcoco", "unc", split="train")  # root = dataset folder
    assert set(df["split"]) == {"train"} and len(df) == 3
    skips = SkipCounter()
    assert len(refer.load(tmp_path, "refcoco", "unc", split="testB", skips=skips)) == 0
    assert skips.as_metrics() == {"skipped/annotation_without_image": 2}
    with pytest.raises(DataError, match=r"testC.*\['testA', 'testB', 'train'\]"):
        refer.load(tmp_path, "refcoco", "unc", split="testC")
    with pytest.raises(DataError, match=r"refs\(umd\)\.p"):
        refer.load(tmp_path, "refcoco", "umd")


def test_image_dir_and_empty_sentence(tmp_path):
    refs = [make_ref(0, 101, 1, "val", [sentence(0, ""), sentence(1, "man")])]
    write_pair(tmp_path, refs=refs, dataset="refclef", split_by="berkeley")
    images = tmp_path / "images"
    images.mkdir()
    (images / "COCO_train2014_000000000001.jpg").write_bytes(b"jpg")
    skips = SkipCounter()
    df = refer.load(tmp_path, "refclef", "berkeley", skips=skips, image_dir=images)
    assert df["expression"].tolist() == ["man"]
    assert df["image_path"].tolist() == [str(images / "COCO_train2014_000000000001.jpg")]
    assert skips.as_metrics() == {"skipped/empty_expression": 1}


def test_bad_instances_name_the_file(tmp_path):
    write_pair(tmp_path)
    path = tmp_path / "refcoco" / "instances.json"
    path.write_text(path.read_text()[:-20])
    with pytest.raises(DataError, match=r"instances\.json: malformed JSON"):
        refer.load(tmp_path, "refcoco", "unc")
