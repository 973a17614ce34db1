from refexp.reporting.attention_regression import _localisation_section


def _metrics(peak: float, dead: int, queries: int = 10) -> dict:
    return {"test/attention_peak_in_box": peak, "test/attention_peak_in_box/small_target": peak / 2,
            "test/attention_peak_in_box/large_target": peak, "test/attention_mass_in_box": peak / 3,
            "test/attention_mass_in_box/small_target": peak / 4, "test/attention_dead_maps": dead,
            "test/queries": queries, "test/accuracy/small_target": 0.125}


def test_localisation_section_lists_attention_variants_and_names_all_dead_ones():
    lines = _localisation_section({"attention_full": _metrics(0.5, 3), "no_penalty": _metrics(0.0, 10),
                                   "text_only": {"test/accuracy": 0.3}})
    text = "\n".join(lines)
    rows = [line for line in lines if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == ["attention_full", "no_penalty"]  # text_only has no attention
    assert rows[0].split(" | ")[1:4] == ["50.00", "25.00", "50.00"] and "| 3 | 12.50 |" in rows[0]
    assert "`no_penalty`: every test map is dead" in text
    assert "`attention_full`: every test map is dead" not in text


def test_localisation_section_is_empty_without_attention_variants():
    assert _localisation_section({"text_only": {"test/accuracy": 0.3}}) == []
