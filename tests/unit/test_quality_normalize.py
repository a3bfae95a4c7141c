"""The one normalization shared by the n-gram model (training and scoring) and the classifier."""

from refinery.quality.normalize import normalize_line, normalized_lines, normalized_tokens


def test_ccnet_steps_case_accents_digits_punctuation():
    assert normalize_line("  Café au Lait, 1984!  ") == "cafe au lait , 0000 !"
    assert normalize_line("“Quoted” — and ‘single’… «done»") == '" quoted " - and \' single \' . . . " done "'
    assert normalize_line("Ｆｕｌｌ：width？") == "ｆｕｌｌ : width ?"  # CCNet maps punctuation, not letters
    assert normalize_line("naïve résumé Ångström") == "naive resume angstrom"
    assert normalize_line("tab\there\x07bell\x85nel") == "tab herebellnel"


def test_kenlm_reserved_words_cannot_appear():
    tokens = normalize_line("<s> a </s> <unk> <EMAIL>").split()
    assert not {"<s>", "</s>", "<unk>"} & set(tokens)
    assert tokens[:3] == ["<", "s", ">"] and tokens[-3:] == ["<", "email", ">"]


def test_idempotent_and_single_spaced():
    for raw in ["Don't   stop: 3.14 — «ok»", "ÉCOLE  Normale\u00a0Supérieure", "a\u2003b", "x" * 5]:
        once = normalize_line(raw)
        assert normalize_line(once) == once
        assert "  " not in once and once == once.strip()


def test_lines_are_the_unit_and_empty_lines_vanish():
    text = "Title Line\n\n  First paragraph here.  \n\x00\x01\n\nSecond one."
    assert list(normalized_lines(text)) == ["title line", "first paragraph here .", "second one ."]
    expected = ["title", "line", "first", "paragraph", "here", ".", "second", "one", "."]
    assert normalized_tokens(text) == expected
    assert list(normalized_lines("\x01\x02\n \n")) == []
