// Browser notifications through Web Push (docs/api.md, "Push notifications"): the service
// worker (/sw.js) subscribes with the homeserver's VAPID key, the subscription is registered
// for this device with `PUT /v1/push` with a default policy, and each conversation may have a
// policy of its own (`PUT /v1/groups/{id}/policy`). The server sends a push only while this
// device has no open socket, and never with content.
import { ApiError, type Api } from "./api.js";
import { fromB64u } from "./bytes.js";

export interface PushServer {
  /** The VAPID applicationServerKey (b64u, uncompressed P-256). */
  publicKey: string;
  /** The policies the server acts on (e.g. "all", "mute"). */
  policies: string[];
}

export interface PushSetting {
  on: boolean;
  defaultPolicy: string;
}

export const POLICY_NAMES: Record<string, string> = { all: "All messages", mute: "Muted" };
export const policyName = (p: string): string => POLICY_NAMES[p] ?? p;

/** Service workers and the Push API need a secure context (https:// or localhost). */
export const pushSupported = (): boolean => "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;

export async function pushServer(api: Api): Promise<PushServer> {
  const s = await api.json<{ public_key: string; policies: string[] }>("GET", "/v1/push/server", { auth: false });
  return { publicKey: s.public_key, policies: s.policies };
}

/** What the server holds for this device: notifications are on while it has a registration
 * (it drops one whose push service said the subscription is gone). */
export async function readPushSetting(api: Api): Promise<PushSetting> {
  try {
    const r = await api.json<{ default_policy: string }>("GET", "/v1/push");
    return { on: true, defaultPolicy: r.default_policy };
  } catch (e) {
    if (e instanceof ApiError && e.code === "push_not_registered") return { on: false, defaultPolicy: "all" };
    throw e;
  }
}

/** Registers a subscription (a `PushSubscription.toJSON()`) for this device. */
export async function registerSubscription(api: Api, sub: PushSubscriptionJSON, defaultPolicy: string): Promise<void> {
  if (sub.endpoint === undefined || sub.keys?.p256dh === undefined || sub.keys.auth === undefined) {
    throw new Error("The browser gave a push subscription without an endpoint or keys.");
  }
  const body = { kind: "webpush", endpoint: sub.endpoint, keys: { p256dh: sub.keys.p256dh, auth: sub.keys.auth }, default_policy: defaultPolicy };
  await api.request("PUT", "/v1/push", { json: body });
}

/** Asks for permission (the first time), installs the service worker, subscribes with the
 * server's key (reusing a subscription made with the same key) and registers it. */
export async function turnOn(api: Api, defaultPolicy: string): Promise<void> {
  if (!pushSupported()) throw new Error("This browser cannot show notifications for this page (it needs https:// and a browser with Web Push).");
  if ((await Notification.requestPermission()) !== "granted") {
    throw new Error("The browser blocks notifications for this site: allow them in its site settings, then try again.");
  }
  const server = await pushServer(api);
  await navigator.serviceWorker.register("/sw.js", { scope: "/" });
  const registration = await navigator.serviceWorker.ready;
  const key = fromB64u(server.publicKey);
  let sub = await registration.pushManager.getSubscription();
  if (sub !== null && !sameKey(sub.options.applicationServerKey, key)) {
    await sub.unsubscribe(); // made for another server key: its pushes would be refused
    sub = null;
  }
  try {
    sub ??= await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key as Uint8Array<ArrayBuffer> });
  } catch (e) {
    throw new Error(`The browser's push service did not give a subscription: ${e instanceof Error ? e.message : String(e)}`);
  }
  await registerSubscription(api, sub.toJSON(), defaultPolicy);
}

/** Removes this device's registration and the browser's subscription. */
export async function turnOff(api: Api): Promise<void> {
  try {
    await api.request("DELETE", "/v1/push");
  } catch (e) {
    if (!(e instanceof ApiError && e.code === "push_not_registered")) throw e;
  }
  const registration = pushSupported() ? await navigator.serviceWorker.getRegistration("/") : undefined;
  await (await registration?.pushManager.getSubscription())?.unsubscribe();
}

/** This device's policy for one conversation; null: the default. `headers`: the group's
 * (its key, group-key.ts), as every request on a group carries them. */
export async function setConversationPolicy(api: Api, groupId: string, policy: string | null, headers: Record<string, string>): Promise<void> {
  await api.request("PUT", `/v1/groups/${groupId}/policy`, { json: { policy }, headers });
}

function sameKey(a: ArrayBuffer | null, b: Uint8Array): boolean {
  if (a === null || a.byteLength !== b.length) return false;
  const x = new Uint8Array(a);
  return x.every((v, i) => v === b[i]);
}
