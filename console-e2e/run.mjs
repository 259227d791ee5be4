// End-to-end tests of the console in headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core), with axe-core on the main pages. Starts `marketplace serve` on a free
// port over a temporary data directory, seeds it through the JSON API and the CLI, then
// plays a provider, a subscriber and platform finance. Screenshots go to screenshots/; the
// invoice page's also to ../docs/console-invoice.png. Exits non-zero on the first failure.
//
//   node run.mjs            (MARKETPLACE_BIN, CHROMIUM override the binaries' paths)

import { spawn, spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, "target");
const BIN = process.env.MARKETPLACE_BIN || path.join(targetDir, "release", "marketplace");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = path.join(here, "screenshots");
const PASSWORD = "correct horse battery staple 9";
const AXE = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const temps = [];
let server;
let step = "start";
const log = (...a) => console.log("•", ...a);

function fail(message) {
  throw new Error(`${step}: ${message}`);
}
function expect(ok, message) {
  if (!ok) fail(message);
}

function tempDir(prefix) {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  temps.push(d);
  return d;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** The server's environment: the data directory's SQLite file, whatever the caller set. */
function serverEnv() {
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || "warn", MARKETPLACE_OUTBOX_POLL_MS: "0" };
  delete env.MARKETPLACE_DATABASE_URL;
  delete env.MARKETPLACE_CONFIG;
  return env;
}

async function startServer(dataDir) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const env = serverEnv();
  server = spawn(BIN, ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir], {
    env,
    stdio: ["ignore", "inherit", "inherit"],
  });
  for (let i = 0; i < 150; i++) {
    try {
      const r = await fetch(`${base}/healthz`);
      if (r.ok) return base;
    } catch {
      /* not up yet */
    }
    if (server.exitCode !== null) fail(`the server exited with ${server.exitCode}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  fail("the server did not answer /healthz");
}

async function api(base, method, p, { token, body, raw, contentType } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  let payload;
  if (raw !== undefined) {
    payload = raw;
    headers["content-type"] = contentType || "application/octet-stream";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["content-type"] = "application/json";
  }
  const r = await fetch(base + p, { method, headers, body: payload });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  if (r.status >= 400) fail(`${method} ${p} → ${r.status} ${text.slice(0, 300)}`);
  return json;
}

async function signup(base, org) {
  const tag = Math.random().toString(36).slice(2, 8);
  const email = `${org.toLowerCase().replace(/\W+/g, "-")}-${tag}@example.com`;
  const r = await api(base, "POST", "/v1/auth/signup", {
    body: { email, password: PASSWORD, name: `${org} user`, organization_name: org },
  });
  return { email, password: PASSWORD, token: r.access_token, org: r.organization.id, orgName: org };
}

function financeUser(dataDir) {
  const email = `finance-${Date.now()}@example.com`;
  const r = spawnSync(
    BIN,
    ["admin", "create-operator", "--email", email, "--name", "Fran Finance", "--role", "finance", "--data-dir", dataDir],
    { input: `${PASSWORD}\n`, encoding: "utf8", env: serverEnv() },
  );
  if (r.status !== 0) fail(`create-operator failed: ${r.stderr}`);
  return { email, password: PASSWORD };
}

/** A published listing with one offer; returns {listing, offer}. */
async function publishListing(base, p, listing, offer) {
  const l = await api(base, "POST", "/v1/listings", { token: p.token, body: listing });
  const o = await api(base, "POST", `/v1/listings/${l.id}/offers`, {
    token: p.token,
    body: {
      name: "Standard",
      currency: "USD",
      billing_interval: "monthly",
      recurring_amount: 4900,
      term_months: 12,
      trial_days: 0,
      requires_approval: false,
      auto_renew_default: true,
      ...offer,
    },
  });
  await api(base, "POST", `/v1/listings/${l.id}/publish`, { token: p.token });
  return { listing: l.id, offer: o.id };
}

async function seed(base, dataDir) {
  step = "seed";
  const provider = await signup(base, "Harbour Data Co");
  const subscriber = await signup(base, "Buyer Analytics");
  const tides = await publishListing(
    base,
    provider,
    {
      title: "Harbour tide gauges",
      summary: "Water levels every ten minutes from 40 harbour gauges.",
      description: "# Tide gauges\n\nReadings in **centimetres** above chart datum.\n\n- 40 gauges\n- every 10 minutes",
      categories: ["oceans"],
      tags: ["tides", "sensors"],
      visibility: "public",
    },
    { name: "Research", requires_approval: true },
  );
  const ds = await api(base, "POST", `/v1/listings/${tides.listing}/datasets`, {
    token: provider.token,
    body: { name: "Gauge readings", description: "One CSV per month." },
  });
  const rev = await api(base, "POST", `/v1/datasets/${ds.id}/revisions`, {
    token: provider.token,
    body: { comment: "November readings" },
  });
  const content = "gauge,time,level_cm\nG01,2026-11-01T00:00:00Z,231\nG01,2026-11-01T00:10:00Z,236\n";
  await api(base, "PUT", `/v1/revisions/${rev.id}/assets/readings-2026-11.csv`, {
    token: provider.token,
    raw: content,
    contentType: "text/csv",
  });
  await api(base, "POST", `/v1/revisions/${rev.id}/finalize`, { token: provider.token });
  // Provider text built to run if it were not escaped.
  const hostile = await publishListing(
    base,
    provider,
    {
      title: `Hostile <script>window.__xss="title"</script><img src=x onerror="window.__xss='title-img'">`,
      summary: `Summary <img src=x onerror="window.__xss='summary'">`,
      description: `# Notes\n<script>window.__xss="description"</script>\n<img src=x onerror="window.__xss='description-img'">\n[click](javascript:window.__xss='link')`,
      categories: ["tests"],
      tags: ["hostile"],
      visibility: "public",
    },
    {},
  );
  const finance = financeUser(dataDir);
  return { provider, subscriber, tides, hostile, content, finance };
}

/** A fresh browser profile for one person. */
async function browserFor(name, fn) {
  step = `${name}: launch`;
  const context = await chromium.launchPersistentContext(tempDir(`console-e2e-${name}-`), {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1280, height: 900 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on("dialog", async (d) => {
    problems.push(`a dialog opened: ${d.message()}`);
    await d.dismiss();
  });
  page.on("console", (m) => {
    // A form refused on purpose (422) is logged by Chromium as a failed load: expected.
    if (m.type() === "error" && !/status of 422/.test(m.text())) problems.push(`console error: ${m.text()}`);
  });
  try {
    await fn(page);
    expect(problems.length === 0, problems.join("; "));
  } finally {
    await context.close();
  }
}

async function signIn(page, base, who) {
  await page.goto(`${base}/console`);
  await page.getByLabel("E-mail address").fill(who.email);
  await page.getByLabel("Password").fill(who.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForLoadState();
  expect((await page.locator("h1").innerText()).startsWith("Welcome"), `${who.email} did not get the home page`);
}

const axeFindings = [];
async function axe(page, name) {
  // Injected through the DevTools protocol: the page's CSP forbids inline scripts, rightly.
  if (!(await page.evaluate(() => typeof window.axe !== "undefined"))) await page.evaluate(AXE);
  const result = await page.evaluate(() =>
    window.axe.run(document, { resultTypes: ["violations"], runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] } }),
  );
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of result.violations) {
    axeFindings.push(`${name}: ${v.impact} ${v.id} (${v.nodes.length})`);
  }
  expect(bad.length === 0, `axe on ${name}: ${bad.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`).join("; ")}`);
}

async function shot(page, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** A link of the main navigation. */
function nav(page, name) {
  return page.getByRole("navigation", { name: "Main" }).getByRole("link", { name, exact: true });
}

async function clickAndWait(page, locator) {
  await Promise.all([page.waitForNavigation(), locator.click()]);
}

async function main() {
  expect(fs.existsSync(BIN), `no server binary at ${BIN}: cargo build --release --bin marketplace`);
  expect(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install -y chromium`);
  const dataDir = tempDir("console-e2e-data-");
  const base = await startServer(dataDir);
  log(`server on ${base}`);
  const s = await seed(base, dataDir);
  const period = new Date().toISOString().slice(0, 7);

  // A subscriber finds the listing by search and asks for access.
  await browserFor("subscriber", async (page) => {
    step = "subscriber: search";
    await signIn(page, base, s.subscriber);
    await axe(page, "home");
    await clickAndWait(page, nav(page, "Catalog"));
    await page.getByLabel("Search", { exact: true }).fill("tide gauges");
    await clickAndWait(page, page.getByRole("button", { name: "Search" }));
    const hit = page.getByRole("link", { name: "Harbour tide gauges" });
    expect((await hit.count()) === 1, "the search did not find the listing");
    await axe(page, "catalog");
    await shot(page, "catalog");
    step = "subscriber: subscribe";
    await clickAndWait(page, hit);
    expect(await page.getByRole("heading", { name: "Tide gauges", exact: true }).isVisible(), "the description's Markdown is not rendered");
    await axe(page, "listing");
    await shot(page, "listing-subscriber");
    await page.getByLabel("Message to the provider (optional)").fill("For a coastal flooding study.");
    await clickAndWait(page, page.getByRole("button", { name: "Request access to Research" }));
    expect((await page.locator(".notice").innerText()).includes("Your request is sent"), "no confirmation of the request");
    await axe(page, "subscriptions (subscriber)");
  });

  // The provider approves the request and sees the subscriber.
  await browserFor("provider", async (page) => {
    step = "provider: approve";
    await signIn(page, base, s.provider);
    await clickAndWait(page, nav(page, "Subscriptions"));
    const request = page.locator("li.request").filter({ hasText: s.subscriber.orgName });
    expect((await request.count()) === 1, "the request is not listed");
    expect((await request.innerText()).includes("For a coastal flooding study."), "the subscriber's message is not shown");
    await axe(page, "subscriptions (provider, pending)");
    await shot(page, "subscriptions-provider-request");
    await clickAndWait(page, request.getByRole("button", { name: /^Approve/ }));
    expect((await page.locator(".notice").innerText()).includes("approved"), "no confirmation of the approval");
    const subscribers = page.locator("section", { has: page.getByRole("heading", { name: "Your subscribers" }) });
    expect((await subscribers.innerText()).includes(s.subscriber.orgName), "the subscriber is not listed");
    await shot(page, "subscriptions-provider");
    step = "provider: listings";
    await clickAndWait(page, nav(page, "My listings"));
    await axe(page, "my listings");
    await clickAndWait(page, page.getByRole("link", { name: "Harbour tide gauges" }));
    const text = await page.locator("main").innerText();
    expect(text.includes("Gauge readings") && text.includes("readings-2026-11.csv") && text.includes("Research"), "datasets, revisions or offers missing");
    await axe(page, "listing (provider)");
    await shot(page, "listing-provider");
  });

  // The subscriber downloads the file; the hostile listing stays inert.
  await browserFor("subscriber-2", async (page) => {
    step = "subscriber: download";
    await signIn(page, base, s.subscriber);
    await page.goto(`${base}/console/subscriptions`);
    expect((await page.locator("main").innerText()).includes("download files"), "no live grant shown");
    await clickAndWait(page, page.getByRole("link", { name: "download files" }));
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.getByRole("button", { name: "Download readings-2026-11.csv" }).click(),
    ]);
    const file = await download.path();
    expect(fs.readFileSync(file, "utf8") === s.content, "the downloaded file differs from the upload");
    step = "subscriber: hostile listing";
    await page.goto(`${base}/console/listings/${s.hostile.listing}`);
    await page.waitForTimeout(300);
    const xss = await page.evaluate(() => window.__xss);
    expect(xss === undefined, `provider text ran: ${xss}`);
    const h1 = await page.locator("main h1").first().innerText();
    expect(h1.includes("<script>") && h1.includes("<img src=x onerror="), `the title is not shown as text: ${h1}`);
    expect((await page.locator("main script, main img, main [onerror]").count()) === 0, "markup from the provider is in the page");
    expect((await page.locator("main a[href^='javascript:']").count()) === 0, "a javascript: link is in the page");
    await page.goto(`${base}/console/catalog?q=hostile`);
    await page.waitForTimeout(300);
    expect((await page.evaluate(() => window.__xss)) === undefined, "provider text ran in the catalog");
    await shot(page, "listing-hostile");
  });

  // Platform finance bills the month, finalizes an invoice, credits it and exports CSV.
  await browserFor("finance", async (page) => {
    step = "finance: billing run";
    await signIn(page, base, s.finance);
    await axe(page, "home (finance)");
    await clickAndWait(page, nav(page, "Billing runs"));
    await page.getByLabel("Period", { exact: true }).fill(period);
    await clickAndWait(page, page.getByRole("button", { name: "Run billing" }));
    const result = await page.locator(".notice").innerText();
    expect(/1 invoice\(s\) created/.test(result), `unexpected run result: ${result}`);
    await axe(page, "billing runs");
    await shot(page, "billing-runs");
    await clickAndWait(page, page.getByRole("link", { name: `Review the draft invoices of ${period}` }));
    await axe(page, "invoices");
    await shot(page, "invoices");
    step = "finance: finalize";
    await clickAndWait(page, page.getByRole("link", { name: "Draft" }).first());
    expect((await page.locator("main").innerText()).includes("49.00 USD"), "the draft does not show its line");
    await clickAndWait(page, page.getByRole("link", { name: "Finalize…" }));
    await axe(page, "finalize confirmation");
    await clickAndWait(page, page.getByRole("button", { name: "Finalize invoice" }));
    const h1 = await page.locator("main h1").first().innerText();
    const number = (h1.match(/MKT-\d{4}-\d{6}/) || [])[0];
    expect(number, `no invoice number after finalizing: ${h1}`);
    log(`finalized ${number}`);
    step = "finance: credit note";
    await clickAndWait(page, page.getByRole("link", { name: "Issue a credit note…" }));
    const amount = page.locator("input[name^=amount_]").first();
    await amount.fill("49.01");
    await page.getByLabel("Reason", { exact: true }).fill("Gauge G07 was offline for a week");
    await page.getByLabel(/I have checked these amounts/).check();
    await clickAndWait(page, page.getByRole("button", { name: "Issue credit note" }));
    const fieldError = await page.locator(".field-error").first().innerText();
    expect(/left to credit \(49\.00 USD\)/.test(fieldError), `no error next to the amount: ${fieldError}`);
    expect((await page.locator("[aria-invalid=true]").count()) >= 1, "the field is not marked invalid");
    await axe(page, "credit note (with an error)");
    await shot(page, "credit-note-error");
    await page.locator("[aria-invalid=true]").first().fill("10.00");
    await page.getByLabel(/I have checked these amounts/).check();
    await clickAndWait(page, page.getByRole("button", { name: "Issue credit note" }));
    const invoiceText = await page.locator("main").innerText();
    expect(invoiceText.includes("The credit note is issued") && invoiceText.includes("Gauge G07 was offline"), "the credit note is not shown");
    expect(invoiceText.includes(number), "the number is not shown on the invoice page");
    await axe(page, "invoice");
    const invoiceShot = await shot(page, "invoice");
    fs.mkdirSync(path.join(root, "docs"), { recursive: true });
    fs.copyFileSync(invoiceShot, path.join(root, "docs", "console-invoice.png"));
    step = "finance: export";
    await clickAndWait(page, nav(page, "Invoices"));
    await page.getByLabel("Period", { exact: true }).fill(period);
    await page.getByLabel("Status", { exact: true }).selectOption("open");
    await clickAndWait(page, page.getByRole("button", { name: "Apply filters" }));
    expect((await page.locator("main").innerText()).includes(number), "the filtered list misses the invoice");
    const [csv] = await Promise.all([
      page.waitForEvent("download"),
      page.getByRole("link", { name: "Export these invoices as CSV" }).click(),
    ]);
    const rows = fs.readFileSync(await csv.path(), "utf8").trim().split(/\r?\n/);
    expect(rows[0].startsWith("invoice_number,invoice_id,status,customer"), `unexpected CSV header: ${rows[0]}`);
    expect(rows.length === 2, `expected one line, got ${rows.length - 1}`);
    expect(rows[1].startsWith(`${number},`) && rows[1].includes("Buyer Analytics") && rows[1].endsWith(",49.00"), `unexpected CSV row: ${rows[1]}`);
    step = "finance: reports";
    await clickAndWait(page, nav(page, "Reports"));
    expect((await page.locator("main").innerText()).includes("Harbour Data Co"), "the revenue report misses the provider");
    expect((await page.locator("svg[role=img]").count()) >= 1, "no chart");
    await axe(page, "reports");
    await shot(page, "reports");
  });

  await browserFor("provider-2", async (page) => {
    step = "provider: reports";
    await signIn(page, base, s.provider);
    await clickAndWait(page, nav(page, "Reports"));
    const text = await page.locator("main").innerText();
    expect(text.includes("Usage of your listings per month") && text.includes("Revenue per month"), "no usage or revenue section");
    // The subscriber's download was metered: it shows in the provider's usage chart and table.
    expect(text.includes("bytes_downloaded") && (await page.locator("svg[role=img]").count()) >= 2, "the download's usage is not charted");
    expect(text.includes("39.00 USD"), "the provider's revenue (49.00 less the 10.00 credit) is missing");
    await axe(page, "reports (provider)");
    await shot(page, "reports-provider");
  });
}

let code = 0;
try {
  await main();
  console.log(`console e2e: passed; axe findings below serious: ${axeFindings.length ? "\n  " + axeFindings.join("\n  ") : "none"}`);
} catch (e) {
  code = 1;
  console.error(`console e2e: FAILED at ${e.message}`);
  if (process.env.E2E_DEBUG) console.error(e.stack);
} finally {
  if (server && server.exitCode === null) server.kill("SIGTERM");
  for (const d of temps) fs.rmSync(d, { recursive: true, force: true });
}
process.exit(code);
