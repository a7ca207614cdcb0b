from medtune.textnorm import normalize_text


def test_width_case_space_and_punctuation_fold_to_one_string():
    assert normalize_text("头痛 怎么办？") == "头痛怎么办"
    assert normalize_text("头痛怎么办?") == "头痛怎么办"
    assert normalize_text("ＡＢＣ\td，e。") == "abcde"  # full-width letters and punctuation, a tab


def test_different_texts_stay_different():
    assert normalize_text("头痛怎么办") != normalize_text("头晕怎么办")
    assert normalize_text("B 2") != normalize_text("B 3")
