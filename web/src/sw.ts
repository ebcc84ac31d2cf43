// The service worker (served as /sw.js, scope "/"): it shows a notification for a Web Push
// from the homeserver and brings the page up when the notification is clicked. A push never
// carries content (docs/api.md, "Push notifications": the payload is {"type":"wake"}), so the
// notification only says that something arrived; the page fetches and decrypts it.

// Only what this worker uses of the ServiceWorkerGlobalScope (the page's tsconfig has DOM
// types, not WebWorker ones).
interface ExtendableEvent extends Event {
  waitUntil(p: Promise<unknown>): void;
}
interface PushEvent extends ExtendableEvent {
  readonly data: { json(): unknown } | null;
}
interface NotificationEvent extends ExtendableEvent {
  readonly notification: Notification;
}
interface WindowClient {
  readonly url: string;
  readonly focused: boolean;
  focus(): Promise<WindowClient>;
}
interface WorkerScope {
  readonly registration: ServiceWorkerRegistration;
  readonly clients: {
    matchAll(options: { type: "window"; includeUncontrolled: boolean }): Promise<WindowClient[]>;
    openWindow(url: string): Promise<WindowClient | null>;
    claim(): Promise<void>;
  };
  skipWaiting(): Promise<void>;
  addEventListener(type: "install" | "activate", listener: (e: ExtendableEvent) => void): void;
  addEventListener(type: "push", listener: (e: PushEvent) => void): void;
  addEventListener(type: "notificationclick", listener: (e: NotificationEvent) => void): void;
}

const sw = self as unknown as WorkerScope;
const TITLE = "Roost";
const BODY = "New messages or invitations. Open Roost to read them.";
// One notification at a time: a later push replaces the earlier one instead of piling up.
const TAG = "roost-wake";

sw.addEventListener("install", (e) => e.waitUntil(sw.skipWaiting()));
sw.addEventListener("activate", (e) => e.waitUntil(sw.clients.claim()));

sw.addEventListener("push", (e) => e.waitUntil(notify(e)));

async function notify(e: PushEvent): Promise<void> {
  let type: unknown;
  try {
    type = (e.data?.json() as { type?: unknown } | undefined)?.type;
  } catch {
    type = undefined; // not JSON: still a wake-up from our server's push service
  }
  if (type !== undefined && type !== "wake") return;
  // A page the user is looking at reads what came over its socket itself. (Chrome shows a
  // notification of its own for a push that shows none unless a page of the site has focus.)
  const windows = await sw.clients.matchAll({ type: "window", includeUncontrolled: true });
  if (windows.some((w) => w.focused)) return;
  await sw.registration.showNotification(TITLE, { body: BODY, tag: TAG });
}

sw.addEventListener("notificationclick", (e) => {
  e.notification.close();
  e.waitUntil(openPage());
});

/** Focus a tab of the page if there is one (only one tab may hold the device), else open one. */
async function openPage(): Promise<void> {
  const windows = await sw.clients.matchAll({ type: "window", includeUncontrolled: true });
  const page = windows.find((w) => new URL(w.url).pathname === "/");
  if (page !== undefined) await page.focus();
  else await sw.clients.openWindow("/");
}
