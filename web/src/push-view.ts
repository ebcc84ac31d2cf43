// The page's notification controls: "Notifications" in Settings (on/off and the default
// policy) and the open conversation's own policy. push.ts talks to the browser and server.
import { $, el, errorText } from "./dom.js";
import type { Conversation, Messenger } from "./messenger.js";
import { policyName, pushServer, readPushSetting, turnOff, turnOn } from "./push.js";

interface Deps {
  messenger: () => Messenger | undefined;
}

let policies: Promise<string[]> | undefined;

/** The server's policies (read once per load); the page's two choices until it answers. */
function serverPolicies(m: Messenger): Promise<string[]> {
  policies ??= pushServer(m.session.api)
    .then((s) => s.policies)
    .catch((e) => {
      policies = undefined;
      throw e;
    });
  return policies;
}

function fill(select: HTMLSelectElement, choices: Array<[string, string]>, value: string): void {
  select.replaceChildren(
    ...choices.map(([v, text]) => {
      const o = el("option", text);
      o.value = v;
      return o;
    }),
  );
  select.value = value;
}

/** The open conversation's policy select: "Default" or one of the server's policies. */
export function showConversationPolicy(m: Messenger, c: Conversation): void {
  // Only a member has a policy: not after leaving, being removed or the group's deletion.
  const member = c.status === "active" || c.status === "waiting";
  $("conversation-notify-row").hidden = !member;
  if (!member) return;
  const select = $<HTMLSelectElement>("conversation-notify");
  const value = c.notify ?? "";
  const known = [...select.options].map((o) => o.value);
  if (known.length > 1 && known.includes(value)) {
    select.value = value;
    return;
  }
  fill(select, [["", "Default"], ...(value === "" ? [] : [[value, policyName(value)] as [string, string]])], value);
  serverPolicies(m)
    .then((ps) => {
      const choices = new Set([...ps, ...(value === "" ? [] : [value])]);
      fill(select, [["", "Default"], ...[...choices].map((p): [string, string] => [p, policyName(p)])], c.notify ?? "");
    })
    .catch((e) => console.warn("the server's notification policies could not be read", e));
}

export function initPush(deps: Deps): void {
  const form = $<HTMLFormElement>("notify-form");
  const on = $<HTMLInputElement>("notify-on");
  const defaultPolicy = $<HTMLSelectElement>("notify-default");
  const controls = (): NodeListOf<HTMLInputElement | HTMLSelectElement | HTMLButtonElement> => form.querySelectorAll("input, select, button");

  // Read from the server each time Settings is opened, like the other settings.
  $("settings").addEventListener("toggle", () => {
    const m = deps.messenger();
    if (m === undefined || !$<HTMLDetailsElement>("settings").open) return;
    $("notify-status").textContent = "";
    $("notify-error").textContent = "";
    controls().forEach((c) => (c.disabled = true));
    Promise.all([serverPolicies(m), readPushSetting(m.session.api)])
      .then(([ps, setting]) => {
        fill(defaultPolicy, ps.map((p): [string, string] => [p, policyName(p)]), setting.defaultPolicy);
        on.checked = setting.on;
      })
      .catch((e) => ($("notify-error").textContent = errorText(e)))
      .finally(() => {
        controls().forEach((c) => (c.disabled = false));
        form.dataset.loads = String(Number(form.dataset.loads ?? 0) + 1); // for tests: a read ended
      });
  });

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const m = deps.messenger();
    if (m === undefined) return;
    $("notify-status").textContent = "";
    $("notify-error").textContent = "";
    controls().forEach((c) => (c.disabled = true));
    (on.checked ? turnOn(m.session.api, defaultPolicy.value) : turnOff(m.session.api))
      .then(() => ($("notify-status").textContent = on.checked ? "Notifications are on." : "Notifications are off."))
      .catch((e) => ($("notify-error").textContent = errorText(e)))
      .finally(() => controls().forEach((c) => (c.disabled = false)));
  });

  $<HTMLSelectElement>("conversation-notify").addEventListener("change", (ev) => {
    const m = deps.messenger();
    const select = ev.target as HTMLSelectElement;
    if (m === undefined || m.openId === null) return;
    $("conversation-notify-error").textContent = "";
    select.disabled = true;
    const id = m.openId;
    m.setNotify(id, select.value === "" ? null : select.value)
      .catch((e) => {
        $("conversation-notify-error").textContent = errorText(e);
        select.value = m.conversations.get(id)?.notify ?? "";
      })
      .finally(() => (select.disabled = false));
  });
}
