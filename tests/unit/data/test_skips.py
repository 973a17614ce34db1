"""SkipCounter counts, logs a few examples per reason and reports metrics; DataError names file and record."""
from __future__ import annotations

import logging

import pytest

from refexp.data.skips import DataError, SkipCounter, is_number, numbers, read_json


def test_counts_metrics_and_total():
    skips = SkipCounter()
    assert skips.total == 0 and skips.as_metrics() == {}
    skips.add("empty_expression", "a.json", "1_1")
    skips.add("empty_expression", "a.json", "1_2")
    skips.add("box_outside_image", "b.json", "2_1", n=3)
    skips.add("box_outside_image", "b.json", "2_2", n=0)  # nothing skipped
    assert skips.total == 5
    assert skips.as_metrics() == {"skipped/box_outside_image": 3, "skipped/empty_expression": 2}
    assert skips.as_metrics(prefix="train/skipped/") == {
        "train/skipped/box_outside_image": 3, "train/skipped/empty_expression": 2}


def test_logs_only_first_examples_per_reason(caplog):
    skips = SkipCounter(max_examples=2)
    with caplog.at_level(logging.WARNING, logger="refexp.data.skips"):
        for i in range(5):
            skips.add("empty_expression", "q.json", f"r{i}")
        skips.add("other", "q.json", "x")
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 3
    assert "q.json" in logged[0] and "r0" in logged[0] and "empty_expression" in logged[0]
    assert skips.examples["empty_expression"] == [("q.json", "r0"), ("q.json", "r1")]
    assert skips.counts["empty_expression"] == 5


def test_empty_counter_is_still_truthy_object():
    # Loaders use `skips if skips is not None`; an empty counter must not look like None.
    assert SkipCounter() is not None and bool(SkipCounter())


def test_data_error_names_file_and_record():
    err = DataError("data/x.json", "bad box", record="12_3")
    assert isinstance(err, ValueError)
    assert str(err) == "data/x.json, record '12_3': bad box"
    assert err.file == "data/x.json" and err.record == "12_3"
    assert str(DataError("y.txt", "empty")) == "y.txt: empty"


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.json: file not found"):
        read_json(tmp_path / "missing.json")
    (tmp_path / "cut.json").write_text('{"a": [1, 2')
    with pytest.raises(DataError, match=r"cut\.json: malformed JSON"):
        read_json(tmp_path / "cut.json")
    (tmp_path / "ok.json").write_text('{"a": [1, 2]}')
    assert read_json(tmp_path / "ok.json") == {"a": [1, 2]}


def test_inputs_merge_and_summary():
    a, b = SkipCounter(), SkipCounter()
    a.read("expressions", 5)
    a.add("empty_expression", "q.json", "1_1")
    b.read("expressions", 3)
    b.add("empty_expression", "q.json", "2_1", n=2)
    b.add("region_without_box", "q.json", "3_1")
    a.merge(b)
    assert a.inputs == {"expressions": 8} and a.input_metrics() == {"input/expressions": 8}
    assert a.as_metrics() == {"skipped/empty_expression": 3, "skipped/region_without_box": 1}
    assert a.examples["empty_expression"] == [("q.json", "1_1"), ("q.json", "2_1")]
    assert a.summary() == "empty_expression 3, region_without_box 1" and SkipCounter().summary() == "none"


def test_defect_counter_logs_as_kept(caplog):
    defects = SkipCounter(kind="kept with a defect")
    with caplog.at_level(logging.WARNING, logger="refexp.data.skips"):
        defects.add("mask_missing", "mask/", "1_1", n=2)
    assert caplog.records[0].getMessage().startswith("kept with a defect 2 record(s), reason mask_missing")


def test_numbers_reject_bool_strings_and_non_finite():
    assert numbers([0, 1.5, 2, 3], 4) and is_number(0)
    for bad in ([0, 1, 2], [0, 1, 2, "3"], [0, True, 2, 3], [0, float("nan"), 2, 3], [0, float("inf"), 2, 3],
                (0, 1, 2, 3), {"x": 0}):
        assert not numbers(bad, 4), bad


def test_read_json_unique_keys(tmp_path):
    (tmp_path / "dup.json").write_text('{"a": 1, "b": {"c": 1, "c": 2}}')
    assert read_json(tmp_path / "dup.json") == {"a": 1, "b": {"c": 2}}  # json.load's own rule: last wins
    with pytest.raises(DataError, match=r"dup\.json, record 'c': key listed twice"):
        read_json(tmp_path / "dup.json", unique_keys=True)
