"""How the page looks: its CSS, the script that makes Enter run, and the theme."""

from __future__ import annotations

import gradio as gr

from .history import phone_css

CSS = """
/* The answer card: the headline answer, the comprehensive one under it, its cost beside. */
.block.lb-card { border: 2px solid var(--color-accent); border-radius: var(--radius-lg);
  background: var(--color-accent-soft); padding: 8px 16px; }
.prose.lb-card { border: none; background: none; padding: 0; }
.lb-card h3 { font-size: 1.35rem; margin: 4px 0 8px; }
.lb-card .md { font-size: 1.05rem; line-height: 1.6; }
/* The card's notes (where its answer came from, the demo model) sit close under a thin rule. */
.lb-card hr { margin: 6px 0 !important; }
.lb-card hr ~ p { margin: 2px 0 !important; font-size: 0.9rem; }
.block.lb-error, .prose.lb-error { border: 1px solid var(--error-border-color);
  border-radius: var(--radius-lg); padding: 4px 16px; background: var(--error-background-fill);
  color: var(--error-text-color); }
.prose.lb-error { border: none; padding: 0; }
.lb-summary { color: var(--body-text-color-subdued); font-size: 0.95rem; }
.lb-about p { margin: 0; color: var(--body-text-color-subdued); }
.lb-details { border-left: 3px solid var(--color-accent); padding-left: 12px; }
.lb-details table { width: auto; min-width: 260px; }
.lb-hint { color: var(--body-text-color-subdued); font-size: 0.85rem; margin-top: -4px; }
/* Turn and step sections: full width, readable type, no stray copy icon, a label that does
   not float over what it labels. */
.lb-sections .message-row, .lb-sections .message-row .flex-wrap,
.lb-sections .message-row .flex-wrap > div,
.lb-sections .message.bot { width: 100% !important; max-width: 100% !important;
  box-sizing: border-box; }
.lb-sections .thought-group { width: auto !important; max-width: none !important; }
.lb-sections .message-row { margin-left: 0 !important; margin-right: 0 !important; }
.lb-sections .message-buttons, .lb-sections .message-buttons-right,
.lb-sections .message-buttons-left { display: none !important; }
.lb-sections .thought-group .content, .lb-sections .thought-group .content .md,
.lb-sections .thought-group .content .md * { font-size: 0.97rem !important; line-height: 1.55;
  color: var(--body-text-color) !important; }
.lb-sections .thought-group .title .md { font-size: 1rem !important;
  color: var(--body-text-color) !important; }
.lb-sections label.float { position: static !important; }
/* The sections grow with what they hold: open turns read down the page, not in a box of
   their own that scrolls to its end and hides the first ones. */
.lb-sections { height: auto !important; min-height: 0 !important; }
.lb-sections > .wrapper, .lb-sections .bubble-wrap { max-height: none !important;
  height: auto !important; overflow: visible !important; }
/* A fold's title that wraps (a mode's long Options title on a phone) reads from the left, and
   its arrow keeps clear of the text. */
.label-wrap { text-align: left; gap: 8px; }
/* A copy button floats at the answer's top right, so the text flows around it, not under it. */
.lb-copy .prose > .icon-button-wrapper.top-panel { position: relative !important; float: right;
  top: 0 !important; right: 0 !important; margin: 0 0 4px 8px; }
/* Compare: one card per mode and the badge saying whether their answers agree. */
.lb-mode-card { border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg);
  padding: 8px 12px; background: var(--background-fill-primary); }
.lb-badge p { display: inline-block; padding: 2px 12px; border-radius: 999px; font-weight: 600; }
.lb-agree p { background: #dcfce7; color: #166534; }
.lb-differ p { background: #fef3c7; color: #92400e; }
/* On a phone: Run and Stop under the question, full width; nothing wider than the screen. */
@media (max-width: 640px) {
  .lb-ask, .lb-answer-row { flex-direction: column !important; }
  .lb-ask > *, .lb-answer-row > * { width: 100% !important; min-width: 0 !important; }
  .lb-buttons { flex-direction: row !important; }
  .lb-buttons > * { flex: 1 1 0 !important; }
  .lb-sections { height: auto !important; }
  /* No Enter key to speak of on a touch keyboard: the hint only pushes the answer down. */
  .lb-hint { display: none !important; }
  /* Every tab in sight: the bar wraps (see build_app), with tighter tabs so it takes fewer
     rows. */
  #tabs .tab-container button { padding-left: 10px !important; padding-right: 10px !important; }
}
"""

# Enter runs, Shift+Enter is a newline, in every question box (Gradio's own default for a
# multi-line box is the reverse).
JS = """
() => {
  document.addEventListener("keydown", (event) => {
    const box = event.target;
    if (event.key !== "Enter" || event.isComposing || !box || box.tagName !== "TEXTAREA") return;
    const holder = box.closest(".lb-question");
    if (!holder) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    if (event.shiftKey) {
      document.execCommand("insertText", false, "\\n");
      return;
    }
    const run = document.getElementById(holder.id.replace(/-q$/, "-run"));
    if (run && !run.disabled) run.click();
  }, true);
  // On a phone the question, its buttons and options fill the screen: once a run starts,
  // bring its progress and the streaming call into view. Until the text streams in, the page
  // may be too short to scroll that far; so it is brought again as the call's text grows,
  // until the progress line is at the top, or the reader scrolls by themselves.
  document.addEventListener("click", (event) => {
    const run = event.target && event.target.closest && event.target.closest("button[id$='-run']");
    if (!run || window.innerWidth > 640) return;
    const summary = document.getElementById(run.id.replace(/-run$/, "-summary"));
    const sections = document.getElementById(run.id.replace(/-run$/, "-sections"));
    if (!summary) return;
    const bring = () => summary.scrollIntoView({ block: "start", behavior: "smooth" });
    setTimeout(bring, 400);
    if (!sections) return;
    const watch = new MutationObserver(() => {
      if (summary.getBoundingClientRect().top <= 8) watch.disconnect();
      else bring();
    });
    const done = () => watch.disconnect();
    for (const kind of ["wheel", "touchstart", "keydown"]) {
      window.addEventListener(kind, done, { once: true, passive: true });
    }
    setTimeout(() => watch.observe(sections, { childList: true, subtree: true, characterData: true }), 400);
    setTimeout(done, 20000);
  }, true);
}
"""


def theme() -> gr.themes.Base:
    """The page's theme, with local fonts only so the page never fetches from the internet."""
    return gr.themes.Soft(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "monospace"],
    )


def page_css() -> str:
    """The page's CSS, the History table's phone layout included (drawn from the registry, so
    it is built when the page is)."""
    return CSS + phone_css()
