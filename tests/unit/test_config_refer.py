"""The refer fields of `datasets` entries and the prepare_refer section."""
from __future__ import annotations

import pytest
import yaml

from refexp.config import REFER_IMAGE_DIR, ConfigError, parse_config
from refexp.paths import Paths
from tests.conftest import REPO_ROOT, deep_merge

REFCOCO = {"format": "refer", "source": "synthetic", "split_by": "unc"}
REFCOCOG = {"format": "refer", "source": "synthetic", "split_by": "google"}


def _raw(**overrides):
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    return deep_merge(deep_merge(raw, {"datasets": {"refcoco": REFCOCO, "refcocog": REFCOCOG}}), overrides)


def test_refer_fields_and_defaults():
    cfg = parse_config(_raw(prepare_refer={"datasets": ["refcoco", "refcocog"]}))
    refcoco = cfg.dataset("refcoco")
    assert (refcoco.split_by, refcoco.refer_dataset, refcoco.image_dir) == ("unc", None, REFER_IMAGE_DIR)
    assert REFER_IMAGE_DIR == "images/mscoco/images/train2014"  # manifest.yaml's refcoco layouts
    assert refcoco.refer_name("refcoco") == "refcoco"
    custom = parse_config(_raw(datasets={"gref": {**REFCOCOG, "refer_dataset": "refcocog", "image_dir": "coco"}}))
    assert custom.dataset("gref").refer_name("gref") == "refcocog"
    section = cfg.prepare_refer
    assert (section.datasets, section.min_word_count, section.max_tokens) == (["refcoco", "refcocog"], 1, 20)
    paths = Paths.from_config(cfg)
    assert str(paths.tuples("refcoco")) == "data/prepare_refer/refcoco/tuples.parquet"
    assert str(paths.vocab("refcocog")) == "data/prepare_refer/refcocog/vocab.txt"


def test_refer_needs_split_by():
    with pytest.raises(ConfigError, match=r"datasets\.refcoco.*needs 'split_by'"):
        parse_config(_raw(datasets={"refcoco": {"format": "refer", "source": "synthetic", "split_by": None}}))


@pytest.mark.parametrize("bad, message", [
    ({"split_by": "umc"}, r"datasets\.refcoco\.split_by"),
    ({"split_by": 1}, r"datasets\.refcoco\.split_by"),
    ({"image_dir": "/abs/train2014"}, "inside the raw layout"),
    ({"image_dir": "../elsewhere"}, "inside the raw layout"),
    ({"splitby": "unc"}, r"datasets\.refcoco\.splitby: unknown key"),
])
def test_bad_refer_fields_are_named(bad, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_raw(datasets={"refcoco": bad}))


def test_refer_fields_on_other_formats_are_refused():
    with pytest.raises(ConfigError, match=r"datasets\.coco.*split_by: only for format 'refer'"):
        parse_config(_raw(datasets={"coco": {"split_by": "unc"}}))


def test_prepare_refer_section_is_checked():
    with pytest.raises(ConfigError, match=r"prepare_refer\.max_tokns: unknown key"):
        parse_config(_raw(prepare_refer={"max_tokns": 3}))
    with pytest.raises(ConfigError, match=r"prepare_refer\.min_word_count"):
        parse_config(_raw(prepare_refer={"min_word_count": 0}))
    with pytest.raises(ConfigError, match="prepare_refer.datasets names unknown dataset 'refclef'"):
        parse_config(_raw(prepare_refer={"datasets": ["refclef"]}))
    with pytest.raises(ConfigError, match="prepare_refer.datasets names dataset 'coco' of format 'coco'"):
        parse_config(_raw(prepare_refer={"datasets": ["coco"]}))


def test_refer_fields_leave_other_datasets_dumps_unchanged():
    cfg = parse_config(_raw())
    # reports' provenance dumps `datasets`: a coco entry shows what it did before the refer fields
    assert cfg.model_dump(include={"datasets"})["datasets"]["coco"] == {"format": "coco", "source": "synthetic",
                                                                        "root": None}
    assert cfg.model_dump(include={"datasets"})["datasets"]["refcoco"] == {**REFCOCO, "root": None,
                                                                           "refer_dataset": None,
                                                                           "image_dir": REFER_IMAGE_DIR}
