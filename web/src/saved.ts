// The device record (what store.ts keeps encrypted): JSON in which byte strings are
// {"$b": base64url}. MLS group states are ts-mls's own encoding of them, KeyPackages their
// MLSMessage encoding, so a record is read back exactly as it was written.
import { decodeGroupState, decodeMlsMessage, encodeGroupState, encodeMlsMessage, type ClientState, type KeyPackage, type PrivateKeyPackage } from "ts-mls";
import { defaultClientConfig } from "ts-mls/clientConfig.js";

import { b64u, fromB64u, fromUtf8, utf8 } from "./bytes.js";
import type { AssetReference } from "./files.js";
import type { HeldKeyPackage, Identity } from "./mls.js";

const VERSION = 1;

export interface SavedMessage {
  from: string;
  text: string;
  mine: boolean;
  /** A line from a verified homeserver notice (a member renamed, an account deleted). */
  notice?: boolean;
  /** A file message: the reference (with its key) to download and decrypt it. */
  file?: AssetReference;
}

export interface SavedConversation {
  id: string;
  /** The other user of a conversation of two, or a group conversation's name. */
  peer: string;
  group?: boolean;
  /** Users with a role other than member, as the DS last said (group conversations). */
  roles?: Record<string, string>;
  status: "waiting" | "active" | "rejected" | "deleted" | "left" | "removed";
  messages: SavedMessage[];
  unread: number;
  state: ClientState;
  connectionId?: string;
  /** This device's notification policy for the conversation; absent: the default. */
  notify?: string;
  /** The group-message queue this device registered for this conversation alone (b64u id and
   * key); absent in a conversation an older page put on the device's one shared queue. */
  queue?: SavedQueue;
  /** The group's key (group-key.ts), presented with every request on the group; absent in a
   * legacy group (made without one, or joined from a Welcome that carried none). */
  groupKey?: Uint8Array;
}

export interface SavedQueue {
  id: string;
  key: string;
}

export interface SavedInvitation {
  connectionId: string;
  from: string;
  welcome: Uint8Array;
  /** The request's group key wrap (group-key.ts), opened on accepting; absent: a legacy group. */
  groupKeyWrap?: string;
}

/** Everything a reloaded page needs to be the same device again (no token: it signs for a new one). */
export interface SavedDevice {
  domain: string;
  userId: string;
  clientId: string;
  identity: Identity;
  keyPackages: HeldKeyPackage[];
  /** The one group queue pages before per-conversation queues made for all conversations,
   * still read for the conversations registered on it; "" in a newer device. */
  queueId: string;
  /** That queue's key (b64u), which authorises reading it; "" in a record an older page
   * wrote, whose queue then claims one (docs/api.md, "Queues"). */
  queueKey: string;
  /** Positions processed so far: group queues (b64u id) and the direct queue. */
  positions: Array<[string, number]>;
  direct: number | undefined;
  conversations: SavedConversation[];
  invitations: SavedInvitation[];
}

interface RecordV1 extends Omit<SavedDevice, "keyPackages" | "conversations" | "direct" | "queueKey"> {
  v: number;
  queueKey?: string;
  direct: number | null;
  keyPackages: Array<{ publicPackage: Uint8Array; privatePackage: PrivateKeyPackage; ref: string; lastResort: boolean }>;
  conversations: Array<Omit<SavedConversation, "state"> & { state: Uint8Array }>;
}

const replacer = (_k: string, v: unknown): unknown => (v instanceof Uint8Array ? { $b: b64u(v) } : v);
const reviver = (_k: string, v: unknown): unknown =>
  v !== null && typeof v === "object" && typeof (v as { $b?: unknown }).$b === "string" ? fromB64u((v as { $b: string }).$b) : v;

export function encodeDevice(d: SavedDevice): Uint8Array {
  const record: RecordV1 = {
    ...d,
    v: VERSION,
    direct: d.direct ?? null,
    keyPackages: d.keyPackages.map((k) => ({
      publicPackage: encodeMlsMessage({ version: "mls10", wireformat: "mls_key_package", keyPackage: k.publicPackage }),
      privatePackage: k.privatePackage,
      ref: k.ref,
      lastResort: k.lastResort,
    })),
    conversations: d.conversations.map((c) => ({ ...c, state: encodeGroupState(c.state) })),
  };
  return utf8(JSON.stringify(record, replacer));
}

export function decodeDevice(bytes: Uint8Array): SavedDevice {
  const r = JSON.parse(fromUtf8(bytes), reviver) as RecordV1;
  if (r.v !== VERSION) throw new Error("the saved device is from another version of this page");
  return {
    ...r,
    queueKey: r.queueKey ?? "",
    direct: r.direct ?? undefined,
    keyPackages: r.keyPackages.map((k) => ({ ...k, publicPackage: keyPackage(k.publicPackage) })),
    conversations: r.conversations.map((c) => ({ ...c, state: groupState(c.state) })),
  };
}

function keyPackage(bytes: Uint8Array): KeyPackage {
  const m = decodeMlsMessage(bytes, 0)?.[0];
  if (m?.wireformat !== "mls_key_package") throw new Error("a saved KeyPackage does not decode");
  return m.keyPackage;
}

function groupState(bytes: Uint8Array): ClientState {
  const decoded = decodeGroupState(bytes, 0);
  if (decoded === undefined) throw new Error("a saved group state does not decode");
  return { ...decoded[0], clientConfig: defaultClientConfig };
}
