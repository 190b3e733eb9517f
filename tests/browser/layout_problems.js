// Problems a page's layout may have, found by the browser: the page scrolls sideways; a text
// element is clipped (its content wider than its box) or narrower than its longest word; two
// cells of a table row overlap. Evaluated by tests/browser/test_clients_browser.py.
() => {
  const problems = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > window.innerWidth + 1) {
    problems.push(`page scrolls sideways: ${doc.scrollWidth} > ${window.innerWidth}`);
  }
  const name = (el) => `${el.tagName.toLowerCase()}.${el.className || ""} "${el.innerText.trim().slice(0, 40)}"`;
  const probe = document.createElement("span");
  probe.style.cssText = "position:absolute;visibility:hidden;white-space:nowrap";
  document.body.appendChild(probe);
  const selector = "#content td, #content th, #content label, #content .help, #content p, " +
                   "#content h1, #content h2, #content a.button, #content input[type=submit]";
  for (const el of document.querySelectorAll(selector)) {
    const box = el.getBoundingClientRect();
    if (box.width <= 1 || getComputedStyle(el).visibility === "hidden" || el.closest(".visually-hidden")) continue;
    if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== "visible") {
      problems.push(`clipped: ${name(el)}`);
    }
    // Each word in the font it is drawn in (a <code> inside a cell is monospace).
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    let narrow = null;
    for (let node = walker.nextNode(); node && !narrow; node = walker.nextNode()) {
      probe.style.font = getComputedStyle(node.parentElement).font;
      for (const word of node.textContent.split(/\s+/).filter(Boolean)) {
        probe.textContent = word;
        if (probe.getBoundingClientRect().width > box.width + 1) { narrow = word; break; }
      }
    }
    if (narrow) problems.push(`narrower (${Math.round(box.width)}px) than its word "${narrow}": ${name(el)}`);
  }
  probe.remove();
  for (const row of document.querySelectorAll("#content tr")) {
    const cells = [...row.children].map((c) => [c, c.getBoundingClientRect()]).filter(([, b]) => b.width);
    for (let i = 0; i < cells.length; i++) {
      for (let j = i + 1; j < cells.length; j++) {
        const [a, b] = [cells[i][1], cells[j][1]];
        if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1) {
          problems.push(`overlap: ${name(cells[i][0])} / ${name(cells[j][0])}`);
        }
      }
    }
  }
  return problems;
}
