from refexp.config import ScrcConfig
from refexp.reporting.scrc_report import paper_order_claims, scarce_data_claims


def test_paper_order_claims_follow_table_1_row_by_row():
    assert paper_order_claims() == [
        ("scrc_no_context_spatial_transfer", "lrcn_retriever"),
        ("scrc_no_context_spatial", "scrc_no_context_spatial_transfer"),
        ("scrc_no_context", "scrc_no_context_spatial"),
        ("scrc_full", "scrc_no_context"),
    ]


def test_scarce_pairs_match_fraction_flags_and_schedule():
    flags = {"use_context": False, "use_spatial": False}
    s = ScrcConfig(variants={
        "full_data": {**flags},
        "t10": {**flags, "train_fraction": 0.1},
        "n10": {**flags, "train_fraction": 0.1, "transfer": False},
        "t10_short": {**flags, "train_fraction": 0.1, "training": {"steps": 40}},
        "n10_short": {**flags, "train_fraction": 0.1, "transfer": False, "training": {"steps": 40}},
        "n20": {**flags, "train_fraction": 0.2, "transfer": False},
    })
    # Full-data variants are not scarce; a twin differs in `transfer` only (not in fraction or steps).
    assert scarce_data_claims(s) == [("t10", "n10"), ("t10_short", "n10_short")]
