"""prepare_refer's run() on a tiny refer layout (hand-built in a temporary directory: no real refs(*).p
sample exists in ../shared/data) under a tiny config: outputs, metrics and bad input."""
from __future__ import annotations

import json
import pickle

import pandas as pd
import pytest

from refexp.data import refer
from refexp.data.coco import decode_rle
from refexp.data.skips import DataError
from refexp.paths import Paths
from refexp.text.vocab import Vocab
from stages import prepare_refer
from tests.conftest import tiny_config
from tests.unit.data import test_prepare_refer as tpr

REFER_PARAMS = {
    "datasets": {"refcoco": {"format": "refer", "source": "synthetic", "split_by": "unc"},
                 "refcocog": {"format": "refer", "source": "synthetic", "split_by": "google"}},
    "prepare_refer": {"datasets": ["refcoco", "refcocog"], "min_word_count": 1, "max_tokens": 20},
}


@pytest.fixture
def cfg(in_tmp_dir):
    return tiny_config(REFER_PARAMS)


def test_run_writes_tuples_vocab_and_metrics(cfg):
    paths = Paths.from_config(cfg)
    refs = tpr.base_refs() + [tpr.make_ref(9, 999, 1, "train", [tpr.sentence(90, "ghost")])]
    refs[1]["sentences"].append(tpr.sentence(77, "?!"))
    tpr.write_layout(paths.raw("refcoco"), refs=refs)
    metrics = prepare_refer.run(cfg, "refcoco")
    assert paths.tuples("refcoco") == paths.data / "prepare_refer" / "refcoco" / "tuples.parquet"
    df = pd.read_parquet(paths.tuples("refcoco"))
    assert len(df) == 5 and set(df["dataset"]) == {"refcoco"}
    assert df["image_path"].iloc[0] == "data/raw/refcoco/images/mscoco/images/train2014/COCO_train2014_000000000001.jpg"
    mask = decode_rle(df["mask_rle"].iloc[0], 30, 40)
    assert mask.sum() == 50 and mask[3:8, 2:12].all()
    assert (df.iloc[0].x1, df.iloc[0].x2) == (2, 11)
    vocab = Vocab.load(paths.vocab("refcoco"))
    assert vocab.encode(["purple"]) == [vocab.unk_id] and vocab.encode(["left"]) != [vocab.unk_id]
    written = json.loads(paths.metrics("prepare_refer", "refcoco").read_text())
    assert written == metrics
    # the loader's counted skips reach the stage's metrics, and every sentence read is accounted for
    assert metrics["skipped/ref_without_annotation"] == 1 and metrics["skipped/no_tokens"] == 1
    assert metrics["input/expressions"] == 7 == len(df) + 2
    assert metrics["train/tuples"] + metrics["val/tuples"] + metrics["testA/tuples"] == len(df)
    assert metrics["checks/split_images_disjoint"] is True and metrics["checks/image_files_checked"] is True


def test_google_split_reports_shared_images(cfg):
    paths = Paths.from_config(cfg)
    refs = tpr.base_refs()[:3]
    refs[2].update(ann_id=101, image_id=1)
    tpr.write_layout(paths.raw("refcocog"), refs=refs, dataset="refcocog", split_by="google")
    metrics = prepare_refer.run(cfg, "refcocog")
    assert metrics["images_in_several_splits"] == 1 and metrics["checks/split_images_disjoint"] is False
    assert paths.tuples("refcocog").is_file()


def test_unknown_split_fails_naming_file_and_ref(cfg):
    paths = Paths.from_config(cfg)
    refs = tpr.base_refs()
    refs[3]["split"] = "testZ"
    tpr.write_layout(paths.raw("refcoco"), refs=refs)
    with pytest.raises(DataError, match=r"refs\(unc\)\.p, record 'ref_id 3': ref is in unknown split 'testZ'"):
        prepare_refer.run(cfg, "refcoco")
    assert not paths.tuples("refcoco").exists()


@pytest.mark.parametrize("payload", [tpr.RunsShell, tpr.CallsEval])
def test_pickle_that_imports_is_refused_and_nothing_runs(cfg, in_tmp_dir, payload):
    paths = Paths.from_config(cfg)
    marker = in_tmp_dir / "marker"
    refs = tpr.base_refs()
    refs[0]["evil"] = payload(marker)
    tpr.write_layout(paths.raw("refcoco"), refs_bytes=pickle.dumps(refs, protocol=2))
    with pytest.raises(refer.UnsafePickleError, match="refused global"):
        prepare_refer.run(cfg, "refcoco")
    assert not marker.exists()
    assert not paths.prepared("refcoco").exists() and not paths.metrics("prepare_refer", "refcoco").exists()
    pickle.loads((paths.raw("refcoco") / "refcoco" / "refs(unc).p").read_bytes())  # the payload is live:
    assert marker.exists()  # had the stage unpickled it, the marker would be there
