"""The one-page HTML report: the Markdown the reports use, figures inline."""

import base64

from retino.core.pages import html_page


def test_a_page_renders_the_reports_markdown_and_inlines_its_figures(tmp_path):
    figure = tmp_path / "calibration.png"
    figure.write_bytes(b"\x89PNG fake bytes")
    text = ("# Study: 2 runs\n\n| run | AUC |\n|---|---|\n| a <b> | 0.9 [0.8, 1.0] |\n\n"
            "Intervals resample **patients**, see `bootstrap_rounds`;\nsecond line.\n\n"
            "- first item: 1 - specificity\n  continued\n- second\n")
    page = html_page("Study", text, [figure, tmp_path / "missing.png"])
    assert "<h1>Study: 2 runs</h1>" in page
    assert "<th>run</th><th>AUC</th>" in page and "<td>a &lt;b&gt;</td>" in page
    assert "<strong>patients</strong>" in page and "<code>bootstrap_rounds</code>" in page
    assert "<p>Intervals resample <strong>patients</strong>, see <code>bootstrap_rounds</code>; " \
        "second line.</p>" in page
    assert "<li>first item: 1 - specificity continued</li><li>second</li>" in page
    assert base64.b64encode(figure.read_bytes()).decode() in page
    assert "missing.png" not in page and page.count("<img") == 1


def test_a_deeper_heading_stays_text_and_keeps_its_words():
    page = html_page("t", "##### fifth level\n#5 not a heading\n")
    assert "fifth level" in page and "#5 not a heading" in page
