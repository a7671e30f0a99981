// The Reach web console in a real browser: Debian's chromium driven by
// playwright-core (no browser download). Run by tests/console_browser.rs
// against a `reach-server --dev` with its local agent; it passes
// REACH_URL, REACH_USER, REACH_PASSWORD, REACH_MACHINE, REACH_CHROMIUM,
// REACH_SCREENSHOTS, and REACH_BASIC_USER / REACH_BASIC_PASSWORD (a user
// with basic live response only). Exits non-zero on the first failed step.
import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const url = env('REACH_URL');
const user = env('REACH_USER');
const password = env('REACH_PASSWORD');
const machine = env('REACH_MACHINE');
const shots = env('REACH_SCREENSHOTS');
const basicUser = env('REACH_BASIC_USER');
const basicPassword = env('REACH_BASIC_PASSWORD');
mkdirSync(shots, { recursive: true });

const step = (text) => console.log(`- ${text}`);
const fail = (text) => { throw new Error(text); };
const WAIT = 60_000;

const browser = await chromium.launch({
  executablePath: env('REACH_CHROMIUM'),
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
const page = await context.newPage();
page.setDefaultTimeout(WAIT);
const problems = [];
page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
page.on('console', (message) => {
  if (message.type() === 'error' && !message.text().includes('status of 4')) problems.push(`console error: ${message.text()}`);
});
const shot = async (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
const statusOf = () => page.locator('#action-status .badge').getAttribute('data-status');
async function waitForStatus(wanted) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const status = await statusOf();
    if (wanted.includes(status)) return status;
    if (Date.now() > deadline) fail(`the action stayed ${status}, expected ${wanted.join(' or ')}`);
    await page.waitForTimeout(200);
  }
}

try {
  step('the sign-in page, and a clear message on a wrong password');
  await page.goto(url);
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill('certainly not the password');
  await shot('signin');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('Wrong user name or password').waitFor();

  step('sign in; the device list shows the local device online');
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Devices' }).waitFor();
  const row = page.locator('tbody tr', { has: page.locator(`a[href="#/devices/${machine}"]`) });
  await row.waitFor();
  if (!(await row.getByText('Online').isVisible())) fail('the local device is not shown Online');
  await page.locator('#device-search').fill('no-such-device-anywhere');
  await page.getByText('No device matches the search.').waitFor();
  await page.locator('#device-search').fill('');
  await shot('devices');

  step('upload two scripts to the library');
  await page.locator('[data-nav="library"]').click();
  await page.getByRole('heading', { name: 'Library' }).waitFor();
  const upload = async (name, text, description, parameters) => {
    await page.locator('#upload-file').setInputFiles({ name, mimeType: 'text/x-sh', buffer: Buffer.from(text) });
    await page.locator('#upload-description').fill(description);
    await page.locator('#upload-parameters').fill(parameters);
    await page.locator('#upload-submit').click();
    await page.getByText(`Uploaded ${name}`).waitFor();
    await page.locator(`tr[data-file="${name}"]`).waitFor();
  };
  await upload('hello.sh', '#!/bin/sh\necho "hello $1"\necho "to stderr" >&2\n', 'Says hello', '<name>');
  await upload('wait.sh', '#!/bin/sh\necho "waiting: step 1"\nsleep 1\necho "waiting: step 2"\necho "still here" >&2\nsleep 300\n', 'Prints slowly, then waits five minutes', '');
  step('uploading a name again asks before replacing it');
  await page.locator('#upload-file').setInputFiles({ name: 'hello.sh', mimeType: 'text/x-sh', buffer: Buffer.from('#!/bin/sh\necho "hello $1"\necho "to stderr" >&2\n') });
  await page.locator('#upload-submit').click();
  await page.getByRole('heading', { name: 'Replace the library file?' }).waitFor();
  await page.getByRole('button', { name: 'Keep it' }).click();
  await page.getByText('Nothing changed').waitFor();
  await shot('library');

  step('run a script and collect a file on the local device');
  await page.locator('[data-nav="devices"]').click();
  await page.locator(`a[href="#/devices/${machine}"]`).click();
  await page.locator('#run-live-response').click();
  await page.locator('#cmd-0-file').selectOption('hello.sh');
  await page.getByText('— <name>').waitFor();
  await page.locator('#cmd-0-args').fill('"the browser"');
  await page.locator('#add-command').click();
  await page.locator('#cmd-1-type').selectOption('GetFile');
  await page.locator('#cmd-1-path').fill('/etc/hostname');
  step('the order rule is explained before anything is sent');
  await page.getByRole('button', { name: 'Move command 2 up' }).click();
  await page.locator('#run-submit').click();
  await page.getByText('must come before').first().waitFor();
  await page.getByRole('button', { name: 'Move command 2 up' }).click();
  await page.locator('#run-comment').fill('browser test');
  await shot('run');
  await page.locator('#run-submit').click();
  await page.locator('#action-status').waitFor();
  await waitForStatus(['Succeeded']);
  step('the transcript shows inline');
  await page.locator('[data-transcript="0"]').click();
  const stdout = await page.locator('pre[data-stream="stdout"]').textContent();
  if (!stdout.includes('hello the browser')) fail(`unexpected stdout: ${stdout}`);
  const stderr = await page.locator('pre[data-stream="stderr"]').textContent();
  if (!stderr.includes('to stderr')) fail(`unexpected stderr: ${stderr}`);
  await shot('action');
  step('the collected file downloads gzip-compressed with the right bytes');
  const [download] = await Promise.all([page.waitForEvent('download'), page.locator('[data-download="1"]').click()]);
  const saved = await download.path();
  const collected = gunzipSync(readFileSync(saved)).toString();
  if (collected !== readFileSync('/etc/hostname').toString()) fail(`the download holds ${JSON.stringify(collected)}`);

  step('a long script, a refused second action, and cancel');
  await page.locator(`a[href="#/devices/${machine}"]`).first().click();
  await page.locator('#run-live-response').click();
  await page.locator('#cmd-0-file').selectOption('wait.sh');
  await page.locator('#run-submit').click();
  await page.locator('#action-status').waitFor();
  await waitForStatus(['InProgress']);
  step('its output appears live, before the script ends');
  await page.locator('#live-stdout', { hasText: 'waiting: step 1' }).waitFor();
  await page.locator('#live-stdout', { hasText: 'waiting: step 2' }).waitFor();
  await page.locator('#live-stderr', { hasText: 'still here' }).waitFor();
  if ((await statusOf()) !== 'InProgress') fail('the script ended before its output was shown');
  await shot('live-output');
  const longAction = page.url();
  await page.locator(`a[href="#/devices/${machine}"]`).first().click();
  await page.locator('#run-live-response').click();
  await page.locator('#cmd-0-file').selectOption('hello.sh');
  await page.locator('#run-submit').click();
  const refusal = page.locator('#run-status [role="alert"]');
  await refusal.waitFor();
  const refusalText = await refusal.textContent();
  if (!/already|active/i.test(refusalText)) fail(`unexpected refusal: ${refusalText}`);
  await shot('error');
  await page.goto(longAction);
  await page.locator('#live-stdout', { hasText: 'waiting: step 2' }).waitFor();
  await page.locator('#live-cancel').click();
  await page.locator('#confirm-comment').fill('wrong script');
  await page.locator('#confirm-yes').click();
  await waitForStatus(['Cancelled']);
  await page.getByText('wrong script').waitFor();

  step('the action center filters by status');
  await page.locator('[data-nav="actions"]').click();
  await page.getByRole('heading', { name: 'Action center' }).waitFor();
  await page.locator('#filter-status').selectOption('Cancelled');
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('tbody tr')];
    return rows.length === 1 && rows[0].querySelector('[data-status="Cancelled"]');
  });
  await page.locator('#filter-status').selectOption('');
  await page.waitForFunction(() => document.querySelectorAll('tbody tr [data-status]').length >= 2);
  await shot('action-center');

  step('tag the device on its page, and remove the tag');
  await page.locator(`a[href="#/devices/${machine}"]`).first().click();
  await page.locator('#new-tag').fill('incident-42');
  await page.locator('#add-tag').click();
  await page.locator('[data-remove-tag="incident-42"]').waitFor();
  await shot('device-tags');
  await page.locator('[data-nav="devices"]').click();
  await page.locator('tbody tr', { has: page.locator(`a[href="#/devices/${machine}"]`) }).getByText('incident-42').waitFor();

  step('run a script on every device with a tag, chosen by the server, as one batch');
  await page.locator('#run-target').selectOption('tag');
  await page.locator('#run-target-value').fill('incident-42');
  await page.locator('#run-selected', { hasText: 'Run on devices tagged incident-42' }).click();
  await page.locator('#cmd-0-file').selectOption('hello.sh');
  await page.locator('#run-submit', { hasText: 'devices tagged incident-42' }).click();
  await page.waitForURL(/#\/batches\/[0-9a-f-]+$/);
  await page.locator('#main .badge[data-status="Completed"]').waitFor();
  await page.locator('#batch-counts [data-count="Succeeded"]', { hasText: '1' }).waitFor();
  step("the batch's output, each line with its device's name");
  await page.locator('#batch-live', { hasText: ': hello' }).waitFor();
  await page.locator('#batch-live-state', { hasText: 'Every device ended' }).waitFor();
  await page.locator('[data-nav="devices"]').click();
  await page.locator('#run-target').selectOption('filter');
  await page.locator('#run-target-value').fill("osPlatform eq 'Linux'");
  await page.locator('#run-selected', { hasText: 'Run on devices matching the filter' }).waitFor();
  await page.locator('#run-target').selectOption('selected');
  await page.locator(`a[href="#/devices/${machine}"]`).click();
  await page.locator('[data-remove-tag="incident-42"]').click();
  await page.locator('[data-remove-tag="incident-42"]').waitFor({ state: 'detached' });

  step('isolate from the device page: the dialog names the consequence and wants a comment; the dev agent (isolation off on the machine running it) fails it saying so');
  await page.locator('[data-nav="devices"]').click();
  await page.locator(`a[href="#/devices/${machine}"]`).click();
  await page.locator('#isolation-state[data-isolation="NotIsolated"]').waitFor();
  await page.locator('#isolate').click();
  await page.getByRole('heading', { name: /^Isolate / }).waitFor();
  const consequence = await page.locator('#confirm-message').textContent();
  if (!consequence.includes('loses every network connection')) fail(`the isolate dialog says ${consequence}`);
  if (!(await page.locator('#confirm-yes').isDisabled())) fail('isolating without a comment is offered');
  await page.locator('#confirm-comment').fill('contain the incident');
  await shot('isolate');
  await page.locator('#confirm-yes').click();
  await page.waitForURL(/#\/actions\/[0-9a-f-]+$/);
  await page.getByRole('heading', { name: /^Isolation on / }).waitFor();
  await waitForStatus(['Failed']);
  await page.getByText('Isolation is turned off on this agent').waitFor();
  await page.locator('[data-nav="devices"]').click();
  await page.locator('#device-search').fill('isolated');
  await page.getByText('No device matches the search.').waitFor();
  await page.locator('#device-search').fill('');

  step('collect the investigation package from the device page and download the zip');
  await page.locator(`a[href="#/devices/${machine}"]`).click();
  await page.locator('#collect').click();
  await page.getByRole('heading', { name: /^Collect the investigation package of / }).waitFor();
  await page.locator('#confirm-comment').fill('incident 42');
  await page.locator('#confirm-yes').click();
  await page.getByRole('heading', { name: /^Investigation package on / }).waitFor();
  await waitForStatus(['Succeeded']);
  const [pkg] = await Promise.all([page.waitForEvent('download'), page.locator('[data-download="0"]').click()]);
  const zipped = readFileSync(await pkg.path());
  if (zipped.subarray(0, 4).toString('latin1') !== 'PK\u0003\u0004') fail('the package is not a zip');

  step('select devices and run a script on all of them as one batch; its page counts them');
  await page.locator('[data-nav="devices"]').click();
  await page.locator(`[data-select="${machine}"]`).check();
  await page.locator('#run-selected', { hasText: 'Run on 1 selected' }).click();
  await page.locator('#cmd-0-file').selectOption('hello.sh');
  await page.locator('#cmd-0-args').fill('the fleet');
  await page.locator('#run-comment').fill('fleet sweep');
  await page.locator('#run-submit').click();
  await page.waitForURL(/#\/batches\/[0-9a-f-]+$/);
  await page.locator('#main .badge[data-status="Completed"]').waitFor();
  await page.locator('#batch-counts [data-count="Succeeded"]', { hasText: '1' }).waitFor();
  await page.getByRole('heading', { name: 'fleet sweep' }).waitFor();
  await page.locator('#batch-filter').selectOption('Failed');
  await page.getByText('No device in this state.').waitFor();
  await page.locator('#batch-filter').selectOption('Succeeded');
  await page.locator('tbody a[href^="#/actions/"]').waitFor();
  await shot('batch');
  await page.locator('[data-nav="batches"]').click();
  await page.getByRole('heading', { name: 'Batches' }).waitFor();
  await page.locator('tbody a[href^="#/batches/"]').first().waitFor();

  step('delete a library file, after confirming');
  await page.locator('[data-nav="library"]').click();
  await page.locator('[data-delete="wait.sh"]').click();
  await page.getByRole('heading', { name: 'Delete wait.sh?' }).waitFor();
  await page.locator('#confirm-yes').click();
  await page.locator('tr[data-file="wait.sh"]').waitFor({ state: 'detached' });
  await page.locator('tr[data-file="hello.sh"]').waitFor();

  step('sign out');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByText('You are signed out.').waitFor();

  step('a basic live response user collects files and cancels, and sees nothing it may not use');
  await page.getByLabel('User name').fill(basicUser);
  await page.getByLabel('Password').fill(basicPassword);
  await page.getByRole('button', { name: 'Sign in' }).click();
  // Signed in, the console returns to the page it showed (the library).
  await page.locator('#who-name', { hasText: basicUser }).waitFor();
  await page.locator('[data-nav="devices"]').click();
  await page.locator(`a[href="#/devices/${machine}"]`).click();
  await page.locator('#run-live-response').waitFor();
  if (await page.locator('#new-tag').count()) fail('a user without Machine.ReadWrite is offered to tag');
  for (const id of ['#isolate', '#collect', '#quarantine', '#offboard']) {
    if (!(await page.locator(id).isDisabled())) fail(`a user without the role is offered ${id}`);
  }
  const run = page.locator('#run-live-response');
  if (await run.isDisabled()) fail('Run live response is disabled for a basic user');
  await run.click();
  const types = await page.locator('#cmd-0-type option').allTextContents();
  if (types.join(',') !== 'GetFile') fail(`a basic user is offered ${types.join(', ')}`);
  await page.locator('#cmd-0-path').fill('/etc/hostname');
  await page.locator('#run-comment').fill('basic user');
  await page.locator('#run-submit').click();
  await waitForStatus(['Succeeded']);
  const [basicDownload] = await Promise.all([page.waitForEvent('download'), page.locator('[data-download="0"]').click()]);
  const basicCollected = gunzipSync(readFileSync(await basicDownload.path())).toString();
  if (basicCollected !== readFileSync('/etc/hostname').toString()) fail(`the basic user's download holds ${JSON.stringify(basicCollected)}`);
  await shot('basic-user');
  await page.locator('[data-nav="library"]').click();
  await page.getByText('Your account cannot use the library').waitFor();
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByText('You are signed out.').waitFor();
  if (problems.length) fail(problems.join('\n'));
  console.log('console browser test passed');
} catch (error) {
  await shot('failure').catch(() => {});
  console.error(`FAILED: ${error.message}`);
  if (problems.length) console.error(problems.join('\n'));
  process.exitCode = 1;
} finally {
  await browser.close();
}
