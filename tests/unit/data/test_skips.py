"""SkipCounter counts, logs a few examples per reason and reports metrics; DataError names file and record."""
from __future__ import annotations

import logging

import pytest

from refexp.data.skips import DataError, SkipCounter, read_json


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
