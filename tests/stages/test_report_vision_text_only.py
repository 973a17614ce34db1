"""report_vision_text_only's run() in a tmp dir on the hand-made inputs of the report's unit tests: it
writes the report and its figures, and a failed rendering keeps the last good report."""
from __future__ import annotations

import pytest

from tests.unit.reporting.test_vision_text_only import config, make_inputs, stub_build_fused


def test_stage_writes_the_report_and_keeps_the_last_good_one(in_tmp_dir, monkeypatch):
    from refexp.reporting import vision_text_only as report
    from refexp.training import vision_text_only
    from stages import report_vision_text_only

    monkeypatch.setattr(vision_text_only, "build_fused", stub_build_fused)
    cfg = config()
    make_inputs(in_tmp_dir, cfg)
    out = report_vision_text_only.run(cfg)
    md = in_tmp_dir / "reports/vision_text_only.md"
    assert out["rows_reported"] == 12 and md.exists()
    assert (in_tmp_dir / "reports/figures/vision_text_only/examples_refcocog.png").exists()
    good = md.read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(report, "_cost_section", broken)
    with pytest.raises(RuntimeError):
        report_vision_text_only.run(cfg)
    assert md.read_text() == good
    assert (in_tmp_dir / "reports/figures/vision_text_only/examples_refcocog.png").exists()
