// Drives examples/chat's own page in headless Chromium: two players join, one sends a message,
// both see it; then both stay joined past three heartbeat intervals (the page's own heartbeats
// keep them) and chat again. Usage: node chat.mjs <page url>. Prints a JSON summary; exits
// non-zero on failure.
import { chromium } from 'playwright-core';

const url = process.argv[2];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const lines = (page) => page.$$eval('#log li', (lis) => lis.map((li) => li.textContent));
const waitLine = (page, text) => page.waitForFunction(
  (t) => [...document.querySelectorAll('#log li')].some((li) => li.textContent === t), text, { timeout: 10000 });
try {
  const alice = await browser.newPage();
  await alice.goto(url);
  await alice.waitForFunction(() => document.getElementById('status').textContent === 'joined', null, { timeout: 10000 });
  const bob = await browser.newPage();
  await bob.goto(url);
  await bob.waitForFunction(() => document.getElementById('status').textContent === 'joined', null, { timeout: 10000 });
  await waitLine(alice, 'New user: 2');
  const bobMembers = await bob.textContent('#members');
  await bob.fill('#name', 'bob');
  await bob.fill('#message', 'hello from chromium');
  await bob.click('#send');
  await waitLine(alice, 'bob: hello from chromium');
  await waitLine(bob, 'bob: hello from chromium');
  // More than three intervals: the server's fourth heartbeat has reached both pages.
  for (const page of [alice, bob]) {
    await page.waitForFunction(() => window.chat.heartbeats >= 4, null, { timeout: 30000 });
  }
  const statuses = [await alice.textContent('#status'), await bob.textContent('#status')];
  await alice.fill('#name', 'alice');
  await alice.fill('#message', 'still here');
  await alice.click('#send');
  await waitLine(bob, 'alice: still here');
  await waitLine(alice, 'alice: still here');
  console.log(JSON.stringify({ alice: await lines(alice), bob: await lines(bob), bobMembers, statuses }));
  await browser.close();
} catch (e) {
  console.error('browser test failed:', e.message);
  await browser.close();
  process.exit(1);
}
