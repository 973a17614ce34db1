"""Malformed inputs beyond the per-loader suites (encodings, nesting, id collisions, paths that
escape, values that a cast would silently change, archive layouts): each is a DataError naming the
file (and the record), a counted skip, or, from a stage CLI, one `error:` line."""
from __future__ import annotations

import io
import json
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io

from refexp.data import archives, coco, glove, refer, referit
from refexp.data import visual_genome as vg
from refexp.data.skips import DataError, SkipCounter
from stages._cli import stage_main
from tests.reliability import test_loaders_coco as tc
from tests.reliability import test_loaders_refer as tr
from tests.reliability import test_loaders_referit as tri

# ---------------------------------------------------------------- ReferIt


@pytest.mark.parametrize("data, message", [
    (b"1 2 3 4\n\xff\n", "unreadable proposals file"),  # not UTF-8: was a UnicodeDecodeError
    ("1 2 3 4\n".encode("utf-16"), "unreadable proposals file"),
    (b"1.5 2 3.7 4\n", r"record 'line 1': proposal coordinates are not whole"),  # was truncated to 1 2 3 4
    (b"0 0 5 5\n1e300 2 1e301 4\n", r"record 'line 2': proposal coordinates are not whole"),  # was int64 wrap
])
def test_proposals_that_a_cast_would_change_or_cannot_decode(tmp_path, data, message):
    path = tmp_path / "1.txt"
    path.write_bytes(data)
    with pytest.raises(DataError, match=message) as err:
        referit.load_proposals(path)
    assert err.value.file == str(path)


def test_proposals_path_that_is_a_directory(tmp_path):
    (tmp_path / "1.txt").mkdir()
    with pytest.raises(DataError, match="unreadable proposals file") as err:
        referit.load_proposals(tmp_path / "1.txt")
    assert err.value.file == str(tmp_path / "1.txt")


@pytest.mark.parametrize("seg", [np.full((30, 40), np.nan), np.zeros((30, 40), complex)], ids=["nan", "complex"])
def test_masks_with_non_finite_or_complex_values(tmp_path, seg):
    path = tmp_path / "1_1.mat"
    scipy.io.savemat(path, {"segimg_t": seg})  # NaN != 0 read as an empty region, silently
    with pytest.raises(DataError, match="complex or non-finite") as err:
        referit.read_mask(path, image_size=(40, 30))
    assert err.value.file == str(path)


def test_image_size_too_large_is_a_data_error_not_an_overflow(tmp_path):
    root = tri.write(tmp_path, sizes={**tri.SIZES, "2.jpg": [1e20, 60]})
    with pytest.raises(DataError, match="at most") as err:
        referit.load(root, "train")
    assert Path(err.value.file).name == "referit_imsize.json" and err.value.record == "2.jpg"


@pytest.mark.parametrize("region_id, image", [("2_\u0661", "2.jpg"), ("../2_1", "../2.jpg")],
                         ids=["arabic_indic_digit", "path_separator"])
def test_region_ids_that_are_not_img_k_are_counted(tmp_path, region_id, image):
    # \d took any script's digits, and a "/" made mask/<id>.mat point outside the mask folder.
    root = tri.write(tmp_path, queries={**tri.QUERIES, region_id: ["a tree"]},
                     boxes={**tri.BOXES, region_id: [0, 0, 5, 5]}, sizes={**tri.SIZES, image: [40, 60]})
    skips = SkipCounter()
    df = referit.load(root, "train", skips=skips)
    assert skips.as_metrics() == {"skipped/malformed_region_id": 1}
    assert len(df) == tri.N_EXPRESSIONS


def test_split_list_with_a_byte_order_mark(tmp_path):
    root = tri.write(tmp_path, imlist="\ufeff1\n2\n")
    skips = SkipCounter()
    df = referit.load(root, "train", skips=skips)
    assert len(df) == tri.N_EXPRESSIONS and skips.total == 0  # was image_not_in_split 3


def test_vocabulary_with_a_byte_order_mark(tmp_path):
    (tmp_path / "vocabulary_scrc.txt").write_bytes("\ufeff<unk>\nthe\ncat\n".encode())
    _, words = referit.released_vocabulary(tmp_path)
    assert words == ["the", "cat"]  # was ['\ufeff<unk>', 'the', 'cat']


# ---------------------------------------------------------------- COCO


COCO_ERRORS = [
    # (case id, instances() kwargs, record named, message)
    ("image_id_int_and_string", {"annotations": [tc.ann(1)],
                                 "images": [tc.IMAGE, {**tc.IMAGE, "id": "1", "file_name": "b.jpg"}]},
     "images[1]", "image id '1' listed twice"),
    ("annotation_id_int_and_string", {"annotations": [tc.ann(1), tc.ann("1")]}, "annotations[1]", "listed twice"),
    ("category_id_int_and_string", {"annotations": [tc.ann(1)],
                                    "categories": [tc.CATEGORY, {"id": "5", "name": "dog"}]},
     "categories[1]", "listed twice"),
    ("category_name_twice", {"annotations": [tc.ann(1)], "categories": [tc.CATEGORY, {"id": 6, "name": "cat"}]},
     "categories[1]", "category name 'cat' listed twice"),
    ("file_name_absolute", {"annotations": [tc.ann(1)], "images": [{**tc.IMAGE, "file_name": "/etc/passwd"}]},
     "images[0]", "inside the image folder"),
    ("file_name_dotdot", {"annotations": [tc.ann(1)], "images": [{**tc.IMAGE, "file_name": "../../x.jpg"}]},
     "images[0]", "inside the image folder"),
    ("area_negative", {"annotations": [tc.ann(1, area=-5)]}, "annotation 1", "non-negative"),
]


@pytest.mark.parametrize("kwargs, record, message", [e[1:] for e in COCO_ERRORS], ids=[e[0] for e in COCO_ERRORS])
def test_coco_values_that_were_accepted_wrongly(tmp_path, kwargs, record, message):
    path = tc.instances(tmp_path, **kwargs)
    with pytest.raises(DataError, match=message) as err:
        coco.load_instances(path)
    assert err.value.file == str(path) and err.value.record == record


def test_caption_ids_int_and_string_collide(tmp_path):
    path = tc.captions(tmp_path, [{"id": 1, "image_id": 1, "caption": "a"}, {"id": "1", "image_id": 1, "caption": "b"}])
    with pytest.raises(DataError, match="listed twice") as err:
        coco.load_captions(path)
    assert err.value.record == "annotations[1]"


@pytest.mark.parametrize("bad, reason", [
    (tc.ann(2, segmentation=[[2, 3, 8e30, 3, 8, 7]]), "bad_polygon"),  # pycocotools exhausted memory on it
    (tc.ann(2, iscrowd=1, segmentation={"size": [10, 20], "counts": "!!!garbage"}), "bad_rle"),
    (tc.ann(2, iscrowd=1, segmentation={"size": [10, 20], "counts": "0"}), "bad_rle"),  # runs cover 0 of 200
])
def test_segmentations_pycocotools_would_choke_on_or_misread(tmp_path, bad, reason):
    skips = SkipCounter()
    df = coco.load_instances(tc.instances(tmp_path, [tc.ann(1), bad]), skips=skips)
    assert df["region_id"].tolist() == ["1"] and skips.as_metrics() == {f"skipped/{reason}": 1}


def test_compressed_rle_of_the_image_size_is_kept(tmp_path):
    mask = np.zeros((10, 20), bool)
    mask[3:7, 2:8] = True
    counts = coco.encode_mask(mask)
    skips = SkipCounter()
    df = coco.load_instances(tc.instances(tmp_path, [tc.ann(1, iscrowd=1, segmentation={"size": [10, 20],
                                                                                        "counts": counts})]), skips)
    assert skips.total == 0 and df["mask_rle"].tolist() == [counts]


def test_coco_url_that_is_not_a_string(tmp_path):
    path = tc.instances(tmp_path, [tc.ann(1)], images=[{**tc.IMAGE, "coco_url": 5}])  # was an AttributeError
    df = coco.load_instances(path)
    assert df["image_path"].tolist() == ["val2014/COCO_val2014_000000000001.jpg"]


# ---------------------------------------------------------------- refer


def test_refs_pickle_nested_thousands_deep(tmp_path):
    tr.write(tmp_path, [])
    path = tmp_path / "refcoco" / "refs(unc).p"
    path.write_bytes(b"\x80\x02" + b"]" * 50000 + b"a" * 49999 + b".")  # was a RecursionError
    with pytest.raises(DataError, match="nested too deeply") as err:
        refer.load(tmp_path, "refcoco", "unc")
    assert err.value.file == str(path)


def test_refs_pickle_that_imports_os_runs_nothing(tmp_path):
    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    tr.write(tmp_path, [Evil()])
    with pytest.raises(refer.UnsafePickleError, match="refused global"):
        refer.load(tmp_path, "refcoco", "unc")
    assert not (tmp_path / "pwned").exists()


def test_ref_on_another_image_than_its_annotation(tmp_path):
    tr.write(tmp_path, [tr.ref(1, image_id=99)])  # rows would have put its words on image 1
    with pytest.raises(DataError, match="on image 99 but its annotation 101 is on image 1") as err:
        refer.load(tmp_path, "refcoco", "unc")
    assert Path(err.value.file).name == "refs(unc).p" and err.value.record == "ref_id 1"


# ---------------------------------------------------------------- Visual Genome

REGION = {"region_id": 1, "image_id": 1, "phrase": "a man", "x": 1, "y": 1, "width": 5, "height": 5}


@pytest.mark.parametrize("raw", [b"[" + b"[" * 100000 + b"]" * 100000 + b"]",
                                 b'[{"regions": [' + b"[" * 100000 + b"]" * 100000 + b"]}]"],
                         ids=["top", "in_regions"])
def test_region_file_nested_thousands_deep(tmp_path, raw):
    path = tmp_path / "region_descriptions.json"
    path.write_bytes(raw)  # 200 KB that yajl2_c needed ~23 GB for: the stage was killed for memory
    with pytest.raises(DataError, match=f"nested more than {vg.MAX_DEPTH} deep") as err:
        vg.load_regions(path, SkipCounter())
    assert err.value.file == str(path)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 1 << 22])
def test_brackets_and_escaped_quotes_inside_phrases_are_not_nesting(tmp_path, chunk_size):
    phrase = '\\"[[' * 100 + '\\' + "{" * 100  # escaped quotes, backslashes and brackets, all inside one string
    path = tmp_path / "region_descriptions.json"
    path.write_text(json.dumps([{"regions": [{**REGION, "phrase": phrase}]}]))
    vg._check_depth(path, chunk_size=chunk_size)
    assert vg.load_regions(path)["phrase"].tolist() == [phrase]
    path.write_text("[" * (vg.MAX_DEPTH + 1) + "]" * (vg.MAX_DEPTH + 1))
    with pytest.raises(DataError, match="nested more than"):
        vg._check_depth(path, chunk_size=chunk_size)


def test_region_id_beyond_int64_is_a_counted_skip(tmp_path):
    path = tmp_path / "region_descriptions.json"
    path.write_text(json.dumps([{"regions": [REGION, {**REGION, "region_id": 1e30}]}]))  # was an OverflowError
    skips = SkipCounter()
    df = vg.load_regions(path, skips)
    assert df["region_id"].tolist() == [1] and skips.as_metrics() == {"skipped/malformed_region": 1}


def test_region_file_that_is_a_directory(tmp_path):
    (tmp_path / "region_descriptions.json").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        vg.load_regions(tmp_path / "region_descriptions.json")


# ---------------------------------------------------------------- GloVe


def test_glove_byte_order_mark_is_not_part_of_the_first_word(tmp_path):
    path = tmp_path / "g.txt"
    path.write_bytes("\ufeffthe 1 2\ncat 3 4\n".encode())
    words, vectors = glove.load_glove(path)
    assert words == ["the", "cat"] and vectors.shape == (2, 2)


def test_glove_with_a_word2vec_header(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("2 2\nthe 1 2\ncat 3 4\n")  # read as dim 1 it gave words 'the 1', 'cat 3'
    with pytest.raises(DataError, match="word2vec header") as err:
        glove.load_glove(path)
    assert err.value.record == "line 1"


def test_glove_zip_member_with_a_bad_crc(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("g.txt", "the 1 2\n")
    data = bytearray(buf.getvalue())
    data[40] ^= 0xFF  # inside the stored member's bytes
    path = tmp_path / "g.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt zip member"):  # was zipfile.BadZipFile
        glove.load_glove(path)


# ---------------------------------------------------------------- archives


def _tar(path: Path, members: list[tuple[str, str, object]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, value
                tf.addfile(info)
            else:
                info.size = len(value)
                tf.addfile(info, io.BytesIO(value))
    return path


def _zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")  # zipfile, writing the duplicate on purpose
@pytest.mark.parametrize("make, message", [
    (lambda p: _tar(p / "a.tar", [("x", "file", b"1"), ("x", "file", b"2")]), "listed twice"),
    (lambda p: _zip(p / "a.zip", [("x", b"1"), ("x", b"2")]), "listed twice"),
    (lambda p: _tar(p / "a.tar", [("x", "file", b"1"), ("x/y", "file", b"2")]), "not a directory"),
    (lambda p: _zip(p / "a.zip", [("x", b"1"), ("x/y", b"2")]), "not a directory"),
    (lambda p: _tar(p / "a.tar", [("s", "sym", "sub"), ("s/y", "file", b"2")]), "not a directory"),
], ids=["tar_duplicate", "zip_duplicate", "tar_file_as_dir", "zip_file_as_dir", "tar_write_through_symlink"])
def test_archive_layouts_that_would_overwrite_or_fail_midway(tmp_path, make, message):
    archive = make(tmp_path)
    with pytest.raises(archives.UnsafeArchiveError, match=message):
        archives.extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.extracting").exists()


def test_symlink_chain_that_escapes_is_refused(tmp_path):
    # "s" -> "." and "t" -> "s/.." each look inside; together t is the parent of the target.
    archive = _tar(tmp_path / "a.tar", [("s", "sym", "."), ("t", "sym", "s/..")])
    with pytest.raises((archives.UnsafeArchiveError, archives.ArchiveError), match="outside"):
        archives.extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_tar_gz_is_an_archive_error(tmp_path):
    path = tmp_path / "a.tar.gz"
    path.write_bytes(b"\x1f\x8b\x08garbage")  # was an EOFError from gzip
    assert archives.is_archive(path)
    with pytest.raises(archives.ArchiveError, match="unreadable tar archive"):
        archives.extract(path, tmp_path / "out")


@pytest.mark.parametrize("error", [archives.UnsafeArchiveError("a.zip: member '../x' contains '..'"),
                                   archives.ArchiveError("a.tar.gz: unreadable tar archive")])
def test_stage_cli_ends_archive_errors_in_one_line(monkeypatch, error):
    def run(cfg, item):
        raise error

    monkeypatch.setattr(sys, "argv", ["fetch_data", "referit"])
    monkeypatch.setattr("stages._cli.load_config", lambda: None)
    with pytest.raises(SystemExit) as exit_:
        stage_main(run)
    assert exit_.value.code == f"error: {error}"



# ---------------------------------------------------------------- fetch_data, source local


def _local_cfg():
    from tests.conftest import tiny_config

    return tiny_config({"datasets": {"mine": {"format": "referit", "source": "local", "root": "src"}}})


@pytest.mark.parametrize("make, message", [
    (lambda src: (src / "a" / "loop").symlink_to(".."), "a folder that holds it"),
    (lambda src: ((src.parent / "other").mkdir(), (src / "ok").symlink_to("../other"),
                  (src.parent / "other" / "back").symlink_to("../src")), "a folder that holds it"),  # via outside
    (lambda src: (src / "gone").symlink_to("nowhere"), "does not exist or loops"),
], ids=["loop_to_parent", "loop_through_a_link_outside", "dangling"])
def test_local_source_with_a_symlink_loop_or_dangling_link(tmp_path, make, message):
    from refexp.data.fetch import fetch_local

    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f.txt").write_text("x")
    make(src)  # a loop was copied ~40 levels deep before failing, two loops 2**40 times
    with pytest.raises(DataError, match=message):
        fetch_local(_local_cfg(), "mine", tmp_path / "out", tmp_path)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


def test_local_source_that_is_a_file(tmp_path):
    from refexp.data.fetch import fetch_local

    (tmp_path / "src").write_text("not a folder")
    with pytest.raises(DataError, match="directory not found"):
        fetch_local(_local_cfg(), "mine", tmp_path / "out", tmp_path)


# ---------------------------------------------------------------- synth_expressions

GOOD_INSTANCE = dict(image_id="1", file_name="a.jpg", image_path="val2014/a.jpg", image_width=20, image_height=10,
                     region_id="1", x1=1.0, y1=1.0, x2=5.0, y2=5.0, category="cat", category_id=5, mask_rle="PPYo0",
                     iscrowd=0, area=4.0, split="train")


def _instances_file(in_tmp_dir):
    from refexp.paths import Paths
    from tests.conftest import tiny_config

    cfg = tiny_config()
    path = Paths.from_config(cfg).prepared("coco") / "instances.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    return cfg, path


@pytest.mark.parametrize("write, message", [
    (lambda p: p.write_bytes(b"garbage"), "unreadable parquet"),  # was pyarrow's ArrowInvalid
    (lambda p: p.write_bytes(b""), "unreadable parquet"),
    (lambda p: pd.DataFrame([{k: v for k, v in GOOD_INSTANCE.items() if k != "category"}])
     .to_parquet(p), r"lacks columns \['category'\]"),  # was a KeyError
    (lambda p: p.mkdir(), "lacks columns"),  # pyarrow reads a folder as an empty dataset
    (lambda p: pd.DataFrame([GOOD_INSTANCE]).iloc[:0].to_parquet(p), "no records: 0 instances"),
    (lambda p: pd.DataFrame([{**GOOD_INSTANCE, "category": "_"}]).to_parquet(p),
     "instance_without_category 1"),  # "_" gave the expression ""
], ids=["garbage", "empty_file", "no_category_column", "directory", "zero_rows", "category_underscore"])
def test_synth_expressions_on_bad_instance_tables(in_tmp_dir, write, message):
    from stages import synth_expressions

    cfg, path = _instances_file(in_tmp_dir)
    write(path)
    with pytest.raises(DataError, match=message) as err:
        synth_expressions.run(cfg, "coco")
    assert err.value.file == str(path)


def test_synth_expressions_counts_a_nameless_category_and_keeps_the_rest(in_tmp_dir):
    from stages import synth_expressions

    cfg, path = _instances_file(in_tmp_dir)
    pd.DataFrame([GOOD_INSTANCE, {**GOOD_INSTANCE, "region_id": "2", "category": " _ "}]).to_parquet(path)
    metrics = synth_expressions.run(cfg, "coco")
    assert metrics["records"] == 1 and metrics["skipped/instance_without_category"] == 1
    assert metrics["records"] + metrics["skipped/instance_without_category"] == metrics["input/instances"]


# ---------------------------------------------------------------- prepare_coco


def test_prepare_coco_with_a_second_copy_of_a_split_file(tmp_path):
    import shutil

    from refexp.data.prepare import prepare_coco
    from tests.reliability.test_loaders_prepare import cap, coco_layout, inst

    root = coco_layout(tmp_path, {"train": ([inst(1)], [cap(1)]), "val": ([inst(11)], [cap(11)])}, images=False)
    original = next(root.rglob("instances_train2014.json"))
    (root / "backup").mkdir()
    shutil.copy(original, root / "backup" / "instances_train2014.json")  # every annotation would be read twice
    with pytest.raises(DataError, match="a second instances file for the train split"):
        prepare_coco(root, "bad", 1, 20, tmp_path)


def test_archive_that_unpacks_beyond_the_free_disk_is_refused(tmp_path, monkeypatch):
    archive = _zip(tmp_path / "a.zip", [("big.bin", b"\0" * 10_000)])  # deflate-free, but stated size is what counts
    usage = archives.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(archives.shutil, "disk_usage", lambda p: usage._replace(free=9_999))
    with pytest.raises(archives.ArchiveError, match="unpack to 10000 bytes but only 9999 are free"):
        archives.extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.extracting").exists()
