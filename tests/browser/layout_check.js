/* The layout check of tests/browser/test_layout.py, run in the page: every problem found, as a
 * sentence naming the texts involved. A word is what lies between spaces; a line break right
 * after a hyphen (as in a UUID) is one the text allows, any other break inside a word is not. */
(() => {
  const problems = [];
  const visible = (el) => {
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || style.display === "none") return false;
    const box = el.getBoundingClientRect();
    return box.width > 0 && box.height > 0;
  };
  // Text that may scroll on purpose (code blocks, form fields) is not judged.
  const exempt = (el) => el.closest("pre, textarea, select, option, script, style, .visually-hidden, details:not([open]) > :not(summary), canvas");
  const textOf = (el) => Array.from(el.childNodes).filter(
    (n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
  const rectsOf = (el) => {
    const rects = [];
    for (const node of textOf(el)) {
      const range = document.createRange();
      range.selectNodeContents(node);
      for (const r of range.getClientRects()) if (r.width > 0 && r.height > 0) rects.push(r);
    }
    return rects;
  };
  const name = (el) => JSON.stringify(el.textContent.trim().slice(0, 40));
  const elements = Array.from(document.querySelectorAll("body *")).filter(
    (el) => !exempt(el) && textOf(el).length && visible(el));

  // 1. Two text elements of one table row must not overlap.
  for (const row of document.querySelectorAll("tr")) {
    const inRow = elements.filter((el) => el.closest("tr") === row);
    const boxes = inRow.map((el) => [el, rectsOf(el)]);
    for (let i = 0; i < boxes.length; i++) {
      for (let j = i + 1; j < boxes.length; j++) {
        const [a, ra] = boxes[i], [b, rb] = boxes[j];
        const hit = ra.some((x) => rb.some((y) =>
          Math.min(x.right, y.right) - Math.max(x.left, y.left) > 1 &&
          Math.min(x.bottom, y.bottom) - Math.max(x.top, y.top) > 1));
        if (hit) problems.push(`overlap in a table row: ${name(a)} and ${name(b)}`);
      }
    }
  }

  // 2. No text element narrower than its longest word: the word must sit on one line, inside.
  for (const el of elements) {
    const box = el.getBoundingClientRect();
    for (const node of textOf(el)) {
      const text = node.textContent;
      const re = /[^\s-]+-?/g;  // a break may follow a hyphen, nowhere else
      let match;
      while ((match = re.exec(text))) {
        const range = document.createRange();
        range.setStart(node, match.index);
        range.setEnd(node, match.index + match[0].length);
        const lines = new Set(Array.from(range.getClientRects())
          .filter((r) => r.width > 0).map((r) => Math.round(r.top)));
        const word = range.getBoundingClientRect();
        if (lines.size > 1) {
          problems.push(`word broken across lines: ${JSON.stringify(match[0])} in ${name(el)}`);
        } else if (word.width > box.width + 1 && getComputedStyle(el).display !== "inline") {
          problems.push(`element narrower than its word ${JSON.stringify(match[0])}: ${Math.round(box.width)} px < ${Math.round(word.width)} px`);
        }
      }
    }
  }

  // 3. Nothing cut off: no sideways scrolling of the page or of a changelist's results.
  const page = document.documentElement;
  if (page.scrollWidth > page.clientWidth + 1) {
    problems.push(`the page scrolls sideways: ${page.scrollWidth} px wide in ${page.clientWidth} px`);
  }
  for (const results of document.querySelectorAll(".results, .module")) {
    if (results.scrollWidth > results.clientWidth + 1 && getComputedStyle(results).overflowX !== "visible") {
      problems.push(`${results.className} is cut off: ${results.scrollWidth} px of content in ${results.clientWidth} px`);
    }
  }
  return Array.from(new Set(problems));
})
