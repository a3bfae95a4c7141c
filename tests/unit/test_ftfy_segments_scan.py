"""fix_segments' one-scan path (NFC documents) equals ftfy.fix_text and the per-segment loop."""

import ftfy
import pytest

from refinery.clean import ftfy_gate

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LINES = [
    "plain line",
    "Tom &amp; Jerry",
    "<b>a tag</b> and &amp; after it",
    "curly \u2019quote\u2019 here",
    "Ã© mojibake",
    "ansi \x1b[1mbold\x1b[0m",
    "ﬁ ligature, ＬＯＵＤ",
    "",
    "trailing &lt; entity &#8217;",
]


def documents():
    """Multi-line documents where fixed lines sit before, between and after the first ``<``, at
    the start and the end, next to each other, with and without a final newline."""
    docs = []
    for shift in range(len(LINES)):
        lines = LINES[shift:] + LINES[:shift]
        docs += ["\n".join(lines), "\n".join(lines) + "\n", "\n\n".join(lines[::-1])]
    docs += ["&amp;", "&amp;\n", "\n&amp;", "x\n" * 50 + "&amp;" + "\ny" * 50, "no trigger\nat all\n"]
    docs += ["e\u0301 not NFC\n&amp; then an entity"]  # not normalized: the per-segment loop
    return docs


@pytest.mark.parametrize("text", documents())
def test_scan_equals_ftfy_and_the_segment_loop(text):
    expected = ftfy.fix_text(text)
    assert ftfy_gate.fix_segments(text) == expected
    assert ftfy_gate._fix_each_segment(text) == expected
