// Browser login through the gateway and the test IdP's devInteractions pages.
//
//   node tests/idp/login-flow.mjs <gateway_url> <username> <screenshot_path>
//
// Opens <gateway_url> (a page that must redirect to the IdP), signs in on the IdP
// login form with <username> (any password), approves the consent page if shown,
// waits until the browser is back on the gateway origin, takes a full-page
// screenshot and prints ONE JSON line to stdout:
//
//   {"final_url":"...","body_text":"..."}
//
// Exit 0 on success; on failure the error goes to stderr and the exit code is 1.
// Env: CHROMIUM (default /usr/bin/chromium), LOGIN_FLOW_TIMEOUT_MS (default 30000),
//      LOGIN_PASSWORD (default "password").
// Requests to non-loopback hosts are blocked so the browser stays offline.

import process from 'node:process';

import { chromium } from 'playwright-core';

const [gatewayArg, username, screenshotPath] = process.argv.slice(2);
if (!gatewayArg || !username || !screenshotPath) {
  process.stderr.write('usage: node login-flow.mjs <gateway_url> <username> <screenshot_path>\n');
  process.exit(2);
}

const TIMEOUT_MS = Number.parseInt(process.env.LOGIN_FLOW_TIMEOUT_MS || '30000', 10);
const PASSWORD = process.env.LOGIN_PASSWORD || 'password';
const gateway = new URL(gatewayArg);
// The page to open: <gateway_url> itself (a bare origin opens `/`).
const startUrl = gateway.href;
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1', gateway.hostname]);

let browser;

function fail(err) {
  process.stderr.write(`login-flow failed: ${err?.stack || err}\n`);
  const done = () => process.exit(1);
  if (browser) browser.close().then(done, done); else done();
  setTimeout(done, 3000).unref();
}

const overall = setTimeout(() => fail(new Error(`overall timeout of ${TIMEOUT_MS} ms exceeded`)), TIMEOUT_MS);

const onGateway = (u) => {
  try {
    return new URL(u).origin === gateway.origin;
  } catch {
    return false;
  }
};

async function run() {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
  await context.route('**/*', (route) => {
    let host;
    try {
      host = new URL(route.request().url()).hostname;
    } catch {
      return route.abort();
    }
    if (LOOPBACK.has(host) || host.startsWith('127.')) return route.continue();
    return route.abort('blockedbyclient');
  });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);

  const trail = [];
  page.on('framenavigated', (frame) => {
    if (frame === page.mainFrame()) trail.push(frame.url());
  });

  await page.goto(startUrl, { waitUntil: 'domcontentloaded' });

  let loggedIn = false;
  let consented = false;
  for (let step = 0; step < 10 && !onGateway(page.url()); step += 1) {
    await page.waitForLoadState('domcontentloaded');
    if (onGateway(page.url())) break;

    const loginInput = page.locator('form input[name="login"]');
    const consentForm = page.locator('form:has(input[name="prompt"][value="consent"])');

    if (!loggedIn && await loginInput.count() > 0) {
      await loginInput.fill(username);
      await page.locator('form input[name="password"]').fill(PASSWORD);
      const before = page.url();
      await Promise.all([
        page.waitForURL((u) => u.href !== before, { waitUntil: 'domcontentloaded' }),
        page.locator('form button[type="submit"]').first().click(),
      ]);
      loggedIn = true;
    } else if (!consented && await consentForm.count() > 0) {
      const before = page.url();
      await Promise.all([
        page.waitForURL((u) => u.href !== before, { waitUntil: 'domcontentloaded' }),
        consentForm.locator('button[type="submit"]').first().click(),
      ]);
      consented = true;
    } else {
      // Something else (redirect in flight, or an IdP error page): give it a moment.
      try {
        await page.waitForURL((u) => onGateway(u.href), { timeout: 5000, waitUntil: 'domcontentloaded' });
      } catch {
        const text = await page.evaluate(() => document.body?.innerText || '').catch(() => '');
        throw new Error(`stuck at ${page.url()} (after login=${loggedIn}, consent=${consented}): ${text.slice(0, 500)}`);
      }
    }
  }

  if (!onGateway(page.url())) {
    throw new Error(`did not return to the gateway origin ${gateway.origin}; at ${page.url()}`);
  }
  if (!loggedIn || !trail.some((u) => !onGateway(u))) {
    const text = await page.evaluate(() => document.body?.innerText || '').catch(() => '');
    throw new Error(`the gateway did not send the browser to the IdP login form (at ${page.url()}, trail: ${trail.join(' -> ')}): ${text.slice(0, 300)}`);
  }
  await page.waitForLoadState('load');
  try {
    await page.waitForLoadState('networkidle', { timeout: 3000 });
  } catch {
    // ignore: a page that keeps polling is fine
  }

  await page.screenshot({ path: screenshotPath, fullPage: true });
  const bodyText = await page.evaluate(() => document.body?.innerText ?? '');
  const finalUrl = page.url();
  process.stderr.write(`login-flow: navigation trail:\n  ${trail.join('\n  ')}\n`);

  await browser.close();
  browser = undefined;
  clearTimeout(overall);
  process.stdout.write(`${JSON.stringify({ final_url: finalUrl, body_text: bodyText })}\n`, () => process.exit(0));
}

run().catch(fail);
