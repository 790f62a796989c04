// The MCP Inspector's web UI in headless Chromium, through the proxy, as a person would use it:
// switch the server on, sign in at the IdP's login page the Inspector sends the browser to,
// come back to the Inspector, open Tools, run hello-world.
//
//   node inspector.mjs '{"url": "<Inspector URL with its API token>", "chromium": "/usr/bin/chromium",
//                        "name": "<argument for hello-world>", "shots": "<folder for screenshots>"}'
//
// Prints one JSON line: {"connected": true, "tools": [...], "result": "<text>"} or {"error": "...", "step": "..."}.
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const spec = JSON.parse(process.argv[2]);
const TIMEOUT = 20000;
let step = 'start';
const browser = await chromium.launch({
  executablePath: spec.chromium,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
page.setDefaultTimeout(TIMEOUT);
const shot = async (name) => {
  fs.mkdirSync(spec.shots, { recursive: true });
  await page.screenshot({ path: path.join(spec.shots, `${name}.png`) });
};
try {
  step = 'open the Inspector';
  await page.goto(spec.url);
  await page.getByText('Disconnected').waitFor();
  step = 'switch the server on';
  await page.locator('input[type=checkbox], [role=switch]').first().click({ force: true });
  step = "sign in at the IdP's login page";
  await page.waitForSelector('input[type=password]');
  await shot('1-login');
  await page.locator('input[name=login], input[name=username]').first().fill('testuser');
  await page.locator('input[type=password]').fill('testpass');
  await page.locator('button[type=submit]').first().click();
  step = 'consent, if asked, and back to the Inspector';
  const inspectorOrigin = new URL(spec.url).origin;
  for (let i = 0; i < 10 && !page.url().startsWith(inspectorOrigin); i++) {
    await page.waitForLoadState();
    const approve = page.locator('button[type=submit]');
    if (!page.url().startsWith(inspectorOrigin) && (await approve.count())) await approve.first().click();
    await page.waitForTimeout(300);
  }
  await page.getByText('Connected', { exact: true }).waitFor();
  await shot('2-connected');
  step = 'list the tools';
  await page.getByText('Tools', { exact: true }).first().click();
  await page.getByText('hello-world', { exact: true }).first().waitFor();
  const tools = [];
  for (const name of ['hello-world', 'count-with-progress', 'whoami']) {
    if (await page.getByText(name, { exact: true }).count()) tools.push(name);
  }
  step = 'run hello-world';
  await page.getByText('hello-world', { exact: true }).first().click();
  await page.getByRole('textbox', { name: 'Name' }).fill(spec.name);
  await page.getByRole('button', { name: 'Execute Tool' }).click();
  const result = page.getByText(`Hello, ${spec.name}!`, { exact: false }).first();
  await result.waitFor();
  await shot('3-tool-result');
  console.log(JSON.stringify({ connected: true, tools, result: await result.innerText() }));
} catch (error) {
  await shot('failed').catch(() => {});
  console.log(JSON.stringify({ error: String(error?.message ?? error), step }));
} finally {
  await browser.close();
}
