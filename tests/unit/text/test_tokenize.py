from refexp.text.tokenize import tokenize


def test_lowercase_words_and_digits_punctuation_dropped():
    assert tokenize("Man's hat, LEFT.") == ["man", "s", "hat", "left"]
    assert tokenize("2nd car from the right-hand side!") == ["2nd", "car", "from", "the", "right", "hand", "side"]


def test_symbols_underscores_and_empty():
    assert tokenize("sky™ (multitasking!? ;_;)") == ["sky", "multitasking"]
    assert tokenize("...") == []
    assert tokenize("") == []


def test_non_ascii_letters_kept():
    assert tokenize("Café au lait") == ["café", "au", "lait"]
