// The page: a log-in form, then the conversation list, invitations and the open conversation.
// All text from the network goes into the DOM as text (textContent), never as markup.
import { deleteAccount, readSettings, saveSettings, searchDirectory, type DirectoryEntry } from "./account.js";
import { ApiError } from "./api.js";
import { initDevices } from "./devices-view.js";
import { $, el, errorText } from "./dom.js";
import { fileControl, wireFileForm } from "./files.js";
import { Messenger, type Conversation } from "./messenger.js";
import { members } from "./mls.js";
import { initPush, showConversationPolicy } from "./push-view.js";
import { decodeDevice, type SavedDevice } from "./saved.js";
import { Session } from "./session.js";
import { Vault } from "./store.js";

const STATUS_TEXT = {
  connecting: "Connecting…",
  online: "Online",
  offline: "Offline, reconnecting…",
  replaced: "Opened in another tab",
};

let messenger: Messenger | undefined;

/** Run a form's action with its button disabled and its error paragraph filled on failure. */
function busy(form: HTMLFormElement, errorEl: HTMLElement, action: (submitter: HTMLButtonElement | null) => Promise<void>): void {
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const submitter = (ev as SubmitEvent).submitter as HTMLButtonElement | null;
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    errorEl.textContent = "";
    action(submitter)
      .catch((e) => (errorEl.textContent = errorText(e)))
      .finally(() => buttons.forEach((b) => (b.disabled = false)));
  });
}

function render(): void {
  const m = messenger;
  if (m === undefined) return;
  $("me").textContent = m.session.userId;
  $("status").textContent = STATUS_TEXT[m.status];
  $("status").dataset.status = m.status;

  const invitations = $("invitations");
  invitations.replaceChildren();
  for (const inv of m.invitations.values()) {
    const li = el("li");
    li.append(el("span", `${inv.from} wants to start a conversation`));
    const accept = el("button", "Accept");
    accept.type = "button";
    accept.addEventListener("click", () => {
      accept.disabled = true;
      m.accept(inv.connectionId)
        .then((c) => m.open(c.id))
        .catch((e) => {
          accept.disabled = false;
          $("list-error").textContent = errorText(e);
        });
    });
    const decline = el("button", "Decline");
    decline.type = "button";
    decline.addEventListener("click", () => {
      decline.disabled = true;
      m.decline(inv.connectionId).catch((e) => {
        decline.disabled = false;
        $("list-error").textContent = errorText(e);
      });
    });
    li.append(accept, decline);
    invitations.append(li);
  }
  $("invitations-heading").hidden = m.invitations.size === 0;
  const problems = m.queueProblem === undefined ? m.refusals : [m.queueProblem, ...m.refusals];
  $("refusals").replaceChildren(...problems.map((text) => el("li", text)));

  const list = $("conversations");
  list.replaceChildren();
  for (const c of m.conversations.values()) {
    const li = el("li");
    const b = el("button", undefined, "conversation");
    b.type = "button";
    b.append(el("span", c.peer, "peer"));
    if (c.unread > 0) {
      const badge = el("span", String(c.unread), "unread");
      badge.setAttribute("aria-label", `${c.unread} unread`);
      b.append(badge);
    }
    if (c.id === m.openId) b.setAttribute("aria-current", "true");
    b.addEventListener("click", () => m.open(c.id));
    li.append(b);
    list.append(li);
  }
  $("no-conversations").hidden = m.conversations.size > 0;

  const open = m.openId === null ? undefined : m.conversations.get(m.openId);
  $("conversation").hidden = open === undefined;
  if (open === undefined) return;
  $("conversation-title").textContent = open.peer;
  $("conversation-status").textContent = {
    waiting: `Waiting for ${open.peer} to accept. You can already write.`,
    active: open.group ? "End-to-end encrypted group conversation." : `End-to-end encrypted conversation with ${open.peer}.`,
    rejected: `${open.peer} declined the conversation; it was deleted.`,
    deleted: "This conversation was deleted.",
    left: "You left this group.",
    removed: "You are no longer a member of this group.",
  }[open.status];
  renderGroup(m, open);
  showConversationPolicy(m, open);
  const messages = $("messages");
  messages.replaceChildren(
    ...open.messages.map((msg) => {
      if (msg.notice === true) return el("li", msg.text, "notice");
      const li = el("li", undefined, msg.mine ? "mine" : "theirs");
      li.append(el("span", msg.mine ? "You" : msg.from, "from"), el("span", msg.text, "text"));
      if (msg.file !== undefined) li.append(fileControl(m.session.api, m.session.domain, msg.file));
      return li;
    }),
  );
  messages.scrollTop = messages.scrollHeight;
  open.unread = 0;
}

/** One tab per browser profile holds the stored device: two would both advance and write
 * its MLS states. The lock (Web Locks API) is held for as long as this page lives. */
function holdDevice(): Promise<boolean> {
  if (navigator.locks === undefined) return Promise.resolve(true); // not a secure context
  return new Promise((resolve) => {
    void navigator.locks.request("roost-device", { ifAvailable: true }, (lock) => {
      resolve(lock !== null);
      return lock === null ? undefined : new Promise<void>(() => {});
    });
  });
}

const held = holdDevice();
const OTHER_TAB = "Roost is already open in another tab of this browser: use that tab, or close it and reload this one.";

// Where this browser keeps the device between loads; undefined where IndexedDB is unavailable
// (then the page works in memory, as one load's device).
const vault: Promise<Vault | undefined> = held.then((h) =>
  h
    ? Vault.open().catch((e) => {
        console.warn("no IndexedDB: this device will not outlive the page", e);
        return undefined;
      })
    : undefined,
);

/** A group conversation's members (with their role) and what an admin can do about them. */
function renderGroup(m: Messenger, c: Conversation): void {
  const inGroup = c.group === true && c.status === "active";
  $("group-panel").hidden = !inGroup;
  if (!inGroup) return;
  const list = $("members");
  list.replaceChildren();
  const seen = new Set<string>();
  for (const member of members(c.state)) {
    if (seen.has(member.userId)) continue; // one line per user, whatever their devices
    seen.add(member.userId);
    const admin = c.roles?.[member.userId] === "admin";
    const li = el("li");
    li.append(el("span", `${member.userId}${member.userId === m.session.userId ? " (you)" : ""}${admin ? " · admin" : ""}`, "member"));
    if (member.userId !== m.session.userId) {
      if (!admin) li.append(groupButton(`Make ${member.userId} admin`, "Make admin", () => m.promote(c.id, member.userId)));
      li.append(groupButton(`Remove ${member.userId}`, "Remove", () => m.remove(c.id, member.userId)));
    }
    list.append(li);
  }
}

function groupButton(label: string, text: string, action: () => Promise<void>): HTMLButtonElement {
  const b = el("button", text);
  b.type = "button";
  b.setAttribute("aria-label", label);
  b.addEventListener("click", () => {
    b.disabled = true;
    $("group-error").textContent = "";
    action()
      .catch((e) => ($("group-error").textContent = errorText(e)))
      .finally(() => (b.disabled = false));
  });
  return b;
}

const userList = (text: string): string[] => text.split(/[\s,]+/).filter((u) => u !== "");

function signedIn(session: Session, v: Vault | undefined, saved?: SavedDevice): Promise<void> {
  messenger = new Messenger(session, render, v, saved);
  $("auth-view").hidden = true;
  $("chat-view").hidden = false;
  render();
  $<HTMLInputElement>("peer").focus();
  return messenger.start();
}

busy($<HTMLFormElement>("auth-form"), $("auth-error"), async (submitter) => {
  $("auth-status").textContent = "";
  const user = $<HTMLInputElement>("user").value;
  const password = $<HTMLInputElement>("password").value;
  if (!(await held)) throw new Error(OTHER_TAB);
  const session = submitter?.value === "register" ? await Session.register(user, password) : await Session.logIn(user, password);
  await signedIn(session, await vault);
});

/** A device saved by an earlier load comes back without a password: it signs for a token. */
async function resume(): Promise<void> {
  if (!(await held)) {
    $("auth-error").textContent = OTHER_TAB;
    $("auth-form")
      .querySelectorAll("button")
      .forEach((b) => (b.disabled = true));
    return;
  }
  const v = await vault;
  const record = await v?.load().catch((e) => {
    console.error("the saved device cannot be read", e);
    return undefined;
  });
  if (v === undefined || record === undefined) return;
  let saved: SavedDevice;
  let session: Session;
  try {
    saved = decodeDevice(record);
    session = await Session.resume(saved);
  } catch (e) {
    // Gone from the server (the device removed, the account deleted: a 4xx) or unreadable:
    // start over. Unreachable, busy or failing servers (0, 429, 5xx) keep it for the next load.
    const keep = e instanceof ApiError && (e.status === 0 || e.status === 429 || e.status >= 500);
    if (!keep) await v.clear();
    $("auth-error").textContent = `Could not resume your saved session: ${errorText(e)}`;
    return;
  }
  await signedIn(session, v, saved);
}

void resume();

busy($<HTMLFormElement>("new-form"), $("list-error"), async () => {
  const m = messenger;
  if (m === undefined) return;
  const peer = $<HTMLInputElement>("peer");
  const c = await m.startConversation(peer.value);
  peer.value = "";
  m.open(c.id);
  $<HTMLInputElement>("message").focus();
});

// Directory search: the first 20 matches; more matches ask for a longer search text.
// "text@domain" searches that domain's directory (through the home server).
function showFound(users: DirectoryEntry[], more: boolean, domain: string | null): void {
  const list = $("found");
  list.replaceChildren();
  for (const u of users) {
    const li = el("li");
    li.append(el("span", u.displayName === null ? u.userId : `${u.displayName} (${u.userId})`, "person"));
    const b = el("button", "Start");
    b.type = "button";
    b.setAttribute("aria-label", `Start a conversation with ${u.userId}`);
    b.addEventListener("click", () => {
      const m = messenger;
      if (m === undefined) return;
      b.disabled = true;
      $("list-error").textContent = "";
      m.startConversation(u.userId)
        .then((c) => {
          m.open(c.id);
          $<HTMLInputElement>("message").focus();
        })
        .catch((e) => ($("list-error").textContent = errorText(e)))
        .finally(() => (b.disabled = false));
    });
    li.append(b);
    list.append(li);
  }
  const where = domain === null ? "" : ` on ${domain}`;
  $("find-status").textContent =
    users.length === 0
      ? `Nobody listed in the directory${where} matches.`
      : more
        ? `The first ${users.length} found${where}: type more of the name to narrow it.`
        : `${users.length} found${where}.`;
}

busy($<HTMLFormElement>("find-form"), $("list-error"), async () => {
  const m = messenger;
  if (m === undefined) return;
  const page = await searchDirectory(m.session.api, $<HTMLInputElement>("find").value);
  showFound(page.users, page.next !== null, page.domain);
});

busy($<HTMLFormElement>("group-form"), $("list-error"), async () => {
  const m = messenger;
  if (m === undefined) return;
  const name = $<HTMLInputElement>("group-name");
  const invitees = $<HTMLInputElement>("group-members");
  const c = await m.createGroup(name.value, userList(invitees.value));
  name.value = invitees.value = "";
  m.open(c.id);
});

busy($<HTMLFormElement>("invite-form"), $("group-error"), async () => {
  const m = messenger;
  const input = $<HTMLInputElement>("invitee");
  if (m === undefined || m.openId === null) return;
  await m.invite(m.openId, userList(input.value));
  input.value = "";
});

$("leave").addEventListener("click", () => {
  const m = messenger;
  if (m === undefined || m.openId === null) return;
  $("group-error").textContent = "";
  m.leave(m.openId).catch((e) => ($("group-error").textContent = errorText(e)));
});

busy($<HTMLFormElement>("send-form"), $("send-error"), async () => {
  const m = messenger;
  const input = $<HTMLInputElement>("message");
  if (m === undefined || m.openId === null || input.value.trim() === "") return;
  const text = input.value;
  input.value = "";
  try {
    await m.send(m.openId, text);
  } catch (e) {
    input.value = text; // nothing was lost: try again
    throw e;
  }
  input.focus();
});

// Settings: read from the server each time the panel is opened, so they show what it holds.
$("settings").addEventListener("toggle", () => {
  const m = messenger;
  if (m === undefined || !$<HTMLDetailsElement>("settings").open) return;
  $("settings-status").textContent = "";
  $("settings-error").textContent = "";
  // Nothing to edit or save until the server's values are in.
  const fields = $("settings-form").querySelectorAll<HTMLInputElement | HTMLButtonElement>("input, button");
  fields.forEach((f) => (f.disabled = true));
  readSettings(m.session.api)
    .then((s) => {
      $<HTMLInputElement>("display-name").value = s.displayName ?? "";
      $<HTMLInputElement>("discoverable").checked = s.discoverable;
    })
    .catch((e) => ($("settings-error").textContent = errorText(e)))
    .finally(() => {
      fields.forEach((f) => (f.disabled = false));
      const form = $("settings-form");
      form.dataset.loads = String(Number(form.dataset.loads ?? 0) + 1); // for tests: a read ended
    });
});

busy($<HTMLFormElement>("settings-form"), $("settings-error"), async () => {
  const m = messenger;
  if (m === undefined) return;
  $("settings-status").textContent = "";
  const s = await saveSettings(m.session.api, $<HTMLInputElement>("display-name").value, $<HTMLInputElement>("discoverable").checked);
  $<HTMLInputElement>("display-name").value = s.displayName ?? "";
  $<HTMLInputElement>("discoverable").checked = s.discoverable;
  $("settings-status").textContent = "Saved.";
});

// Deleting the account takes two steps: the button shows what it does and asks again.
const confirmDelete = (show: boolean): void => {
  $("delete-confirm").hidden = !show;
  $("delete-account").hidden = show;
  $("delete-error").textContent = "";
  (show ? $("delete-cancel") : $("delete-account")).focus();
};
$("delete-account").addEventListener("click", () => confirmDelete(true));
$("delete-cancel").addEventListener("click", () => confirmDelete(false));
/** Back to the log-in form: the device is gone on the server (or forgotten), so this page
 * forgets it too. */
async function signedOut(status: string): Promise<void> {
  messenger?.stop();
  messenger = undefined;
  await (await vault)?.clear();
  confirmDelete(false);
  $<HTMLDetailsElement>("settings").open = false;
  $("found").replaceChildren();
  $("find-status").textContent = "";
  $("chat-view").hidden = true;
  $("auth-view").hidden = false;
  $("auth-status").textContent = status;
  $<HTMLInputElement>("user").focus();
}

$("delete-confirmed").addEventListener("click", () => {
  const m = messenger;
  if (m === undefined) return;
  const b = $<HTMLButtonElement>("delete-confirmed");
  b.disabled = true;
  deleteAccount(m.session.api)
    .then(() => signedOut("Your account was deleted."))
    .catch((e) => ($("delete-error").textContent = errorText(e)))
    .finally(() => (b.disabled = false));
});

initDevices({
  messenger: () => messenger,
  ready: async () => {
    if (!(await held)) throw new Error(OTHER_TAB);
  },
  signedIn: async (session) => signedIn(session, await vault),
  signedOut,
});
wireFileForm(() => messenger);
initPush({ messenger: () => messenger });

document.addEventListener("visibilitychange", render);
