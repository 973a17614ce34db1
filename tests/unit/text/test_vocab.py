from refexp.text.vocab import SPECIALS, Vocab


def test_build_orders_by_count_then_alphabet_and_respects_min_count():
    vocab = Vocab.build([["b", "a", "c"], ["a", "b"], ["a", "z"]], min_count=2)
    assert vocab.words == SPECIALS + ("a", "b")


def test_unknown_words_map_to_unk_not_dropped():
    vocab = Vocab.build([["red", "circle"]])
    ids = vocab.encode(["blue", "circle", "zzz"])
    assert ids == [vocab.unk_id, vocab.words.index("circle"), vocab.unk_id]
    assert len(ids) == 3


def test_round_trip(tmp_path):
    vocab = Vocab.build([["x", "y", "y"]])
    vocab.save(tmp_path / "v.txt")
    assert Vocab.load(tmp_path / "v.txt") == vocab
    assert vocab.decode(vocab.encode(["y", "x"])) == ["y", "x"]
