// A group's key (docs/api.md, "Group keys"): 32 random bytes the creator picks, which the
// Delivery Service seals the group's roster and state under and which every request on the
// group presents; server notices for the group reach its members sealed under it too. Joiners get it wrapped under an MLS exporter secret of the epoch they join.
// The key lives only in the conversation's encrypted record and in request headers; never logged.
import type { ClientState } from "ts-mls";

import { b64u, concat, fromB64u, utf8 } from "./bytes.js";
import { exportSecret } from "./mls.js";

export const GROUP_KEY_HEADER = "Roost-Group-Key";
export const GROUP_KEY_WRAP_HEADER = "Roost-Group-Key-Wrap";
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const WRAP_BYTES = NONCE_BYTES + KEY_BYTES + 16; // nonce, key, AES-GCM tag
const WRAP_LABEL = "roost group key";
const SEALED_NOTICE_LABEL = utf8("roost sealed notice v1");

/** A Welcome whose group key does not unwrap: the invitation is refused, as a bad Welcome is. */
export class GroupKeyRefused extends Error {}

export const newGroupKey = (): Uint8Array => crypto.getRandomValues(new Uint8Array(KEY_BYTES));

/** The headers every request on a group carries: its key, or none for a group made without
 * one (a legacy group, which the server keeps unsealed). */
export const groupKeyHeaders = (key: Uint8Array | undefined): Record<string, string> =>
  key === undefined ? {} : { [GROUP_KEY_HEADER]: b64u(key) };

/** MLS-Exporter("roost group key", group_id, 32) of `state`'s epoch, as an AES-256-GCM key. */
async function wrapKey(state: ClientState, usage: KeyUsage): Promise<CryptoKey> {
  const secret = await exportSecret(state, WRAP_LABEL, state.groupContext.groupId, KEY_BYTES);
  return crypto.subtle.importKey("raw", secret as Uint8Array<ArrayBuffer>, "AES-GCM", false, [usage]);
}

const gcm = (iv: Uint8Array, state: ClientState): AesGcmParams => ({
  name: "AES-GCM",
  iv: iv as Uint8Array<ArrayBuffer>,
  additionalData: state.groupContext.groupId as Uint8Array<ArrayBuffer>,
});

/** The `Roost-Group-Key-Wrap` of a commit with a Welcome: nonce || AES-256-GCM(key), under
 * the exporter of `state`, the epoch the commit creates (the joiners' first). */
export async function wrapGroupKey(state: ClientState, key: Uint8Array): Promise<string> {
  const nonce = crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
  const sealed = await crypto.subtle.encrypt(gcm(nonce, state), await wrapKey(state, "encrypt"), key as Uint8Array<ArrayBuffer>);
  return b64u(concat(nonce, new Uint8Array(sealed)));
}

/** The group key of a Welcome event's `group_key_wrap`, opened with the exporter of the state
 * joined from that Welcome. */
export async function unwrapGroupKey(state: ClientState, wrap: string): Promise<Uint8Array> {
  let bytes: Uint8Array;
  try {
    bytes = fromB64u(wrap);
  } catch {
    bytes = new Uint8Array();
  }
  if (bytes.length !== WRAP_BYTES) throw new GroupKeyRefused("its group key is malformed");
  try {
    const key = await crypto.subtle.decrypt(gcm(bytes.subarray(0, NONCE_BYTES), state), await wrapKey(state, "decrypt"), bytes.subarray(NONCE_BYTES) as Uint8Array<ArrayBuffer>);
    return new Uint8Array(key);
  } catch {
    throw new GroupKeyRefused("its group key does not open with the invitation's secrets");
  }
}

/** The encoded SignedNotice of a server notice the DS sealed under the group's key (queue item
 * type 3, docs/api.md "What member queues receive"): nonce(12) || AES-256-GCM under
 * HKDF-SHA256(group key, no salt, info = the label), aad = the label || group id. Throws, with
 * the reason, when there is no key or the body does not open with it. */
export async function openSealedNotice(key: Uint8Array | undefined, groupId: Uint8Array, body: Uint8Array): Promise<Uint8Array> {
  if (key === undefined) throw new Error("it is sealed and this conversation has no group key");
  const ikm = await crypto.subtle.importKey("raw", key as Uint8Array<ArrayBuffer>, "HKDF", false, ["deriveKey"]);
  const hkdf: HkdfParams = { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(), info: SEALED_NOTICE_LABEL as Uint8Array<ArrayBuffer> };
  const aes = await crypto.subtle.deriveKey(hkdf, ikm, { name: "AES-GCM", length: 256 }, false, ["decrypt"]);
  try {
    const iv = body.subarray(0, NONCE_BYTES) as Uint8Array<ArrayBuffer>;
    const additionalData = concat(SEALED_NOTICE_LABEL, groupId) as Uint8Array<ArrayBuffer>;
    return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv, additionalData }, aes, body.subarray(NONCE_BYTES) as Uint8Array<ArrayBuffer>));
  } catch {
    throw new Error("it is sealed under another key than the group's");
  }
}
