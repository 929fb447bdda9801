// The book as a reader sees it: every page of the built book (book/book) opened in Debian's
// Chromium, driven headless by playwright-core.
//
//   node test.mjs [BOOK_DIR]      check the built book (default: ../book)
//   node test.mjs --self-test     break a copy of the built book on purpose and check that
//                                 every kind of breakage is caught
//
// A page fails on: a console error or uncaught exception, a failed request or an HTTP error,
// any request that leaves 127.0.0.1 (the book must work offline), a broken image, an empty code
// block, an include mdBook left unprocessed, a link to a page or #fragment that does not exist;
// the print page must hold every chapter.
// Pages must fit a 1280 px wide window with the sidebar open (every <details> opened first):
// no code block or table scrolls sideways, nothing sticks out of the text column, a code block
// holds 101 columns of its font without wrapping (rustfmt's 100, plus a diff's +/- column), and
// no short table cell (an identifier, a number and its unit) breaks over two lines.
// Figures (images under figures/) must load, show at a nonzero size, have alt text and a
// caption paragraph starting "Figure:", and every file in figures/ must be shown somewhere.
// Then a search typed into the search bar must find a known word, and a screenshot of one
// chapter is saved to out/ (gitignored).

import { chromium } from 'playwright-core';
import http from 'node:http';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// A word the search must find, and the chapter whose screenshot is kept.
const SEARCH_WORD = 'graceful';
const SCREENSHOT_PAGE = 'step-03-shutdown.html';
// The window the pages must fit, and the widest code line that must fit without wrapping.
const VIEWPORT = { width: 1280, height: 900 };
const CODE_COLUMNS = 101;
// A table cell that is one short token (no space, at most this many characters: `step-01`,
// `non-2xx`) or a number and its unit (`1.76 ms`, `≈ 46 k`) must stay on one line.
const SHORT_CELL = 20;

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css',
  '.svg': 'image/svg+xml', '.png': 'image/png', '.jpg': 'image/jpeg', '.woff2': 'font/woff2',
  '.woff': 'font/woff', '.ttf': 'font/ttf', '.json': 'application/json', '.txt': 'text/plain',
};

/** Serves `root` on 127.0.0.1 on a free port; resolves to { base, close }. */
function serve(root) {
  const server = http.createServer(async (req, res) => {
    try {
      let file = decodeURIComponent(new URL(req.url, 'http://x').pathname);
      if (file.endsWith('/')) file += 'index.html';
      const full = path.join(root, path.normalize(file));
      if (!full.startsWith(root)) throw new Error('outside the book');
      const body = await fs.readFile(full);
      res.writeHead(200, { 'content-type': TYPES[path.extname(full)] || 'application/octet-stream' });
      res.end(req.method === 'HEAD' ? undefined : body);
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
    }
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({ base: `http://127.0.0.1:${port}/`, close: () => new Promise((r) => server.close(r)) });
    });
  });
}

/** The chapters in the book's table of contents, plus the print page. */
async function tocPages(bookDir) {
  const toc = await fs.readFile(path.join(bookDir, 'toc.html'), 'utf8');
  const pages = new Set(['index.html']);
  for (const [, href] of toc.matchAll(/<a href="([^"#:]+\.html)"/g)) pages.add(href);
  pages.add('print.html');
  return [...pages];
}

async function launch() {
  const userDataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'book-chromium-'));
  const browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: VIEWPORT,
  });
  return {
    context: browser,
    close: async () => {
      await browser.close();
      await fs.rm(userDataDir, { recursive: true, force: true });
    },
  };
}

/** Opens every page; returns a list of problems, each `page: kind: detail`. */
async function checkBook(bookDir, { screenshot = true } = {}) {
  const problems = [];
  const { base, close: stop } = await serve(path.resolve(bookDir));
  const { context, close } = await launch();
  // Anything that leaves the local server is refused and reported: the book must work offline.
  let current = '';
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(base) || url.startsWith('data:')) return route.continue();
    problems.push(`${current}: external request: ${url}`);
    return route.abort();
  });
  const ids = new Map(); // page → Set of element ids, for #fragment links
  const links = []; // { from, href }
  const figuresShown = new Set(); // figures/… paths some page shows
  try {
    const page = await context.newPage();
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push(`${current}: console error: ${msg.text()}`);
    });
    page.on('pageerror', (error) => problems.push(`${current}: uncaught exception: ${error.message}`));
    page.on('requestfailed', (req) => {
      // ERR_ABORTED is a load cut short by the next navigation (a favicon, typically), or a
      // request the route above refused and already reported; a missing file shows as a 404.
      const aborted = req.failure()?.errorText === 'net::ERR_ABORTED';
      if (req.url().startsWith(base) && !aborted) problems.push(`${current}: failed request: ${req.url()} (${req.failure()?.errorText})`);
    });
    page.on('response', (res) => {
      if (res.status() >= 400) problems.push(`${current}: HTTP ${res.status()}: ${res.url()}`);
    });

    for (const name of await tocPages(bookDir)) {
      current = name;
      await page.goto(base + name, { waitUntil: 'load' });
      const found = await page.evaluate(() => ({
        brokenImages: [...document.images]
          .filter((img) => !img.complete || img.naturalWidth === 0)
          .map((img) => img.getAttribute('src')),
        emptyCode: [...document.querySelectorAll('pre code, pre:not(:has(code))')]
          .filter((el) => el.textContent.trim() === '')
          .map((el) => el.outerHTML.slice(0, 80)),
        unprocessed: (document.querySelector('main')?.innerText || '').match(/\{\{#\w+[^}]*\}\}/g) || [],
        ids: [...document.querySelectorAll('[id]')].map((el) => el.id),
        links: [...document.querySelectorAll('main a[href]')].map((a) => a.href),
        headings: document.querySelectorAll('main h1').length,
        figures: [...document.querySelectorAll('main img')]
          .filter((img) => /(^|\/)figures\//.test(img.getAttribute('src') || ''))
          .map((img) => new URL(img.src).pathname.replace(/^.*?(figures\/)/, '$1')),
      }));
      found.layout = await page.evaluate(measureLayout, { CODE_COLUMNS, SHORT_CELL });
      for (const p of found.layout) problems.push(`${name}: ${p}`);
      for (const f of found.figures) figuresShown.add(f);
      for (const src of found.brokenImages) problems.push(`${name}: broken image: ${src}`);
      for (const html of found.emptyCode) problems.push(`${name}: empty code block: ${html}`);
      for (const text of found.unprocessed) problems.push(`${name}: include not processed: ${text}`);
      // The print page must hold every chapter (each starts with a level-1 heading).
      const chapters = (await tocPages(bookDir)).length - 2; // not index.html, not print.html
      if (name === 'print.html' && found.headings < chapters) {
        problems.push(`print.html: only ${found.headings} chapter headings for ${chapters} chapters`);
      }
      ids.set(name, new Set(found.ids));
      for (const href of found.links) links.push({ from: name, href });
      if (screenshot && name === SCREENSHOT_PAGE) {
        await fs.mkdir(path.join(HERE, 'out'), { recursive: true });
        await page.screenshot({ path: path.join(HERE, 'out', 'step-03-shutdown.png'), fullPage: false });
      }
    }

    // Every figure in the book's figures/ folder is shown on some page.
    const figureDir = path.join(bookDir, 'figures');
    const figureFiles = await fs.readdir(figureDir).catch(() => []);
    for (const file of figureFiles) {
      if (!figuresShown.has(`figures/${file}`)) problems.push(`figures/${file}: figure not shown on any page`);
    }

    // Links: the target page must exist; a #fragment must exist on a page we opened.
    for (const { from, href } of links) {
      if (!href.startsWith(base)) continue;
      const url = new URL(href);
      const target = url.pathname.slice(1) || 'index.html';
      const response = await fetch(new URL(url.pathname, base), { method: 'HEAD' });
      if (!response.ok) {
        problems.push(`${from}: link to a missing page: ${target}`);
      } else if (url.hash && ids.has(target) && !ids.get(target).has(decodeURIComponent(url.hash.slice(1)))) {
        problems.push(`${from}: link to a missing anchor: ${target}${url.hash}`);
      }
    }

    // Search, as a reader does it: press `s`, type (mdBook listens for key events), read results.
    current = 'search';
    await page.goto(base + 'index.html', { waitUntil: 'load' });
    await page.keyboard.press('s');
    await page.waitForSelector('#mdbook-searchbar', { state: 'visible', timeout: 5000 });
    await page.keyboard.type(SEARCH_WORD, { delay: 20 });
    const hits = await page
      .waitForFunction(() => document.querySelectorAll('#mdbook-searchresults li').length > 0, null, { timeout: 5000 })
      .then(() => page.$$eval('#mdbook-searchresults li', (items) => items.length))
      .catch(() => 0);
    if (hits === 0) problems.push(`search: typing "${SEARCH_WORD}" found nothing`);
    else console.log(`search: "${SEARCH_WORD}" found ${hits} result(s)`);
  } finally {
    await close();
    await stop();
  }
  return problems;
}

/**
 * Runs in the page: what a reader at this window width would see cut, scrolled or squeezed.
 * Returns a list of problems. Opens every <details> first, so folded solutions and diffs are
 * measured too.
 */
function measureLayout({ CODE_COLUMNS, SHORT_CELL }) {
  const problems = [];
  const sidebar = document.querySelector('#mdbook-sidebar-toggle-anchor');
  if (sidebar && !sidebar.checked) problems.push('the sidebar is closed: widths are not measured as a reader sees them');
  for (const details of document.querySelectorAll('main details')) details.open = true;
  const main = document.querySelector('main');
  if (!main) return problems;
  const describe = (el) => {
    const text = (el.innerText || el.textContent || '').split('\n');
    const longest = text.reduce((a, b) => (b.length > a.length ? b : a), '');
    return `"${longest.trim().slice(0, 60)}"`;
  };
  // Scrolling sideways: the blocks that scroll (pre, pre > code, the table wrapper) and tables.
  for (const el of main.querySelectorAll('pre, pre > code, table, .table-wrapper')) {
    if (el.scrollWidth > el.clientWidth + 1) {
      const kind = el.closest('table, .table-wrapper') ? 'table' : 'code block';
      problems.push(`${kind} scrolls sideways by ${el.scrollWidth - el.clientWidth} px: ${describe(el)}`);
    }
  }
  // Sticking out of the column (the page itself clips sideways: mdBook hides body overflow).
  const right = main.getBoundingClientRect().right;
  for (const el of main.querySelectorAll(':scope > *, pre, table, img')) {
    if (el.closest('.img-wrapper')) continue; // mdBook's click-to-zoom copy of an image
    if (el.matches('table') && el.closest('.table-wrapper')) continue; // reported as scrolling
    const box = el.getBoundingClientRect();
    if (box.width > 0 && box.right > right + 1) {
      problems.push(`${el.tagName.toLowerCase()} sticks out of the text column by ${Math.round(box.right - right)} px: ${describe(el)}`);
    }
  }
  // A code block must hold CODE_COLUMNS columns of its own font without wrapping.
  let checked = 0;
  for (const code of main.querySelectorAll('pre > code')) {
    if (checked++ > 400) break;
    const probe = document.createElement('span');
    probe.textContent = 'x'.repeat(CODE_COLUMNS);
    probe.style.cssText = 'position:absolute;visibility:hidden;white-space:pre;';
    code.appendChild(probe);
    const needed = probe.getBoundingClientRect().width;
    probe.remove();
    const style = getComputedStyle(code);
    const room = code.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    if (room > 0 && needed > room + 0.5) {
      problems.push(`code block holds only ${Math.floor((room / needed) * CODE_COLUMNS)} of ${CODE_COLUMNS} columns: ${describe(code)}`);
    }
  }
  // Short tokens in table cells stay on one line; prose and headers may wrap between words.
  const numberWithUnit = /^[≈~<>≤≥]?\s?[\d.,]+\s?[\w%µ/]{0,5}$/u;
  for (const cell of main.querySelectorAll('td, th')) {
    const text = cell.innerText.trim();
    if (!text || text.length > SHORT_CELL || text.includes('\n')) continue;
    if (/\s/.test(text) && !numberWithUnit.test(text)) continue;
    const tops = [];
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const range = document.createRange();
      range.selectNodeContents(node);
      for (const r of range.getClientRects()) if (r.width > 0) tops.push(r.top);
    }
    if (tops.length && Math.max(...tops) - Math.min(...tops) > 8) {
      problems.push(`table cell "${text}" breaks over two lines`);
    }
  }
  // Figures: shown at a size, described, captioned.
  for (const img of main.querySelectorAll('img')) {
    if (img.closest('.img-wrapper')) continue;
    const src = img.getAttribute('src') || '';
    const box = img.getBoundingClientRect();
    if (img.complete && img.naturalWidth > 0 && (box.width < 1 || box.height < 1)) {
      problems.push(`image shows at zero size: ${src}`);
    }
    if (!/(^|\/)figures\//.test(src)) continue;
    if (!(img.getAttribute('alt') || '').trim()) problems.push(`figure without alt text: ${src}`);
    const block = img.closest('p');
    const caption = block && block.nextElementSibling;
    if (!caption || !caption.textContent.trim().startsWith('Figure:')) {
      problems.push(`figure without a "Figure:" caption paragraph under it: ${src}`);
    }
  }
  return problems;
}

/** Breaks a copy of the built book in every way the check must catch, and checks it does. */
async function selfTest(bookDir) {
  const copy = await fs.mkdtemp(path.join(os.tmpdir(), 'book-broken-'));
  await fs.cp(bookDir, copy, { recursive: true });
  const pages = (await tocPages(copy)).filter((p) => p !== 'index.html' && p !== 'print.html');
  const victim = path.join(copy, pages[0]);
  const html = await fs.readFile(victim, 'utf8');
  const longLine = `let overflowing = "${'x'.repeat(150)}";`;
  const breakage = `
    <p><img src="no-such-image.png" alt="broken"></p>
    <pre><code class="language-rust"></code></pre>
    <p>{{#include ../../steps/nowhere.rs}}</p>
    <p><a href="no-such-page.html">dead link</a> <a href="${pages[0]}#no-such-anchor">dead anchor</a></p>
    <img src="https://fonts.example.invalid/font.png" alt="remote">
    <script>console.error('deliberate console error')</script>
    <pre><code class="language-rust hljs" style="white-space: pre">${longLine}</code></pre>
    <div class="table-wrapper"><table><tr>${'<td><code>a_rather_long_identifier</code></td>'.repeat(12)}</tr></table></div>
    <table><tr><td style="width: 1px; white-space: normal !important">step-01</td><td>${'a long cell of prose '.repeat(20)}</td></tr></table>
    <p><img src="figures/no-caption.svg"></p>
    <p><img src="figures/no-caption.svg" alt="squashed" width="0" height="0"></p>
  `;
  await fs.writeFile(victim, html.replace('</main>', `${breakage}</main>`));
  // A figure that no page shows, and one the broken page shows without alt text or caption.
  const svg = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10" width="10" height="10"><rect width="10" height="10"/></svg>';
  await fs.mkdir(path.join(copy, 'figures'), { recursive: true });
  await fs.writeFile(path.join(copy, 'figures', 'orphan.svg'), svg);
  await fs.writeFile(path.join(copy, 'figures', 'no-caption.svg'), svg);
  // A page that lost the book's extra stylesheet (book.toml's additional-css): its code is
  // back in mdBook's narrow column, where 100-column lines no longer fit.
  const unstyled = await largestPage(copy, pages.slice(1));
  const unstyledHtml = await fs.readFile(path.join(copy, unstyled), 'utf8');
  const withoutFit = unstyledHtml.replace(/<link rel="stylesheet" href="fit[^"]*\.css">/, '');
  if (withoutFit === unstyledHtml) throw new Error(`self-test: no fit*.css link found in ${unstyled}`);
  await fs.writeFile(path.join(copy, unstyled), withoutFit);
  // Each kind of problem, and a word that ties it to this breakage (not to a problem the book
  // already had).
  const expected = [['broken image', 'no-such-image'], ['empty code block', pages[0]],
    ['include not processed', 'nowhere.rs'], ['link to a missing page', 'no-such-page'],
    ['link to a missing anchor', 'no-such-anchor'], ['external request', 'example.invalid'],
    ['console error', 'deliberate'], ['HTTP 404', 'no-such-image'],
    ['code block scrolls sideways', 'overflowing'], ['table scrolls sideways', 'a_rather_long'],
    ['breaks over two lines', 'step-01'], ['figure not shown on any page', 'orphan.svg'],
    ['figure without alt text', 'no-caption.svg'], ['without a "Figure:" caption', 'no-caption.svg'],
    ['image shows at zero size', 'no-caption.svg'], ['holds only', unstyled]];
  const problems = await checkBook(copy, { screenshot: false });
  await fs.rm(copy, { recursive: true, force: true });
  const missed = expected
    .filter(([kind, token]) => !problems.some((p) => p.includes(kind) && p.includes(token)))
    .map(([kind]) => kind);
  for (const [kind, token] of expected) {
    const caught = problems.filter((p) => p.includes(kind) && p.includes(token));
    for (const p of caught.slice(0, 2)) console.log(`  caught: ${p}`);
    if (caught.length > 2) console.log(`  caught: … and ${caught.length - 2} more like it`);
  }
  if (missed.length) {
    console.error(`self-test FAILED: not caught: ${missed.join(', ')}`);
    return false;
  }
  console.log(`self-test: all ${expected.length} kinds of breakage caught`);
  return true;
}

/** The page with the most HTML among `pages` (the one with the most code to measure). */
async function largestPage(dir, pages) {
  let best = pages[0];
  let bestSize = -1;
  for (const page of pages) {
    const { size } = await fs.stat(path.join(dir, page));
    if (size > bestSize) [best, bestSize] = [page, size];
  }
  return best;
}

const args = process.argv.slice(2);
const bookDir = path.resolve(args.find((a) => !a.startsWith('--')) || path.join(HERE, '..', 'book'));
if (args.includes('--self-test')) {
  process.exit((await selfTest(bookDir)) ? 0 : 1);
}
const problems = await checkBook(bookDir);
for (const p of problems) console.error(`  ${p}`);
const pages = (await tocPages(bookDir)).length;
if (problems.length) {
  console.error(`browser test: ${problems.length} problem(s) in ${pages} pages`);
  process.exit(1);
}
console.log(`browser test: ${pages} pages, no problems`);
