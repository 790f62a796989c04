// Drive mitmweb in headless Chromium: log in, read the flow list, take screenshots.
//
// Used by tests/browser/mitmweb_stack.py (the browser test and scripts/screenshots.py).
// Reads one JSON spec on stdin, prints one JSON report on stdout:
//
//   spec   {url, password, chromium, profile, out, width, height, columnWidths, expectRows, loginShot,
//           shots: [{name, flow, tab, view, optional, split, height}]}
//            flow: null for the flow list, else the flow's number in the "#" column (1-based)
//            tab: request | response | connection | timing | comment
//            view: a content view to pick in "View:" (matched case-insensitively), or null;
//            optional: true skips the shot (skipped: true) when that view is not offered
//            loginShot: file stem for a screenshot of the login page, or null
//            split: x position of the list/detail splitter (px), height: viewport height
//   report {login, rows: [{index, path, mark, method, status, comment}],
//           shots: [{name, file, title, text, views, skipped}]}
//
// Waits on selectors only. Chromium is the system's (spec.chromium), with a fresh profile.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const spec = JSON.parse(fs.readFileSync(0, 'utf8'));
const TIMEOUT = 15000;
const ROWS = '.flow-table tbody tr.has-request';

const context = await chromium.launchPersistentContext(spec.profile, {
  executablePath: spec.chromium,
  headless: true,
  viewport: { width: spec.width ?? 1400, height: spec.height ?? 800 },
  deviceScaleFactor: 1,
  colorScheme: 'light',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
const report = { login: null, rows: [], shots: [] };
try {
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  if (spec.columnWidths) {
    // mitmweb keeps the widths a user dragged the column borders to in localStorage.
    await page.addInitScript((widths) => {
      localStorage.setItem('mitmweb-column-widths', JSON.stringify(widths));
    }, spec.columnWidths);
  }

  // mitmweb 12 answers every page with 403 and a password form until the auth cookie is set.
  await page.goto(spec.url + '/');
  const form = page.locator('form input[name="token"][type="password"]');
  if (await form.count()) {
    report.login = (await page.locator('h1').innerText()).trim();
    if (spec.loginShot) {
      await page.setViewportSize({ width: 900, height: 300 });
      await page.screenshot({ path: path.join(spec.out, `${spec.loginShot}.png`) });
      await page.setViewportSize({ width: spec.width ?? 1400, height: spec.height ?? 800 });
    }
    await form.fill(spec.password);
    await page.locator('form input[type="submit"]').click();
  }
  // The list is virtualized: only rows within the viewport (about 19 at 800 px) are in the DOM.
  await page.waitForFunction(
    ([selector, n]) => document.querySelectorAll(selector).length >= n,
    [ROWS, spec.expectRows ?? 1],
  );
  await page.locator('.connection-indicator.established').waitFor({ state: 'attached' });

  report.rows = await page.locator(ROWS).evaluateAll((rows) => rows.map((row) => {
    const cell = (name) => row.querySelector(`td.col-${name}`);
    const text = (name) => (cell(name)?.innerText ?? '').trim();
    const pathCell = cell('path');
    const mark = pathCell?.querySelector('.marker')?.textContent ?? '';
    return {
      index: Number(text('index')) || null,
      path: (pathCell?.textContent ?? '').slice(mark.length).trim(),
      mark,
      method: text('method'),
      status: text('status'),
      comment: cell('comment') ? cell('comment').textContent.trim() : null,
    };
  }));

  for (const shot of spec.shots ?? []) {
    await page.setViewportSize({ width: spec.width ?? 1400, height: shot.height ?? spec.height ?? 800 });
    const result = { name: shot.name, file: path.join(spec.out, `${shot.name}.png`), title: null, text: null,
                     views: null, skipped: false };
    if (shot.flow == null) {
      if (await page.locator('.flow-detail').count()) {
        await page.locator('.flow-detail .close-button').click();
      }
      await page.locator('.flow-detail').waitFor({ state: 'detached' });
      await page.locator('header nav a', { hasText: 'Flow List' }).click();
    } else {
      // Click the "#" cell: clicking the middle of a row wider than the list would scroll the list sideways.
      await page.locator(`${ROWS} td.col-index`).getByText(String(shot.flow), { exact: true }).click();
      await page.locator('.flow-detail').waitFor();
      const tab = page.locator('.flow-detail nav a', { hasText: new RegExp(`^${shot.tab ?? 'request'}$`, 'i') });
      await tab.click();
      await page.locator('.flow-detail nav a.active', { hasText: new RegExp(`^${shot.tab ?? 'request'}$`, 'i') })
        .waitFor();
      if (shot.split) {
        const splitter = await page.locator('.splitter-x').boundingBox();
        const y = splitter.y + 60;
        await page.mouse.move(splitter.x + splitter.width / 2, y);
        await page.mouse.down();
        await page.mouse.move(shot.split, y, { steps: 4 });
        await page.mouse.up();
      }
      const contentview = page.locator('.flow-detail .contentview');
      if (shot.view) {
        await contentview.locator('.controls a', { hasText: 'View:' }).click();
        const menu = contentview.locator('ul.dropdown-menu.is-open');
        await menu.waitFor();
        result.views = (await menu.locator('li a').allInnerTexts()).map((v) => v.trim());
        const wanted = result.views.find((v) => v.toLowerCase() === shot.view.toLowerCase());
        if (!wanted && shot.optional) {
          await contentview.locator('.controls a', { hasText: 'View:' }).click();  // closes the menu
          await menu.waitFor({ state: 'detached' });
          result.skipped = true;
          report.shots.push(result);
          continue;
        }
        if (!wanted) throw new Error(`no content view ${JSON.stringify(shot.view)} among ${result.views.join(', ')}`);
        await menu.locator('li a', { hasText: wanted }).first().click();
        await contentview.locator('.controls a', { hasText: `View: ${wanted}` }).waitFor();
        await menu.waitFor({ state: 'detached' });
      }
      const title = contentview.locator('.controls h5');
      if (await title.count()) result.title = (await title.first().innerText()).trim();
      result.text = (await page.locator('.flow-detail section').innerText()).trim();
    }
    await page.screenshot({ path: result.file });
    report.shots.push(result);
  }
} finally {
  await context.close();
}
process.stdout.write(JSON.stringify(report));
