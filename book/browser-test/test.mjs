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
    viewport: { width: 1280, height: 900 },
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
      }));
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

/** Breaks a copy of the built book in every way the check must catch, and checks it does. */
async function selfTest(bookDir) {
  const copy = await fs.mkdtemp(path.join(os.tmpdir(), 'book-broken-'));
  await fs.cp(bookDir, copy, { recursive: true });
  const pages = (await tocPages(copy)).filter((p) => p !== 'index.html' && p !== 'print.html');
  const victim = path.join(copy, pages[0]);
  const html = await fs.readFile(victim, 'utf8');
  const breakage = `
    <p><img src="no-such-image.png" alt="broken"></p>
    <pre><code class="language-rust"></code></pre>
    <p>{{#include ../../steps/nowhere.rs}}</p>
    <p><a href="no-such-page.html">dead link</a> <a href="${pages[0]}#no-such-anchor">dead anchor</a></p>
    <img src="https://fonts.example.invalid/font.png" alt="remote">
    <script>console.error('deliberate console error')</script>
  `;
  await fs.writeFile(victim, html.replace('</main>', `${breakage}</main>`));
  // Each kind of problem, and a word that ties it to this breakage (not to a problem the book
  // already had).
  const expected = [['broken image', 'no-such-image'], ['empty code block', pages[0]],
    ['include not processed', 'nowhere.rs'], ['link to a missing page', 'no-such-page'],
    ['link to a missing anchor', 'no-such-anchor'], ['external request', 'example.invalid'],
    ['console error', 'deliberate'], ['HTTP 404', 'no-such-image']];
  const problems = await checkBook(copy, { screenshot: false });
  await fs.rm(copy, { recursive: true, force: true });
  const missed = expected
    .filter(([kind, token]) => !problems.some((p) => p.includes(kind) && p.includes(token)))
    .map(([kind]) => kind);
  for (const [kind, token] of expected) {
    for (const p of problems.filter((p) => p.includes(kind) && p.includes(token))) console.log(`  caught: ${p}`);
  }
  if (missed.length) {
    console.error(`self-test FAILED: not caught: ${missed.join(', ')}`);
    return false;
  }
  console.log(`self-test: all ${expected.length} kinds of breakage caught`);
  return true;
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
