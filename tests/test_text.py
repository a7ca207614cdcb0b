from medtune.text import normalize_text


def test_width_case_space_and_punctuation_fold_to_one_string():
    assert normalize_text("头痛 怎么办？") == "头痛怎么办"
    assert normalize_text("头痛怎么办?") == "头痛怎么办"
    assert normalize_text("ＡＢＣ\td，e。") == "abcde"  # full-width letters and punctuation, a tab


def test_different_texts_stay_different():
    assert normalize_text("头痛怎么办") != normalize_text("头晕怎么办")
    assert normalize_text("B 2") != normalize_text("B 3")


def reference(text):
    """The definition, written independently: drop whitespace and Unicode category P* after NFKC + casefold."""
    import unicodedata

    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if not ch.isspace() and not unicodedata.category(ch).startswith("P"))


def test_fast_path_equals_the_definition_around_every_combining_mark():
    import sys
    import unicodedata

    from medtune.text import _COMMON

    marks = "".join(chr(cp) for cp in range(sys.maxunicode + 1) if unicodedata.combining(chr(cp)))
    for p in _COMMON:  # a mark right after deleted punctuation must not compose with the letter before it
        for before in "eか":  # both compose with some marks (é, が)
            texts = [f"{before}{p}{m}" for m in marks]
            assert [normalize_text(t) for t in texts] == [reference(t) for t in texts]
    assert normalize_text("e，́") == reference("e，́") == "é"  # not é


def test_translate_table_equals_the_per_character_definition_on_every_code_point():
    import sys

    chars = [chr(cp) for cp in range(sys.maxunicode + 1) if not 0xD800 <= cp <= 0xDFFF]
    for start in range(0, len(chars), 4096):
        block = "".join(chars[start:start + 4096])
        assert normalize_text(block) == reference(block)
