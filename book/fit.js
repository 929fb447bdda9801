// Pages that fit (with fit.css): a table cell that is one short token ("step-01", "non-2xx")
// or a number with its unit ("1.76 ms") is marked so that it never breaks over two lines, and
// so is inline code without spaces in a table. Longer cells and headers still wrap between
// words. The browser test (book/browser-test/test.mjs) checks the same rule on every page.
(() => {
  'use strict';
  const numberWithUnit = /^[≈~<>≤≥]?\s?[\d.,]+\s?[\w%µ/]{0,5}$/u;
  const isToken = (text) => text.length > 0 && text.length <= 20
    && (!/\s/.test(text) || numberWithUnit.test(text));
  for (const cell of document.querySelectorAll('main td, main th')) {
    if (isToken(cell.textContent.trim())) cell.classList.add('fit-token');
  }
  for (const code of document.querySelectorAll('main td code, main th code')) {
    if (!/\s/.test(code.textContent.trim())) code.classList.add('fit-token');
  }
})();
