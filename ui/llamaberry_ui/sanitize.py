"""Model output made safe to render: it can format text, never make the page send anything.

A model's reply is Markdown that gradio renders with raw HTML allowed, and its own sanitizer
lets forms, inputs and remote images through: a reply could make the browser fetch an outside
URL carrying data, or navigate away when Enter is pressed in an injected input. So before any
text reaches the page:

- every HTML tag is escaped to text, except a few bare formatting tags with no attributes;
- Markdown images become plain links (a click is the reader's choice; loading is not);
- inline code is rendered by us with every character escaped, so nothing in it is read as
  Markdown or HTML whatever a renderer decides about backticks;
- a fenced code block is left as it is only when it opens at the start of a line at top level
  and closes exactly as the renderer (marked) closes it, so it cannot end early and leak HTML;
  one left open is closed, so text the page puts after it cannot close it instead.

All of this reads the text as the browser will: gradio passes every value through
`inspect.cleandoc` (tabs expanded, the common indent of the lines after the first removed), then
marked reads `\r\n` and a lone `\r` as line ends. So the text is first made into exactly that.
"""

from __future__ import annotations

import inspect
import re

# Tags that only change how text looks; allowed bare (no attributes), open or closed.
_HARMLESS = frozenset(
    [
        "b",
        "i",
        "em",
        "strong",
        "u",
        "s",
        "del",
        "ins",
        "sub",
        "sup",
        "mark",
        "small",
        "kbd",
        "code",
        "br",
        "hr",
        "p",
    ]
)
_BARE_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9]*)\s*/?>")
# What can start an HTML tag, comment, declaration or processing instruction.
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_FENCE_OPEN = re.compile(r"^(`{3,}|~{3,})(.*)$")
_INLINE_IMAGE = re.compile(r"!\[([^\]\n]*)\]\(\s*<?([^)\s>]*)>?(?:\s+[^)]*)?\)")
# A code span: a run of backticks, then the shortest text up to a run of the same length.
# (A code span never crosses a blank line: that ends the paragraph.)
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.DOTALL)


def safe_markdown(text: str) -> str:
    """`text` with everything that could load, submit or run made inert; formatting kept."""
    text = rendered_text(text)
    if not text:
        return text
    out: list[str] = []
    prose: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        opened = _FENCE_OPEN.match(lines[i])
        if opened and not (opened.group(1)[0] == "`" and "`" in opened.group(2)):
            end, closed = _fence_end(lines, i, opened.group(1))
            if prose:
                out.append(_safe_prose("\n".join(prose)))
                prose = []
            out.append("\n".join(lines[i:end]))
            if not closed:
                out.append(opened.group(1))  # close it here, so nothing put after it can
            i = end
            continue
        prose.append(lines[i])
        i += 1
    if prose:
        out.append(_safe_prose("\n".join(prose)))
    return "\n".join(out)


def rendered_text(text: str) -> str:
    """`text` as marked reads it on the page: what gradio's `cleandoc` leaves, every line end
    made `\n` (marked's first step; done first here, or cleandoc would see `\r` as text)."""
    return inspect.cleandoc(text.replace("\r\n", "\n").replace("\r", "\n"))


def _fence_end(lines: list[str], start: int, fence: str) -> tuple[int, bool]:
    """The index just past the line that closes the fence opened at `start` (marked's rule),
    and whether a line did; an unclosed fence runs to the end, for marked and for us."""
    closing = re.compile(r"^ {0,3}" + re.escape(fence) + r"[~`]* *$")
    for j in range(start + 1, len(lines)):
        if closing.match(lines[j]):
            return j + 1, True
    return len(lines), False


def _safe_prose(text: str) -> str:
    parts: list[str] = []
    last = 0
    for span in _CODE_SPAN.finditer(text):
        parts.append(_safe_text(text[last : span.start()]))
        parts.append(_code(span.group(2)))
        last = span.end()
    parts.append(_safe_text(text[last:]))
    return "".join(parts)


def _code(content: str) -> str:
    content = content.replace("\n", " ")
    if len(content) > 2 and content[0] == content[-1] == " " and content.strip():
        content = content[1:-1]
    # Every punctuation mark as a character reference: none of it can be Markdown or HTML.
    escaped = "".join(f"&#{ord(c)};" if not c.isalnum() and c != " " else c for c in content)
    return f"<code>{escaped}</code>"


def _safe_text(text: str) -> str:
    text = _INLINE_IMAGE.sub(_image_as_link, text)
    text = text.replace("![", "!&#91;")  # reference-style images and anything left over
    return _TAG_START.sub(_tag_or_text, text)


def _image_as_link(match: re.Match[str]) -> str:
    alt = match.group(1).strip() or "image"
    url = match.group(2)
    if not url:
        return f"image: {alt}"
    return f"[image: {alt}]({url})"


def _tag_or_text(match: re.Match[str]) -> str:
    source = match.string
    bare = _BARE_TAG.match(source, match.start())
    if bare and bare.group(1).lower() in _HARMLESS:
        return "<"
    return "&lt;"
