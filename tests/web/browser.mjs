// Browser driver for tests/web: JSON lines on stdin, one JSON reply per line on stdout.
//   request: {"id": n, "op": "<name>", ...args}   reply: {"id": n, "ok": true, "result": …}
//                                                  or {"id": n, "ok": false, "error": "…"}
// It drives Debian's headless Chromium through playwright-core (installed by `npm ci` in web/)
// and only reads what a user sees on the page (text, lists, badges), plus every request URL
// a page made, to check that none went to another origin, and the tokens, queue keys and group
// keys its requests and socket hellos carried.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const { chromium } = createRequire(join(repo, "web", "package.json"))("playwright-core");

const TIMEOUT = 30_000;
let browser;
const pages = new Map(); // name -> {context, page, requests: [url]}

function page(name) {
  const p = pages.get(name);
  if (p === undefined) throw new Error(`no page ${name}`);
  return p.page;
}

async function outcome(pg, success, errorSelector) {
  // Whichever comes first: the success condition or an error message on the page.
  const error = pg.locator(errorSelector);
  await Promise.race([success(), error.filter({ hasText: /\S/ }).waitFor({ timeout: TIMEOUT })]);
  const text = (await error.textContent()) ?? "";
  return { error: text.trim() || null };
}

// For benchmarks/web_bench.py (pages opened with `timing`): on every load, the time since
// navigation start (performance.now()) at which the user could first see each milestone:
// "form" the sign-in form with the page's script run (DOMContentLoaded: the deferred script
// has attached its handlers), "list" the conversation list with a conversation in it, "online"
// the realtime status "Online".
const LOAD_MARKS = `(() => {
  const marks = (window.__roostMarks = {});
  const check = () => {
    const chat = document.getElementById("chat-view");
    if (marks.list === undefined && chat && !chat.hidden && document.querySelector("#conversations button.conversation")) marks.list = performance.now();
    if (marks.online === undefined && document.getElementById("status")?.dataset.status === "online") marks.online = performance.now();
  };
  new MutationObserver(check).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
  document.addEventListener("DOMContentLoaded", () => {
    if (document.getElementById("auth-view")?.hidden === false) marks.form = performance.now();
    check();
  });
})();`;

// Realtime group frames and the queue items in them (docs/api.md, "Realtime" and "What member
// queues receive"): kind u8 (1: a group queue) || queue id (16) || { u64 seq || opaque payload }*,
// payload = item_type u8 || opaque group_id || u64 group_seq || opaque policy || opaque body.
function readOpaque(buf, at) {
  const prefix = buf[at] >> 6;
  const size = 1 << prefix;
  let n = buf[at] & 0x3f;
  for (let i = 1; i < size; i++) n = n * 256 + buf[at + i];
  return [buf.subarray(at + size, at + size + n), at + size + n];
}

function opaque(bytes) {
  const n = bytes.length;
  const head = n < 0x40 ? Buffer.of(n) : n < 0x4000 ? Buffer.of(0x40 | (n >> 8), n & 0xff) : Buffer.of(0x80 | (n >>> 24), (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
  return Buffer.concat([head, bytes]);
}

// A server notice sealed under a group's key (queue item type 3): nonce(12) || AES-256-GCM under
// HKDF-SHA256(group key, no salt, "roost sealed notice v1"), aad = that label || group id.
const SEALED_LABEL = Buffer.from("roost sealed notice v1");
const sealedKey = (groupKey) => Buffer.from(hkdfSync("sha256", groupKey, Buffer.alloc(0), SEALED_LABEL, 32));

function sealNotice(groupKey, groupId, signed) {
  const nonce = randomBytes(12);
  const c = createCipheriv("aes-256-gcm", sealedKey(groupKey), nonce);
  c.setAAD(Buffer.concat([SEALED_LABEL, groupId]));
  return Buffer.concat([nonce, c.update(signed), c.final(), c.getAuthTag()]);
}

function openNotice(groupKey, groupId, body) {
  const d = createDecipheriv("aes-256-gcm", sealedKey(groupKey), body.subarray(0, 12));
  d.setAAD(Buffer.concat([SEALED_LABEL, groupId]));
  d.setAuthTag(body.subarray(body.length - 16));
  return Buffer.concat([d.update(body.subarray(12, body.length - 16)), d.final()]);
}

// A group frame with each server notice in it replaced by `rewrite(groupId, signed, itemType)`,
// an [item type, body] pair: `signed` is the encoded SignedNotice, opened with the group's key
// (`keyOf(groupId)`) when it came sealed. A sealed one whose key is not known stays as it is.
function rewriteNotices(frame, keyOf, rewrite) {
  if (frame[0] !== 1) return frame;
  const parts = [frame.subarray(0, 17)];
  let at = 17;
  while (at < frame.length) {
    const seq = frame.subarray(at, at + 8);
    let payload;
    [payload, at] = readOpaque(frame, at + 8);
    const type = payload[0];
    if (type === 2 || type === 3) {
      const [groupId, next] = readOpaque(payload, 1);
      const groupSeq = payload.subarray(next, next + 8);
      const [policy, bodyAt] = readOpaque(payload, next + 8);
      const [body] = readOpaque(payload, bodyAt);
      const key = keyOf(groupId);
      if (type === 2 || key !== undefined) {
        const [newType, newBody] = rewrite(groupId, type === 2 ? body : openNotice(key, groupId, body), type);
        payload = Buffer.concat([Buffer.of(newType), opaque(groupId), groupSeq, opaque(policy), opaque(newBody)]);
      }
    }
    parts.push(seq, opaque(payload));
  }
  return Buffer.concat(parts);
}

// A group's key (b64u id) as page `entry`'s requests on the group presented it, if they did.
function groupKeyOf(entry, groupId) {
  const path = `/v1/groups/${groupId.toString("base64url")}`;
  const r = entry.groupRequests.find(([, p, key]) => key !== null && (p === path || p.startsWith(`${path}/`)));
  return r === undefined ? undefined : Buffer.from(r[2], "base64url");
}

const ops = {
  async launch({ executable }) {
    browser = await chromium.launch({
      executablePath: executable,
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
    });
    return { version: browser.version() };
  },

  async open({ name, url, width = 1280, height = 800, timing = false }) {
    const context = await browser.newContext({ viewport: { width, height } });
    if (timing) await context.addInitScript(LOAD_MARKS);
    const pg = await context.newPage();
    const entry = { context, page: pg, requests: [], console: [], tokens: new Set(), queueKeyed: [], groupRequests: [], hellos: [], sockets: [] };
    pg.on("request", (r) => {
      entry.requests.push(r.url());
      const auth = r.headers()["authorization"];
      if (auth?.startsWith("Bearer ")) entry.tokens.add(auth.slice(7));
      const key = r.headers()["roost-queue-key"];
      if (key !== undefined) entry.queueKeyed.push([r.method(), new URL(r.url()).pathname, key]);
      const path = new URL(r.url()).pathname;
      // Requests on groups, and connection requests (which may carry a group key's wrap).
      if (path.startsWith("/v1/groups") || /^\/v1\/connections\/[^/]+\/request$/.test(path)) {
        const h = r.headers();
        entry.groupRequests.push([r.method(), path, h["roost-group-key"] ?? null, h["roost-group-key-wrap"] ?? null]);
      }
    });
    pg.on("websocket", (ws) => {
      entry.requests.push(ws.url());
      ws.on("framesent", ({ payload }) => {
        if (typeof payload !== "string") return;
        const m = JSON.parse(payload);
        if (m.type === "hello") entry.hellos.push(m.queue_keys ?? null);
        // Per socket: every queue key it was given, in its hello or a later subscribe frame.
        if (m.type === "hello") entry.sockets.push({ ...(m.queue_keys ?? {}) });
        if (m.type === "subscribe") Object.assign(entry.sockets[entry.sockets.length - 1] ?? {}, m.queue_keys ?? {});
      });
    });
    pg.on("console", (m) => entry.console.push(`${m.type()}: ${m.text()}`));
    pg.on("pageerror", (e) => entry.console.push(`pageerror: ${e.message}`));
    pg.setDefaultTimeout(TIMEOUT);
    pages.set(name, entry);
    const resp = await pg.goto(url);
    return { status: resp.status(), headers: resp.headers() };
  },

  async sign_in({ name, user, password, register = false, keyboard = false }) {
    const pg = page(name);
    if (keyboard) {
      // Only the keyboard: focus moves by Tab from the top of the page.
      await pg.locator("body").focus();
      await pg.keyboard.press("Tab");
      await pg.keyboard.type(user);
      await pg.keyboard.press("Tab");
      await pg.keyboard.type(password);
      await pg.keyboard.press("Tab"); // "Log in"
      if (register) await pg.keyboard.press("Tab"); // "Create account"
      await pg.keyboard.press("Enter");
    } else {
      await pg.getByLabel("User name").fill(user);
      await pg.getByLabel("Password").fill(password);
      await pg.getByRole("button", { name: register ? "Create account" : "Log in" }).click();
    }
    const r = await outcome(pg, () => pg.locator("#chat-view").waitFor({ state: "visible", timeout: TIMEOUT }), "#auth-error");
    if (r.error === null) r.me = await pg.locator("#me").textContent();
    return r;
  },

  async start({ name, peer }) {
    const pg = page(name);
    await pg.getByLabel("Start a conversation with (user id)").fill(peer);
    await pg.getByRole("button", { name: "Start", exact: true }).click();
    return outcome(pg, () => pg.locator("#conversation-title", { hasText: peer }).waitFor({ timeout: TIMEOUT }), "#list-error");
  },

  async invitations({ name, wait_for = null }) {
    const pg = page(name);
    if (wait_for !== null) await pg.locator("#invitations li", { hasText: wait_for }).waitFor();
    return pg.locator("#invitations li span").allTextContents();
  },

  async accept({ name, from }) {
    const pg = page(name);
    await pg.locator("#invitations li", { hasText: from }).getByRole("button", { name: "Accept" }).click();
    return outcome(pg, () => pg.locator("#conversation-title", { hasText: from }).waitFor({ timeout: TIMEOUT }), "#list-error");
  },

  async decline({ name, from }) {
    const pg = page(name);
    const item = pg.locator("#invitations li", { hasText: from });
    await item.getByRole("button", { name: "Decline" }).click();
    await item.waitFor({ state: "detached" });
    return {};
  },

  async send({ name, text, keyboard = false }) {
    const pg = page(name);
    const box = pg.getByLabel("Message", { exact: true });
    if (keyboard) {
      await box.focus();
      await pg.keyboard.type(text);
      await pg.keyboard.press("Enter");
    } else {
      await box.fill(text);
      await pg.getByRole("button", { name: "Send", exact: true }).click();
    }
    await pg.locator("#messages li.mine .text", { hasText: text }).last().waitFor();
    return {};
  },

  async messages({ name, wait_for = null, timeout = TIMEOUT }) {
    const pg = page(name);
    if (wait_for !== null) await pg.locator("#messages li .text", { hasText: wait_for }).first().waitFor({ timeout });
    return pg.locator("#messages li:not(.notice)").evaluateAll((lis) =>
      lis.map((li) => ({ from: li.querySelector(".from")?.textContent, text: li.querySelector(".text")?.textContent, mine: li.classList.contains("mine") })),
    );
  },

  async notices({ name, wait_for = null }) {
    // The open conversation's lines from homeserver notices, in order.
    const pg = page(name);
    if (wait_for !== null) await pg.locator("#messages li.notice", { hasText: wait_for }).first().waitFor();
    return pg.locator("#messages li.notice").allTextContents();
  },

  async tamper_notices({ name, containing }) {
    // From now on, the server notices this page's socket delivers whose JSON contains
    // `containing` arrive with the last byte of their signature flipped, as a forged or damaged
    // notice would; one that came sealed under its group's key is sealed again after that.
    const entry = pages.get(name);
    const keyOf = (groupId) => groupKeyOf(entry, groupId);
    const tamper = (groupId, signed, type) => {
      const out = Buffer.from(signed);
      if (out.toString("latin1").includes(containing)) out[out.length - 1] ^= 0x01;
      return type === 2 ? [2, out] : [3, sealNotice(keyOf(groupId), groupId, out)];
    };
    await entry.page.routeWebSocket(/\/v1\/realtime/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((m) => server.send(m));
      server.onMessage((m) => ws.send(typeof m === "string" ? m : rewriteNotices(Buffer.from(m), keyOf, tamper)));
    });
    return {};
  },

  async seal_notices({ name, wrong_key_containing }) {
    // From now on, every server notice in the realtime frames the server sends this page reaches
    // it sealed under its group's key (queue item type 3, as the DS seals the notices of a
    // group with a key), the key read from the page's own requests on the group; one whose
    // notice contains `wrong_key_containing` sealed under another key. `sealed_notices` counts.
    const entry = pages.get(name);
    entry.sealed = { right: 0, wrong: 0 };
    const keyOf = (groupId) => groupKeyOf(entry, groupId);
    const seal = (groupId, signed, type) => {
      const key = keyOf(groupId);
      if (key === undefined) return [type, signed]; // a group without a key: in the clear
      const wrong = signed.toString("latin1").includes(wrong_key_containing);
      entry.sealed[wrong ? "wrong" : "right"] += 1;
      return [3, sealNotice(wrong ? randomBytes(32) : key, groupId, signed)];
    };
    await entry.page.routeWebSocket(/\/v1\/realtime/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((m) => server.send(m));
      server.onMessage((m) => ws.send(typeof m === "string" ? m : rewriteNotices(Buffer.from(m), keyOf, seal)));
    });
    return {};
  },

  async sealed_notices({ name }) {
    return pages.get(name).sealed;
  },

  async swap_frames({ name }) {
    // From now on, in the realtime frames the server sends this page, each byte string given
    // to `swap` is replaced by its (equally long) stand-in: what a dishonest server could
    // deliver in place of what the DS accepted.
    const pg = page(name);
    const entry = pages.get(name);
    entry.swaps = [];
    await pg.routeWebSocket(/\/v1\/realtime/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((m) => server.send(m));
      server.onMessage((m) => {
        if (typeof m === "string") return ws.send(m);
        const frame = Buffer.from(m);
        for (const [find, replace] of entry.swaps) {
          const at = frame.indexOf(find);
          if (at >= 0) replace.copy(frame, at);
        }
        ws.send(frame);
      });
    });
    return {};
  },

  async swap({ name, find, replace }) {
    const [f, r] = [Buffer.from(find, "hex"), Buffer.from(replace, "hex")];
    if (f.length !== r.length) throw new Error("a swap keeps the length");
    pages.get(name).swaps.push([f, r]);
    return {};
  },

  async find({ name, query }) {
    // Searches the directory; returns the people listed ("Name (user id)" or the user id).
    const pg = page(name);
    await pg.locator("#find-status").evaluate((p) => (p.textContent = ""));
    await pg.getByLabel("Find people by name").fill(query);
    await pg.getByRole("button", { name: "Search" }).click();
    const r = await outcome(pg, () => pg.locator("#find-status").filter({ hasText: /\S/ }).waitFor({ timeout: TIMEOUT }), "#list-error");
    r.status = ((await pg.locator("#find-status").textContent()) ?? "").trim();
    r.found = await pg.locator("#found .person").allTextContents();
    return r;
  },

  async start_found({ name, user }) {
    // The "Start" button of a person in the search results.
    const pg = page(name);
    await pg.getByRole("button", { name: `Start a conversation with ${user}`, exact: true }).click();
    return outcome(pg, () => pg.locator("#conversation-title", { hasText: user }).waitFor({ timeout: TIMEOUT }), "#list-error");
  },

  async conversations({ name, wait_unread = null }) {
    const pg = page(name);
    if (wait_unread !== null) {
      const [peer, n] = wait_unread;
      await pg.locator("button.conversation", { hasText: peer }).locator(".unread", { hasText: String(n) }).waitFor();
    }
    return pg.locator("button.conversation").evaluateAll((bs) =>
      bs.map((b) => ({ peer: b.querySelector(".peer")?.textContent, unread: Number(b.querySelector(".unread")?.textContent ?? 0) })),
    );
  },

  async open_conversation({ name, peer }) {
    const pg = page(name);
    await pg.locator("button.conversation", { hasText: peer }).click();
    await pg.locator("#conversation-title", { hasText: peer }).waitFor();
    return {};
  },

  async text({ name, selector, wait_for = null }) {
    const pg = page(name);
    if (wait_for !== null) await pg.locator(selector, { hasText: wait_for }).waitFor();
    return (await pg.locator(selector).textContent())?.trim() ?? null;
  },

  async type_enter({ name, text }) {
    // Types into whatever has the focus and presses Enter, as a keyboard user would.
    const pg = page(name);
    await pg.keyboard.type(text);
    await pg.keyboard.press("Enter");
    return {};
  },

  async layout({ name }) {
    // Widths a phone user would notice: the page must not scroll sideways.
    return page(name).evaluate(() => ({
      scrollWidth: document.documentElement.scrollWidth,
      clientWidth: document.documentElement.clientWidth,
    }));
  },

  async requests({ name }) {
    const p = pages.get(name);
    return { requests: p.requests, console: p.console };
  },

  async queue_keys({ name }) {
    // The Roost-Queue-Key headers the page sent ([method, path, key]), the queue_keys of
    // each socket hello, and per socket all the keys it was given (hello and subscribe), in order.
    const p = pages.get(name);
    return { requests: p.queueKeyed ?? [], hellos: p.hellos ?? [], sockets: p.sockets ?? [] };
  },

  async group_keys({ name }) {
    // The page's requests on groups and its connection requests ([method, path,
    // Roost-Group-Key, Roost-Group-Key-Wrap], null where absent) and, from its stored device
    // record (decrypted with the page's own CryptoKey), each conversation's group key (b64u,
    // null for a group without one) by title.
    const p = pages.get(name);
    const stored = await p.page.evaluate(async () => {
      const req = (r) => new Promise((ok, fail) => ((r.onsuccess = () => ok(r.result)), (r.onerror = () => fail(r.error))));
      const db = await req(indexedDB.open("roost"));
      const store = db.transaction("device").objectStore("device");
      const key = await req(store.get("key"));
      const sealed = await req(store.get("record"));
      db.close();
      const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: sealed.iv }, key, sealed.data);
      const record = JSON.parse(new TextDecoder().decode(plain));
      return Object.fromEntries(record.conversations.map((c) => [c.peer, c.groupKey?.$b ?? null]));
    });
    return { requests: p.groupRequests ?? [], stored };
  },

  async web_storage({ name }) {
    // Everything in the page's localStorage and sessionStorage (the page keeps nothing there).
    return page(name).evaluate(() => ({ local: { ...localStorage }, session: { ...sessionStorage } }));
  },

  async conversation_queues({ name }) {
    // From the page's stored device record (decrypted with the page's own CryptoKey): the
    // shared queue an older page made ("" if none) and each conversation's own queue id.
    return page(name).evaluate(async () => {
      const req = (r) => new Promise((ok, fail) => ((r.onsuccess = () => ok(r.result)), (r.onerror = () => fail(r.error))));
      const db = await req(indexedDB.open("roost"));
      const store = db.transaction("device").objectStore("device");
      const key = await req(store.get("key"));
      const sealed = await req(store.get("record"));
      db.close();
      const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: sealed.iv }, key, sealed.data);
      const record = JSON.parse(new TextDecoder().decode(plain));
      const conversations = record.conversations.map((c) => ({ peer: c.peer, status: c.status, queue: c.queue?.id ?? null }));
      return { shared: record.queueId, conversations };
    });
  },

  async forget_queue_key({ name }) {
    // The page's stored device record as a page from before queue keys wrote it: one shared
    // queue for all conversations, its id without its key (decrypted and encrypted again with
    // the page's own CryptoKey, which it may use but not read out). A record of a newer page
    // becomes one by moving its only conversation's queue id to the shared slot. Reload the
    // page next.
    return page(name).evaluate(async () => {
      const req = (r) => new Promise((ok, fail) => ((r.onsuccess = () => ok(r.result)), (r.onerror = () => fail(r.error))));
      const db = await req(indexedDB.open("roost"));
      const store = () => db.transaction("device", "readwrite").objectStore("device");
      const key = await req(store().get("key"));
      const sealed = await req(store().get("record"));
      const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: sealed.iv }, key, sealed.data);
      const record = JSON.parse(new TextDecoder().decode(plain));
      let had = typeof record.queueKey === "string" && record.queueKey !== "";
      const own = record.conversations.filter((c) => c.queue !== undefined);
      if (!had && own.length === 1) {
        record.queueId = own[0].queue.id;
        delete own[0].queue;
        had = true;
      }
      delete record.queueKey;
      const iv = crypto.getRandomValues(new Uint8Array(12));
      const data = await crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, new TextEncoder().encode(JSON.stringify(record)));
      await req(store().put({ iv, data }, "record"));
      db.close();
      return { had };
    });
  },

  async open_tab({ name, of, url }) {
    // Another tab of the same browser profile as page `of` (same storage).
    const context = pages.get(of).context;
    const pg = await context.newPage();
    const entry = { context, page: pg, requests: [], console: [], tokens: new Set() };
    pg.setDefaultTimeout(TIMEOUT);
    pages.set(name, entry);
    await pg.goto(url);
    return {};
  },

  async create_group({ name, group, members = "" }) {
    const pg = page(name);
    await pg.getByLabel("New group name").fill(group);
    await pg.getByLabel("Members to invite (user ids you are connected with)").fill(members);
    await pg.getByRole("button", { name: "Create group" }).click();
    return outcome(pg, () => pg.locator("#conversation-title", { hasText: group }).waitFor({ timeout: TIMEOUT }), "#list-error");
  },

  async invite({ name, users }) {
    const pg = page(name);
    await pg.getByLabel("Invite (user ids)").fill(users);
    await pg.getByRole("button", { name: "Invite", exact: true }).click();
    // Done when the page has emptied the field (or shown an error).
    const emptied = () => pg.waitForFunction(() => document.getElementById("invitee").value === "", null, { timeout: TIMEOUT });
    return outcome(pg, emptied, "#group-error");
  },

  async members({ name, wait_for = null, wait_gone = null }) {
    // The open group conversation's member list, one line per user.
    const pg = page(name);
    const items = pg.locator("#members .member");
    if (wait_for !== null) await items.filter({ hasText: wait_for }).first().waitFor();
    if (wait_gone !== null) await items.filter({ hasText: wait_gone }).first().waitFor({ state: "detached" });
    return items.allTextContents();
  },

  async group_action({ name, label }) {
    // A member's button by its accessible name ("Make … admin", "Remove …", "Leave group").
    const pg = page(name);
    await pg.getByRole("button", { name: label, exact: true }).click();
    return {};
  },

  async drop_next({ name, method, path }) {
    // The network loses the page's next request of this method whose path ends with `path`
    // (the server never sees it), as a dropped connection would.
    const pg = page(name);
    const match = (url) => new URL(url).pathname.endsWith(path);
    let done = false;
    await pg.route(match, async (route) => {
      if (done || route.request().method() !== method) return route.fallback();
      done = true;
      await route.abort("connectionreset");
    });
    return {};
  },

  async reload({ name, signed_out = false }) {
    // As a user pressing F5: the page comes back signed in from what it stored, or not.
    const pg = page(name);
    await pg.reload();
    if (signed_out) {
      // Nothing stored to resume: the log-in form stays, with no error once the page is idle.
      await pg.waitForLoadState("networkidle");
      return { chat: await pg.locator("#chat-view").isVisible(), error: ((await pg.locator("#auth-error").textContent()) ?? "").trim() || null };
    }
    const r = await outcome(pg, () => pg.locator("#chat-view").waitFor({ state: "visible", timeout: TIMEOUT }), "#auth-error");
    if (r.error === null) r.me = await pg.locator("#me").textContent();
    return r;
  },

  async tokens({ name }) {
    // Every bearer token the page sent, read from its requests.
    return [...pages.get(name).tokens];
  },

  async stored({ name }) {
    // The page's IndexedDB as the page itself can read it: every record of every store, byte
    // strings as latin-1 text (so plaintext would show), CryptoKeys described.
    return page(name).evaluate(async () => {
      const req = (r) => new Promise((ok, fail) => ((r.onsuccess = () => ok(r.result)), (r.onerror = () => fail(r.error))));
      const show = (v) => {
        if (v instanceof CryptoKey) return { cryptoKey: { extractable: v.extractable, algorithm: v.algorithm.name, usages: v.usages } };
        if (v instanceof ArrayBuffer) v = new Uint8Array(v);
        if (ArrayBuffer.isView(v)) return { bytes: String.fromCharCode(...new Uint8Array(v.buffer, v.byteOffset, v.byteLength)) };
        if (v !== null && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, show(x)]));
        return v;
      };
      const out = {};
      for (const info of await indexedDB.databases()) {
        const db = await req(indexedDB.open(info.name));
        for (const store of db.objectStoreNames) {
          const os = db.transaction(store).objectStore(store);
          const [keys, values] = [await req(os.getAllKeys()), await req(os.getAll())];
          out[`${info.name}/${store}`] = keys.map((k, i) => [String(k), show(values[i])]);
        }
        db.close();
      }
      return out;
    });
  },

  async close_page({ name }) {
    const p = pages.get(name);
    if ([...pages.values()].some((o) => o !== p && o.context === p?.context)) await p.page.close();
    else await p?.context.close();
    pages.delete(name);
    return {};
  },

  async settings({ name, display_name = null, discoverable = null }) {
    // Opens Settings, waits for the server's values, changes what is given and saves; returns
    // what the form shows afterwards.
    const pg = page(name);
    if (!(await pg.locator("#settings").evaluate((d) => d.open))) {
      // Opening the panel reads the settings from the server: wait until that read has ended.
      const loads = await pg.locator("#settings-form").evaluate((f) => Number(f.dataset.loads ?? 0));
      await pg.getByText("Settings", { exact: true }).click();
      await pg.waitForFunction((n) => Number(document.getElementById("settings-form").dataset.loads ?? 0) > n, loads);
    }
    const save = pg.getByRole("button", { name: "Save settings" });
    let error = null;
    if (display_name !== null || discoverable !== null) {
      if (display_name !== null) await pg.getByLabel("Display name (empty: none)").fill(display_name);
      if (discoverable !== null) await pg.getByLabel("List me in the user directory", { exact: false }).setChecked(discoverable);
      await save.click();
      error = (await outcome(pg, () => pg.locator("#settings-status", { hasText: "Saved." }).waitFor({ timeout: TIMEOUT }), "#settings-error")).error;
    }
    return {
      error,
      display_name: await pg.locator("#display-name").inputValue(),
      discoverable: await pg.locator("#discoverable").isChecked(),
    };
  },

  async close_settings({ name }) {
    const pg = page(name);
    if (await pg.locator("#settings").evaluate((d) => d.open)) await pg.getByText("Settings", { exact: true }).click();
    return {};
  },

  async delete_account({ name, confirm = true }) {
    // "Delete account…", then the confirmation step: "Yes, delete my account" or "Cancel".
    const pg = page(name);
    if (!(await pg.locator("#settings").evaluate((d) => d.open))) await pg.getByText("Settings", { exact: true }).click();
    await pg.getByRole("button", { name: "Delete account…" }).click();
    const warning = (await pg.locator("#delete-warning").textContent())?.trim();
    if (!confirm) {
      await pg.getByRole("button", { name: "Cancel" }).click();
      await pg.getByRole("button", { name: "Delete account…" }).waitFor();
      return { warning };
    }
    await pg.getByRole("button", { name: "Yes, delete my account" }).click();
    const r = await outcome(pg, () => pg.locator("#auth-view").waitFor({ state: "visible", timeout: TIMEOUT }), "#delete-error");
    r.warning = warning;
    if (r.error === null) r.status = (await pg.locator("#auth-status").textContent())?.trim();
    return r;
  },

  async request_device({ name, user }) {
    // "Add this browser to my account" on the log-in form: the fingerprint the page shows.
    const pg = page(name);
    await pg.getByLabel("User name").fill(user);
    await pg.getByRole("button", { name: "Add this browser to my account" }).click();
    const shown = pg.locator("#device-fingerprint").filter({ hasText: /\S/ });
    const r = await outcome(pg, () => shown.waitFor({ timeout: TIMEOUT }), "#auth-error");
    if (r.error === null) r.fingerprint = (await shown.textContent()).trim();
    return r;
  },

  async device_outcome({ name }) {
    // After a request: signed in (approved) or back at the log-in form with an error.
    const pg = page(name);
    const r = await outcome(pg, () => pg.locator("#chat-view").waitFor({ state: "visible", timeout: TIMEOUT }), "#auth-error");
    r.chat = await pg.locator("#chat-view").isVisible();
    if (r.error === null) r.me = await pg.locator("#me").textContent();
    return r;
  },

  async device_requests({ name, wait_for = null }) {
    // Opens "Devices" and lists the pending requests as "device name: fingerprint".
    const pg = page(name);
    if (!(await pg.locator("#devices").evaluate((d) => d.open))) await pg.locator("#devices-summary").click();
    const items = pg.locator("#device-requests li");
    if (wait_for !== null) await items.filter({ hasText: wait_for }).waitFor();
    await pg.locator("#own-devices li").first().waitFor(); // the account has one device at least
    return items.evaluateAll((lis) => lis.map((li) => `${li.querySelector(".device-name").textContent}: ${li.querySelector(".fingerprint").textContent}`));
  },

  async decide_device({ name, fingerprint, approve }) {
    // "Approve" (which also adds the device to the conversations) or "Deny"; the status after.
    const pg = page(name);
    const label = `${approve ? "Approve" : "Deny"} the device with key ${fingerprint}`;
    await pg.locator("#devices-status").evaluate((p) => (p.textContent = ""));
    await pg.getByRole("button", { name: label, exact: true }).click();
    const done = pg.locator("#devices-status").filter({ hasText: approve ? /added to|could not/ : /Denied/ });
    const r = await outcome(pg, () => done.waitFor({ timeout: 2 * TIMEOUT }), "#devices-error");
    r.status = ((await pg.locator("#devices-status").textContent()) ?? "").trim();
    return r;
  },

  async own_devices({ name }) {
    // Opens "Devices" afresh (which reads the account's devices) and lists them as
    // "fingerprint" or "fingerprint (this browser)".
    const pg = page(name);
    if (await pg.locator("#devices").evaluate((d) => d.open)) await pg.locator("#devices-summary").click();
    const loads = await pg.locator("#own-devices").evaluate((l) => Number(l.dataset.loads ?? 0));
    await pg.locator("#devices-summary").click();
    await pg.waitForFunction((n) => Number(document.getElementById("own-devices").dataset.loads ?? 0) > n, loads);
    return pg.locator("#own-devices li").evaluateAll((lis) =>
      lis.map((li) => li.querySelector(".fingerprint").textContent + (li.querySelector(".current") ? " (this browser)" : "")),
    );
  },

  async remove_device({ name, fingerprint }) {
    const pg = page(name);
    await pg.locator("#devices-status").evaluate((p) => (p.textContent = ""));
    await pg.getByRole("button", { name: `Remove the device with key ${fingerprint}`, exact: true }).click();
    const r = await outcome(pg, () => pg.locator("#devices-status").filter({ hasText: "Removed" }).waitFor({ timeout: TIMEOUT }), "#devices-error");
    r.status = ((await pg.locator("#devices-status").textContent()) ?? "").trim();
    return r;
  },

  async log_out({ name }) {
    const pg = page(name);
    if (!(await pg.locator("#devices").evaluate((d) => d.open))) await pg.locator("#devices-summary").click();
    await pg.getByRole("button", { name: "Log out (forget this browser)" }).click();
    const r = await outcome(pg, () => pg.locator("#auth-view").waitFor({ state: "visible", timeout: TIMEOUT }), "#devices-error");
    if (r.error === null) r.status = ((await pg.locator("#auth-status").textContent()) ?? "").trim();
    return r;
  },

  async screenshot({ name, path }) {
    // What the user sees (the viewport), as a PNG at `path`.
    await page(name).screenshot({ path });
    return {};
  },

  async send_file({ name, path }) {
    // "Send a file" in the open conversation; the outcome and the progress bar's last value.
    const pg = page(name);
    await pg.locator("#file-status").evaluate((p) => (p.textContent = ""));
    await pg.getByLabel("Send a file").setInputFiles(path);
    await pg.getByRole("button", { name: "Send file" }).click();
    const r = await outcome(pg, () => pg.locator("#file-status", { hasText: "Sent " }).waitFor({ timeout: TIMEOUT }), "#file-error");
    r.status = ((await pg.locator("#file-status").textContent()) ?? "").trim();
    r.progress = await pg.locator("#file-progress").evaluate((b) => (b.hidden ? null : b.value));
    return r;
  },

  async download({ name, file, into }) {
    // "Download <file>" on the newest message offering it, then its "Save <file>" link: the
    // saved copy goes to `into`. Returns the status line (and the error, if any).
    const pg = page(name);
    const item = pg.locator("#messages li", { hasText: `File: ${file} (` }).last();
    await item.waitFor();
    await item.getByRole("button", { name: `Download ${file}`, exact: true }).click();
    const link = item.getByRole("link", { name: `Save ${file}`, exact: true });
    const status = item.locator(".file-status");
    await Promise.race([link.waitFor(), status.filter({ hasNotText: /^(Downloading.*)?$/ }).waitFor()]);
    const text = ((await status.textContent()) ?? "").trim();
    if (!(await link.isVisible())) return { error: text };
    const [download] = await Promise.all([pg.waitForEvent("download"), link.click()]);
    await download.saveAs(into);
    return { error: null, status: text, suggested: download.suggestedFilename() };
  },

  async timed_load({ name, reload = false, no_cache = false, until }) {
    // For benchmarks: reload (or take the load `open` made) and wait for the LOAD_MARKS named
    // in `until`; returns them (ms since navigation start) and the bytes the load fetched.
    // `no_cache`: the HTTP cache is bypassed from now on (a cold load, stored data kept).
    const entry = pages.get(name);
    const pg = entry.page;
    if (no_cache !== (entry.noCache ?? false)) {
      entry.cdp ??= await entry.context.newCDPSession(pg);
      await entry.cdp.send("Network.enable");
      await entry.cdp.send("Network.setCacheDisabled", { cacheDisabled: no_cache });
      entry.noCache = no_cache;
    }
    if (reload) await pg.reload();
    await pg.waitForFunction((keys) => keys.every((k) => window.__roostMarks?.[k] !== undefined), until);
    return pg.evaluate(() => {
      const nav = performance.getEntriesByType("navigation")[0];
      const all = [nav, ...performance.getEntriesByType("resource")];
      return {
        marks: window.__roostMarks,
        dom_content_loaded: nav.domContentLoadedEventEnd,
        transferred: all.reduce((n, e) => n + (e.transferSize ?? 0), 0),
      };
    });
  },

  async watch_text({ name, text }) {
    // For benchmarks: from now on the page notes the time (Date.now(), ms since the epoch)
    // at which a message with exactly this text first appears in the open conversation.
    await page(name).evaluate((text) => {
      const seen = (window.__roostSeen ??= {});
      delete seen[text];
      const check = () => {
        if (seen[text] !== undefined) return true;
        for (const t of document.querySelectorAll("#messages li .text")) {
          if (t.textContent === text) {
            seen[text] = Date.now();
            return true;
          }
        }
        return false;
      };
      if (check()) return;
      const observer = new MutationObserver(() => check() && observer.disconnect());
      observer.observe(document.getElementById("messages"), { subtree: true, childList: true, characterData: true });
    }, text);
    return {};
  },

  async seen_text({ name, text, timeout = TIMEOUT }) {
    // When the text watched by `watch_text` appeared (waiting for it).
    const pg = page(name);
    await pg.waitForFunction((text) => window.__roostSeen?.[text] !== undefined, text, { timeout });
    return pg.evaluate((text) => window.__roostSeen[text], text);
  },

  async timed_send({ name, text }) {
    // For benchmarks: types the message, clicks "Send" and returns when the click reached
    // the page (Date.now()); the message is sent after the click, so this returns at once.
    const pg = page(name);
    await pg.getByLabel("Message", { exact: true }).fill(text);
    await pg.evaluate(() => {
      window.__roostClick = undefined;
      document.addEventListener("click", () => (window.__roostClick = Date.now()), { capture: true, once: true });
    });
    await pg.getByRole("button", { name: "Send", exact: true }).click();
    return pg.evaluate(() => window.__roostClick);
  },

  async allow_notifications({ name, origin }) {
    // The user allows notifications for the site (what the browser's prompt would ask).
    await pages.get(name).context.grantPermissions(["notifications"], { origin });
    return {};
  },

  async stand_in_push_service({ name, endpoint, keys }) {
    // Headless Chromium has no push service (Playwright's contexts are incognito, where Chrome
    // refuses the Push API; a persistent profile waits forever for Google's): the page's
    // PushManager hands out a subscription of the test's stand-in instead, with its endpoint
    // and keys. Everything else (permission, service worker, PUT /v1/push) is the page's own.
    await page(name).evaluate(({ endpoint, keys }) => {
      let sub = null;
      PushManager.prototype.getSubscription = async () => sub;
      PushManager.prototype.subscribe = async (options) => {
        const key = new Uint8Array(options.applicationServerKey);
        window.roostSubscribedWith = btoa(String.fromCharCode(...key)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
        sub = { endpoint, options: { applicationServerKey: key.buffer, userVisibleOnly: options.userVisibleOnly }, toJSON: () => ({ endpoint, keys }), unsubscribe: async () => ((sub = null), true) };
        return sub;
      };
    }, { endpoint, keys });
    return {};
  },

  async notification_settings({ name, on = null, policy = null }) {
    // Settings, "Notifications": waits for the server's values, changes what is given and
    // saves; returns what the form shows then (and the key the page subscribed with).
    const pg = page(name);
    const form = pg.locator("#notify-form");
    if (!(await pg.locator("#settings").evaluate((d) => d.open))) {
      const loads = await form.evaluate((f) => Number(f.dataset.loads ?? 0));
      await pg.getByText("Settings", { exact: true }).click();
      await pg.waitForFunction((n) => Number(document.getElementById("notify-form").dataset.loads ?? 0) > n, loads);
    }
    let error = null;
    if (on !== null || policy !== null) {
      if (on !== null) await pg.getByLabel("Notify me of new messages while Roost is closed").setChecked(on);
      if (policy !== null) await pg.getByLabel("Notifications for conversations (default)").selectOption({ label: policy });
      await pg.getByRole("button", { name: "Save notifications" }).click();
      error = (await outcome(pg, () => pg.locator("#notify-status").filter({ hasText: /\S/ }).waitFor({ timeout: TIMEOUT }), "#notify-error")).error;
    }
    const select = pg.getByLabel("Notifications for conversations (default)");
    return {
      error,
      status: ((await pg.locator("#notify-status").textContent()) ?? "").trim(),
      on: await pg.locator("#notify-on").isChecked(),
      policy: await select.evaluate((s) => s.selectedOptions[0]?.textContent ?? null),
      policies: await select.evaluate((s) => [...s.options].map((o) => o.textContent)),
      subscribed_with: await pg.evaluate(() => window.roostSubscribedWith ?? null),
    };
  },

  async conversation_notify({ name, policy = null }) {
    // The open conversation's "Notifications for this conversation": picks `policy` (an
    // option's text) and waits until the page has told the server; returns the choices.
    const pg = page(name);
    const select = pg.getByLabel("Notifications for this conversation");
    await pg.waitForFunction(() => document.getElementById("conversation-notify").options.length > 1);
    let error = null;
    if (policy !== null) {
      await select.selectOption({ label: policy });
      await pg.waitForFunction(() => !document.getElementById("conversation-notify").disabled);
      error = ((await pg.locator("#conversation-notify-error").textContent()) ?? "").trim() || null;
    }
    return {
      error,
      policy: await select.evaluate((s) => s.selectedOptions[0]?.textContent ?? null),
      choices: await select.evaluate((s) => [...s.options].map((o) => o.textContent)),
    };
  },

  async leave_origin({ name }) {
    // The user navigates away: no page of the origin is open any more (its socket closes);
    // the browser context, with its service worker, stays.
    await page(name).goto("about:blank");
    return {};
  },

  async deliver_push({ name, origin, data }) {
    // Hands a push message to the origin's service worker through the DevTools protocol, as
    // the browser does when its push service delivers one.
    const p = pages.get(name);
    const cdp = await p.context.newCDPSession(p.page);
    const registrations = [];
    cdp.on("ServiceWorker.workerRegistrationUpdated", (e) => registrations.push(...e.registrations));
    await cdp.send("ServiceWorker.enable");
    const deadline = Date.now() + TIMEOUT;
    let reg;
    while ((reg = registrations.find((r) => r.scopeURL === `${origin}/` && !r.isDeleted)) === undefined) {
      if (Date.now() > deadline) throw new Error(`no service worker registered for ${origin}/`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await cdp.send("ServiceWorker.deliverPushMessage", { origin, registrationId: reg.registrationId, data });
    await cdp.detach();
    return {};
  },

  async notifications_shown({ name, origin, wait = true }) {
    // The notifications the origin's service worker shows now, read inside the worker itself
    // (no page of the origin is opened for it).
    const context = pages.get(name).context;
    const sw = context.serviceWorkers().find((w) => w.url() === `${origin}/sw.js`) ?? (await context.waitForEvent("serviceworker"));
    return sw.evaluate(async (wait) => {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const shown = await self.registration.getNotifications();
        if (shown.length > 0 || !wait || Date.now() > deadline) return shown.map((n) => ({ title: n.title, body: n.body, tag: n.tag }));
        await new Promise((r) => setTimeout(r, 50));
      }
    }, wait);
  },

  async quit() {
    await browser?.close();
    return {};
  },
};

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  const req = JSON.parse(line);
  let reply;
  try {
    reply = { id: req.id, ok: true, result: await ops[req.op](req) };
  } catch (e) {
    reply = { id: req.id, ok: false, error: String(e?.message ?? e) };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
  if (req.op === "quit") break;
}
process.exit(0);
