// More devices of one user (docs/api.md, "Add a client approved by an existing client" and
// "Own devices"): this browser asks to join an account and waits; a signed-in device lists
// the requests, approves or denies one, and brings an approved device into its conversations.
import type { ClientState } from "ts-mls";

import { Api, ApiError, seg } from "./api.js";
import { fromB64u, hex } from "./bytes.js";
import type { Messenger } from "./messenger.js";
import { CIPHER_SUITE, decodeKeyPackageBatch, newSigningKey, type SigningKey } from "./mls.js";
import { Session, clientKey, homeDomain, type ClientInfo } from "./session.js";

const POLL_MS = 1000;
/** How long an approving device waits for the new one to publish its first KeyPackages. */
const NEW_DEVICE_WAIT_MS = 120_000;
const DEVICE_NAME = "Web browser";

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The short form of a signature key that people compare on two screens (as `roost` prints it:
 * the first 16 bytes of its SHA-256, in groups of four hex digits). */
export async function fingerprint(signatureKey: Uint8Array): Promise<string> {
  const digest = hex(new Uint8Array(await crypto.subtle.digest("SHA-256", signatureKey as Uint8Array<ArrayBuffer>)));
  return (digest.slice(0, 32).match(/.{4}/g) ?? []).join(" ");
}

// ---- The new device ----

export interface JoinRequest {
  requestId: string;
  domain: string;
  userId: string;
  key: SigningKey;
  fingerprint: string;
}

/** Ask to become a new device of `user` (a name or user id): a fresh key, a pending request. */
export async function requestToJoin(user: string): Promise<JoinRequest> {
  const api = new Api();
  const domain = await homeDomain(api);
  const trimmed = user.trim().toLowerCase();
  if (trimmed === "") throw new Error("Enter your user name first.");
  const userId = trimmed.includes("@") ? trimmed : `${trimmed}@${domain}`;
  const key = await newSigningKey();
  const d = await api.json<{ request_id: string }>("POST", "/v1/client-requests", {
    json: { user_id: userId, client: await clientKey(key, domain, userId), device_name: DEVICE_NAME },
    auth: false,
  });
  return { requestId: d.request_id, domain, userId, key, fingerprint: await fingerprint(key.publicKey) };
}

/** Poll until another device of the user decides: the signed-in session once approved,
 * undefined if `cancelled()` turned true first; an error when denied or expired. */
export async function waitForApproval(r: JoinRequest, cancelled: () => boolean): Promise<Session | undefined> {
  const api = new Api();
  for (;;) {
    if (cancelled()) return undefined;
    let d: { state: string; client?: ClientInfo | null } | undefined;
    try {
      d = await api.json("GET", `/v1/client-requests/${seg(r.requestId)}`, { auth: false });
    } catch (e) {
      if (e instanceof ApiError && e.code === "request_not_found") throw new Error("The request expired before it was approved. Ask again.");
      // Unreachable or busy server: keep waiting.
      if (!(e instanceof ApiError && (e.status === 0 || e.status === 429 || e.status >= 500))) throw e;
    }
    if (cancelled()) return undefined;
    if (d?.state === "approved" && d.client) return Session.start(r.domain, r.userId, d.client, r.key);
    if (d?.state === "rejected") throw new Error("Your other device denied the request: this browser was not added to the account.");
    if (d !== undefined && d.state !== "pending") throw new Error("The request cannot be used any more. Ask again.");
    await sleep(POLL_MS);
  }
}

// ---- An existing device ----

export interface DeviceRequest {
  requestId: string;
  deviceName: string | null;
  fingerprint: string;
}

/** The user's pending requests from new devices, oldest first. */
export async function pendingRequests(api: Api): Promise<DeviceRequest[]> {
  const d = await api.json<{ requests: Array<{ request_id: string; device_name: string | null; signature_key: string }> }>("GET", "/v1/client-requests");
  return Promise.all(
    d.requests.map(async (q) => ({ requestId: q.request_id, deviceName: q.device_name, fingerprint: await fingerprint(fromB64u(q.signature_key)) })),
  );
}

export interface NewClient {
  uuid: string;
  signatureKey: Uint8Array;
}

export async function approve(api: Api, requestId: string): Promise<NewClient> {
  const c = await api.json<{ client_uuid: string; signature_key: string }>("POST", `/v1/client-requests/${seg(requestId)}/approve`);
  return { uuid: c.client_uuid, signatureKey: fromB64u(c.signature_key) };
}

export async function deny(api: Api, requestId: string): Promise<void> {
  await api.request("POST", `/v1/client-requests/${seg(requestId)}/reject`);
}

const holdsClient = (state: ClientState, key: Uint8Array): boolean =>
  state.ratchetTree.some((n) => n?.nodeType === "leaf" && n.leaf.signaturePublicKey.length === key.length && n.leaf.signaturePublicKey.every((b, i) => b === key[i]));

/** Bring our user's approved device into every conversation this device is in: one of its
 * KeyPackages each, one commit per conversation (any member may add its own user's clients).
 * The new device publishes KeyPackages once it has signed in, so the first claim waits for that.
 * Returns how many conversations it was added to and how many failed. */
export async function addToConversations(m: Messenger, client: NewClient): Promise<{ added: number; failed: number }> {
  const api = m.session.api;
  const claimPath = `/v1/users/${seg(m.session.userId)}/clients/${seg(client.uuid)}/keypackages/claim?cipher_suite=${CIPHER_SUITE}`;
  const claim = async () => decodeKeyPackageBatch(await api.bytes("POST", claimPath));
  let added = 0;
  let failed = 0;
  let waited = false;
  for (const c of [...m.conversations.values()]) {
    if ((c.status !== "active" && c.status !== "waiting") || holdsClient(c.state, client.signatureKey)) continue;
    try {
      let kps = await claim();
      for (const until = Date.now() + NEW_DEVICE_WAIT_MS; kps.length === 0 && !waited && Date.now() < until; kps = await claim()) await sleep(POLL_MS);
      waited = true; // a device that never published is not waited for again
      if (kps.length === 0) throw new Error("the new device has no KeyPackages yet");
      await m.addClients(c.id, kps);
      added += 1;
    } catch (e) {
      console.warn("could not add the new device to a conversation", e);
      failed += 1;
    }
  }
  return { added, failed };
}

export interface OwnDevice {
  uuid: string;
  fingerprint: string;
  /** When the server made it (unix seconds). */
  createdAt: number;
  current: boolean;
}

/** Every device of this user, as the server lists them, this one marked. */
export async function ownDevices(session: Session): Promise<OwnDevice[]> {
  const me = await session.api.json<{ clients: Array<{ client_id: string; client_uuid: string; signature_key: string; created_at: number }> }>("GET", "/v1/me");
  return Promise.all(
    me.clients.map(async (c) => ({
      uuid: c.client_uuid,
      fingerprint: await fingerprint(fromB64u(c.signature_key)),
      createdAt: c.created_at,
      current: c.client_id === session.clientId,
    })),
  );
}

/** Remove a device of this user: the server drops its keys and queues and has it removed from
 * every group (docs/api.md, `DELETE /v1/clients/{client_uuid}`). */
export async function removeDevice(api: Api, uuid: string): Promise<void> {
  await api.request("DELETE", `/v1/clients/${seg(uuid)}`);
}

/** Log out: remove this device from the account on the server. True when it is the user's only
 * device, which the server keeps (`409 last_client`): the browser just forgets it then. */
export async function removeThisDevice(session: Session): Promise<boolean> {
  try {
    await removeDevice(session.api, session.clientId.slice(session.clientId.lastIndexOf("/") + 1));
    return false;
  } catch (e) {
    if (e instanceof ApiError && e.code === "last_client") return true;
    throw e;
  }
}
