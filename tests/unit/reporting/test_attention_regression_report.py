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


def test_group_baselines_keep_every_box_of_the_image():
    import pandas as pd

    from refexp.metrics.chance import group_baselines

    # One 100 x 100 image, two disjoint boxes; the attribute query refers to the small box, the
    # relation query to the large one. A uniform pick among BOTH boxes is right half the time for
    # each query, although each kind's sub-table holds only one box (which would give 100%).
    test = pd.DataFrame({"image_id": ["a", "a"], "region_id": ["a_1", "a_2"], "kind": ["attribute", "relation"],
                         "x1": [0, 50], "y1": [0, 0], "x2": [9, 99], "y2": [9, 99],
                         "image_width": [100, 100], "image_height": [100, 100]})
    # The mean training box is the large box itself, so the constant box hits the relation query only.
    train = test.iloc[[1]]
    chance, constant = group_baselines(train, test, ["attribute", "relation"])
    assert chance == {"attribute": 0.5, "relation": 0.5, "small_target": 0.5, "large_target": 0.5}
    assert constant == {"attribute": 0.0, "relation": 1.0, "small_target": 0.0, "large_target": 1.0}
