// The page's device screens: "Add this browser to my account" on the log-in form (a request an
// existing device approves, docs/web.md), and the signed-in "Devices" panel that lists such
// requests with their key fingerprints, approves or denies them, and logs this browser out.
import type { Api } from "./api.js";
import {
  addToConversations,
  approve,
  deny,
  ownDevices,
  pendingRequests,
  removeDevice,
  removeThisDevice,
  requestToJoin,
  waitForApproval,
  type DeviceRequest,
  type OwnDevice,
} from "./devices.js";
import { $, el, errorText } from "./dom.js";
import type { Messenger } from "./messenger.js";
import type { Session } from "./session.js";

const REFRESH_MS = 5000; // how often a signed-in page looks for new requests

export interface DeviceHooks {
  messenger: () => Messenger | undefined;
  /** Throws when this tab may not hold a device (another tab of the browser does). */
  ready: () => Promise<void>;
  signedIn: (session: Session) => Promise<void>;
  signedOut: (status: string) => Promise<void>;
}

export function initDevices(hooks: DeviceHooks): void {
  initRequest(hooks);
  initPanel(hooks);
}

/** The new device's side: ask, show the fingerprint, wait for the decision. */
function initRequest(hooks: DeviceHooks): void {
  let current: { cancelled: boolean } | undefined;
  const waitingView = (on: boolean): void => {
    $("auth-form").hidden = on;
    $("device-request").hidden = !on;
  };
  $("request-device").addEventListener("click", () => {
    const buttons = $("auth-form").querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    $("auth-error").textContent = "";
    $("auth-status").textContent = "";
    const run = { cancelled: false };
    current = run;
    (async () => {
      await hooks.ready();
      const r = await requestToJoin($<HTMLInputElement>("user").value);
      $("device-user").textContent = r.userId;
      $("device-fingerprint").textContent = r.fingerprint;
      waitingView(true);
      $("device-request-cancel").focus();
      const session = await waitForApproval(r, () => run.cancelled);
      if (session !== undefined) await hooks.signedIn(session);
    })()
      .catch((e) => {
        if (!run.cancelled) $("auth-error").textContent = errorText(e);
      })
      .finally(() => {
        if (current !== run) return;
        waitingView(false);
        buttons.forEach((b) => (b.disabled = false));
      });
  });
  $("device-request-cancel").addEventListener("click", () => {
    if (current !== undefined) current.cancelled = true;
    current = undefined;
    waitingView(false);
    $("auth-form")
      .querySelectorAll("button")
      .forEach((b) => (b.disabled = false));
    $("auth-status").textContent = "Request cancelled. It expires on the server within ten minutes.";
  });
}

/** The existing device's side: pending requests, kept fresh while signed in. */
function initPanel(hooks: DeviceHooks): void {
  let shown = "";
  const refresh = async (): Promise<void> => {
    const m = hooks.messenger();
    if (m === undefined) return;
    try {
      const requests = await pendingRequests(m.session.api);
      const key = JSON.stringify(requests);
      if (key !== shown) {
        shown = key;
        renderRequests(hooks, m.session.api, requests, refreshAll);
      }
    } catch (e) {
      console.warn("could not read the device requests", e);
    }
  };
  // The account's devices: read each time the panel opens, and after a decision.
  const refreshDevices = async (): Promise<void> => {
    const m = hooks.messenger();
    if (m === undefined) return;
    try {
      renderOwnDevices(m, await ownDevices(m.session), refreshDevices);
    } catch (e) {
      $("devices-error").textContent = errorText(e);
    } finally {
      const list = $("own-devices");
      list.dataset.loads = String(Number(list.dataset.loads ?? 0) + 1); // for tests: a read ended
    }
  };
  const refreshAll = async (): Promise<void> => {
    await refresh();
    if ($<HTMLDetailsElement>("devices").open) await refreshDevices();
  };
  setInterval(() => {
    if (!document.hidden) void refresh(); // a hidden tab catches up when it is shown again
  }, REFRESH_MS);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) void refresh();
  });
  $("devices").addEventListener("toggle", () => {
    if ($<HTMLDetailsElement>("devices").open) void refreshAll();
  });
  $("log-out").addEventListener("click", () => {
    const m = hooks.messenger();
    if (m === undefined) return;
    const b = $<HTMLButtonElement>("log-out");
    b.disabled = true;
    $("devices-error").textContent = "";
    removeThisDevice(m.session)
      .then((only) => {
        shown = "";
        $<HTMLDetailsElement>("devices").open = false;
        $("devices-status").textContent = "";
        return hooks.signedOut(
          only
            ? "Logged out: this browser forgot your device. It was your account's only device; log in with your password to use the account again."
            : "Logged out: this device was removed from your account and this browser forgot it.",
        );
      })
      .catch((e) => ($("devices-error").textContent = errorText(e)))
      .finally(() => (b.disabled = false));
  });
}

function renderOwnDevices(m: Messenger, devices: OwnDevice[], refresh: () => Promise<void>): void {
  const list = $("own-devices");
  list.replaceChildren();
  for (const d of devices) {
    const li = el("li");
    li.append(el("span", d.fingerprint, "fingerprint"), el("span", `added ${new Date(d.createdAt * 1000).toLocaleDateString()}`));
    if (d.current) {
      li.append(el("span", "this browser", "current"));
    } else {
      const b = el("button", "Remove");
      b.type = "button";
      b.setAttribute("aria-label", `Remove the device with key ${d.fingerprint}`);
      b.addEventListener("click", () => {
        b.disabled = true;
        $("devices-error").textContent = "";
        removeDevice(m.session.api, d.uuid)
          .then(() => ($("devices-status").textContent = "Removed: that device is out of the account and its conversations."))
          .catch((e) => ($("devices-error").textContent = errorText(e)))
          .finally(() => void refresh());
      });
      li.append(b);
    }
    list.append(li);
  }
}

function renderRequests(hooks: DeviceHooks, api: Api, requests: DeviceRequest[], refresh: () => Promise<void>): void {
  $("devices-summary").textContent = requests.length === 0 ? "Devices" : `Devices (${requests.length} waiting for approval)`;
  $("no-device-requests").hidden = requests.length > 0;
  const list = $("device-requests");
  list.replaceChildren();
  for (const r of requests) {
    const li = el("li");
    li.append(el("span", r.deviceName ?? "A new device", "device-name"), el("span", r.fingerprint, "fingerprint"));
    const decide = (text: string, action: () => Promise<string>): HTMLButtonElement => {
      const b = el("button", text);
      b.type = "button";
      b.setAttribute("aria-label", `${text} the device with key ${r.fingerprint}`);
      b.addEventListener("click", () => {
        li.querySelectorAll("button").forEach((x) => (x.disabled = true));
        $("devices-error").textContent = "";
        action()
          .then((status) => ($("devices-status").textContent = status))
          .catch((e) => ($("devices-error").textContent = errorText(e)))
          .finally(() => void refresh());
      });
      return b;
    };
    li.append(
      decide("Approve", async () => {
        const client = await approve(api, r.requestId);
        $("devices-status").textContent = "Approved. Adding the new device to your conversations…";
        const m = hooks.messenger();
        if (m === undefined) return "Approved.";
        const { added, failed } = await addToConversations(m, client);
        const into = `The new device was added to ${added} conversation${added === 1 ? "" : "s"}.`;
        return failed === 0 ? into : `${into} ${failed} could not be done (is the new device signed in?).`;
      }),
      decide("Deny", async () => {
        await deny(api, r.requestId);
        return "Denied: that device was not added.";
      }),
    );
    list.append(li);
  }
}
