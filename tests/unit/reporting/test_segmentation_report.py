import pandas as pd

from refexp.reporting.text_objseg import head_phrase, region_is_stuff


def test_head_phrase_stops_at_the_first_preposition():
    assert head_phrase("the ground right of the grass".split()) == ["the", "ground", "right"]
    assert head_phrase("the cross on the ground".split()) == ["the", "cross"]
    assert head_phrase("blue sky".split()) == ["blue", "sky"]


def test_a_stuff_word_after_a_preposition_is_a_landmark_not_the_region():
    table = pd.DataFrame({
        "region_id": ["1_1", "1_2", "1_2", "1_3"],
        "expression": ["the cross on the ground", "water below the heart", "the sea", "heart left of the sky"]})
    # region 1_2 is stuff through either of its expressions; 1_1 and 1_3 only mention stuff as landmarks
    assert region_is_stuff(table, ["ground", "water", "sky"]).tolist() == [False, True, True, False]
