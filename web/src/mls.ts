// The page's MLS, done by ts-mls (patched to read external_senders as RFC 9420 defines it,
// patches/rfc-external-senders.mjs). Cipher suite 1 only; all keys stay in this page's memory.
import {
  acceptAll,
  createApplicationMessage,
  createCommit,
  createProposal,
  createGroup,
  decodeMlsMessage,
  defaultCapabilities,
  emptyPskIndex,
  encodeMlsMessage,
  generateKeyPackageWithKey,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
  joinGroup,
  mlsExporter,
  processMessage,
  type AuthenticationService,
  type CiphersuiteImpl,
  type ClientState,
  type KeyPackage,
  type MLSMessage,
  type PrivateKeyPackage,
} from "ts-mls";
import { defaultClientConfig, type ClientConfig } from "ts-mls/clientConfig.js";
import { createGroupInfo } from "ts-mls/createCommit.js";
import { signWithLabel, verifyWithLabel } from "ts-mls/crypto/signature.js";
import { makeKeyPackageRef } from "ts-mls/keyPackage.js";
import type { LeafNode } from "ts-mls/leafNode.js";
import { decryptSenderData } from "ts-mls/privateMessage.js";
import { encodeRatchetTree } from "ts-mls/ratchetTree.js";

import { concat, fromUtf8, hex, opaque, Reader, utf8, varint } from "./bytes.js";

export const CIPHER_SUITE = 1;
const LAST_RESORT = 10; // RFC 9420 section 17.3 KeyPackage extension type
const KEY_PACKAGE_DAYS = 30; // the directory takes at most 90
// A group conversation's name: a GroupContext extension of the private-use range (RFC 9420
// section 17.3), UTF-8. Every leaf of this page lists it, as members require of a GroupContext
// extension (section 12.1.7); roost.client lists it too. Clients that do not list it cannot be
// added to a named group.
const GROUP_NAME = 0xf0a1;

let suitePromise: Promise<CiphersuiteImpl> | undefined;
export function suite(): Promise<CiphersuiteImpl> {
  suitePromise ??= getCiphersuiteImpl(getCiphersuiteFromName("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"));
  return suitePromise;
}

// ts-mls's default authentication service accepts every credential; the page sets its own
// (credentials.ts) once it knows its homeserver, and every group operation runs under it.
let config: ClientConfig = defaultClientConfig;
export function useAuthService(authService: AuthenticationService): void {
  config = { ...defaultClientConfig, authService };
}
/** The state with the page's checks (a saved state is read back with ts-mls's defaults). */
const checked = (state: ClientState): ClientState => (state.clientConfig === config ? state : { ...state, clientConfig: config });

export interface SigningKey {
  signKey: Uint8Array;
  publicKey: Uint8Array;
}

/** This device's MLS identity: its signature key and the x509 chain the AS issued for it. */
export interface Identity extends SigningKey {
  certificates: Uint8Array[];
}

export interface HeldKeyPackage {
  publicPackage: KeyPackage;
  privatePackage: PrivateKeyPackage;
  ref: string;
  lastResort: boolean;
}

export async function newSigningKey(): Promise<SigningKey> {
  return (await suite()).signature.keygen();
}

export async function sign(key: SigningKey, label: string, content: Uint8Array): Promise<Uint8Array> {
  return signWithLabel(key.signKey, label, content, (await suite()).signature);
}

// MLSMessage is a union; spreading one of its members without `version` loses the link.
type Content = MLSMessage extends infer M ? (M extends MLSMessage ? Omit<M, "version"> : never) : never;
const wrap = (m: Content): Uint8Array => encodeMlsMessage({ version: "mls10", ...m } as MLSMessage);

async function newKeyPackage(id: Identity, lastResort: boolean): Promise<HeldKeyPackage> {
  const cs = await suite();
  const now = BigInt(Math.floor(Date.now() / 1000));
  const lifetime = { notBefore: now - 60n, notAfter: now + BigInt(KEY_PACKAGE_DAYS * 86400) };
  const capabilities = defaultCapabilities();
  // Listed in every leaf: members refuse a KeyPackage extension its leaf does not list.
  capabilities.extensions = [...capabilities.extensions, LAST_RESORT, GROUP_NAME];
  const extensions = lastResort ? [{ extensionType: LAST_RESORT, extensionData: new Uint8Array() }] : [];
  const credential = { credentialType: "x509" as const, certificates: id.certificates };
  const kp = await generateKeyPackageWithKey(credential, capabilities, lifetime, extensions, id, cs);
  const ref = hex(await makeKeyPackageRef(kp.publicPackage, cs.hash));
  return { ...kp, ref, lastResort };
}

/** `count` ordinary KeyPackages and one last-resort one, and the batch body that publishes
 * them (`MLSMessage key_packages<V>`). */
export async function keyPackageBatch(id: Identity, count: number): Promise<{ held: HeldKeyPackage[]; body: Uint8Array }> {
  const held: HeldKeyPackage[] = [];
  for (let i = 0; i < count; i++) held.push(await newKeyPackage(id, false));
  held.push(await newKeyPackage(id, true));
  const encoded = concat(...held.map((k) => wrap({ wireformat: "mls_key_package", keyPackage: k.publicPackage })));
  return { held, body: concat(varint(encoded.length), encoded) };
}

/** The KeyPackages of a claim answer (`MLSMessage key_packages<V>`). */
export function decodeKeyPackageBatch(body: Uint8Array): KeyPackage[] {
  const vector = new Reader(body).opaque();
  const out: KeyPackage[] = [];
  let at = 0;
  while (at < vector.length) {
    const decoded = decodeMlsMessage(vector, at);
    if (decoded === undefined) throw new Error("the server sent a KeyPackage that does not decode");
    const [m, next] = decoded;
    if (m.wireformat !== "mls_key_package") throw new Error("the server sent something other than a KeyPackage");
    out.push(m.keyPackage);
    at = next;
  }
  return out;
}

async function groupInfo(state: ClientState): Promise<Uint8Array> {
  const cs = await suite();
  const gi = await createGroupInfo(state.groupContext, state.confirmationTag, state, [], cs);
  return wrap({ wireformat: "mls_group_info", groupInfo: gi });
}

/** A new group of one (us) listing the homeserver as external sender, and its
 * `RoostGroupState` body for `POST /v1/groups`. */
export async function createRoostGroup(
  id: Identity,
  groupId: Uint8Array,
  externalSender: Uint8Array,
  name?: string,
): Promise<{ state: ClientState; body: Uint8Array }> {
  const cs = await suite();
  const kp = await newKeyPackage(id, false);
  // The extension's data is the RFC's vector `ExternalSender external_senders<V>`.
  const ext = { extensionType: "external_senders" as const, extensionData: opaque(externalSender) };
  const named = name === undefined ? [] : [{ extensionType: GROUP_NAME, extensionData: utf8(name) }];
  const state = await createGroup(groupId, kp.publicPackage, kp.privatePackage, [ext, ...named], cs, config);
  return { state, body: concat(await groupInfo(state), encodeRatchetTree(state.ratchetTree)) };
}

/** A commit adding `keyPackages`: the new state (to keep once the DS accepted it), the
 * `RoostCommitBundle` body and the Welcome (which carries the ratchet tree). */
export async function commitAdds(
  state: ClientState,
  keyPackages: KeyPackage[],
): Promise<{ state: ClientState; bundle: Uint8Array; welcome: Uint8Array }> {
  const cs = await suite();
  const r = await createCommit(
    { state: checked(state), cipherSuite: cs, pskIndex: emptyPskIndex },
    {
      wireAsPublicMessage: true, // the DS reads handshakes
      ratchetTreeExtension: true,
      extraProposals: keyPackages.map((keyPackage) => ({ proposalType: "add" as const, add: { keyPackage } })),
    },
  );
  if (r.welcome === undefined) throw new Error("the commit made no Welcome");
  const welcome = wrap({ wireformat: "mls_welcome", welcome: r.welcome });
  const bundle = concat(encodeMlsMessage(r.commit), await groupInfo(r.newState), Uint8Array.of(1), welcome);
  return { state: r.newState, bundle, welcome };
}

/** Join from a Welcome addressed to one of `held`; returns the state and the package used. */
export async function joinFromWelcome(
  welcomeBytes: Uint8Array,
  held: HeldKeyPackage[],
): Promise<{ state: ClientState; used: HeldKeyPackage }> {
  const decoded = decodeMlsMessage(welcomeBytes, 0);
  if (decoded === undefined || decoded[0].wireformat !== "mls_welcome") throw new Error("the invitation is not an MLS Welcome");
  const welcome = decoded[0].welcome;
  const refs = new Set(welcome.secrets.map((s) => hex(s.newMember)));
  const used = held.find((k) => refs.has(k.ref));
  if (used === undefined) throw new Error("the invitation is for another device");
  const state = await joinGroup(welcome, used.publicPackage, used.privatePackage, emptyPskIndex, await suite(), undefined, undefined, config);
  return { state, used };
}

export type Incoming =
  | { kind: "application"; state: ClientState; text: Uint8Array }
  | { kind: "handshake"; state: ClientState };

/** Process one MLSMessage from the group queue (a commit, a proposal or an application message). */
export async function processIncoming(state: ClientState, body: Uint8Array): Promise<Incoming> {
  const decoded = decodeMlsMessage(body, 0);
  if (decoded === undefined) throw new Error("a group message does not decode");
  const m = decoded[0];
  if (m.wireformat !== "mls_private_message" && m.wireformat !== "mls_public_message") {
    throw new Error(`unexpected ${m.wireformat} in a group queue`);
  }
  const r = await processMessage(m, checked(state), emptyPskIndex, acceptAll, await suite());
  if (r.kind === "applicationMessage") return { kind: "application", state: r.newState, text: r.message };
  return { kind: "handshake", state: r.newState };
}

export async function encrypt(state: ClientState, plaintext: Uint8Array): Promise<{ state: ClientState; message: Uint8Array }> {
  const r = await createApplicationMessage(checked(state), plaintext, await suite());
  return { state: r.newState, message: wrap({ wireformat: "mls_private_message", privateMessage: r.privateMessage }) };
}

/** RFC 9420 section 8.5 MLS-Exporter(label, context, length) of the state's epoch. */
export async function exportSecret(state: ClientState, label: string, context: Uint8Array, length: number): Promise<Uint8Array> {
  return mlsExporter(state.keySchedule.exporterSecret, label, context, length, await suite());
}

export const epochOf = (state: ClientState): bigint => state.groupContext.epoch;

/** The group's name (a group conversation), or undefined (a conversation of two). */
export function groupName(state: ClientState): string | undefined {
  const ext = state.groupContext.extensions.find((e) => e.extensionType === GROUP_NAME);
  return ext === undefined ? undefined : fromUtf8(ext.extensionData);
}

const CLIENT_URI = utf8("roost:client:");

/** The user id of a credential: from its leaf certificate's SAN URI `roost:client:<user>/<uuid>`
 * (docs/api.md, "X.509 credential profile"). Not a verification of the certificate. */
export function userOfCredential(certificates: Uint8Array[]): string | undefined {
  const der = certificates[0];
  if (der === undefined) return undefined;
  // A URI GeneralName is [6] IA5String: tag 0x86, a short length, the text.
  for (let i = 0; i + 2 + CLIENT_URI.length <= der.length; i++) {
    if (der[i] !== 0x86 || der[i + 1] >= 0x80) continue;
    const text = der.subarray(i + 2, i + 2 + der[i + 1]);
    if (text.length > CLIENT_URI.length && CLIENT_URI.every((b, k) => text[k] === b)) {
      const clientId = new TextDecoder().decode(text.subarray(CLIENT_URI.length));
      return clientId.split("/")[0];
    }
  }
  return undefined;
}

export interface Member {
  leaf: number;
  userId: string;
  me: boolean;
}

/** The group's members, one entry per leaf (a user with two devices is listed twice). */
export function members(state: ClientState): Member[] {
  const out: Member[] = [];
  state.ratchetTree.forEach((node, i) => {
    if (node === undefined || node.nodeType !== "leaf") return;
    const c = node.leaf.credential;
    const userId = c.credentialType === "x509" ? userOfCredential(c.certificates) : undefined;
    out.push({ leaf: i / 2, userId: userId ?? "unknown", me: i / 2 === state.privatePath.leafIndex });
  });
  return out;
}

/** The leaf that sent a group message, read before the message is processed: a
 * PrivateMessage's sender data is encrypted under the epoch's sender-data secret. */
export async function senderLeaf(state: ClientState, body: Uint8Array): Promise<LeafNode | undefined> {
  const m = decodeMlsMessage(body, 0)?.[0];
  let epoch: bigint;
  let leafIndex: number | undefined;
  if (m?.wireformat === "mls_public_message") {
    const sender = m.publicMessage.content.sender;
    epoch = m.publicMessage.content.epoch;
    leafIndex = sender.senderType === "member" ? sender.leafIndex : undefined;
  } else if (m?.wireformat === "mls_private_message") {
    epoch = m.privateMessage.epoch;
  } else {
    return undefined;
  }
  const current = epoch === state.groupContext.epoch;
  const old = current ? undefined : state.historicalReceiverData.get(epoch);
  const tree = current ? state.ratchetTree : old?.ratchetTree;
  if (m.wireformat === "mls_private_message") {
    const secret = current ? state.keySchedule.senderDataSecret : old?.senderDataSecret;
    if (secret === undefined) return undefined;
    leafIndex = (await decryptSenderData(m.privateMessage, secret, await suite()))?.leafIndex;
  }
  const node = leafIndex === undefined || tree === undefined ? undefined : tree[leafIndex * 2];
  return node?.nodeType === "leaf" ? node.leaf : undefined;
}

/** The user of a leaf, from its credential. */
export const userOfLeaf = (leaf: LeafNode | undefined): string | undefined =>
  leaf?.credential.credentialType === "x509" ? userOfCredential(leaf.credential.certificates) : undefined;

/** Proposals received but not committed yet (e.g. the homeserver's Removes). */
export const pendingProposals = (state: ClientState): number => Object.keys(state.unappliedProposals).length;

export const removedFromGroup = (state: ClientState): boolean => state.groupActiveState.kind === "removedFromGroup";

/** A commit of the pending proposals and of Removes of `leaves`: the new state and the
 * `RoostCommitBundle` body (no Welcome). */
export async function commitRemoves(state: ClientState, leaves: number[]): Promise<{ state: ClientState; bundle: Uint8Array }> {
  const cs = await suite();
  const r = await createCommit(
    { state: checked(state), cipherSuite: cs, pskIndex: emptyPskIndex },
    {
      wireAsPublicMessage: true,
      ratchetTreeExtension: true,
      extraProposals: leaves.map((removed) => ({ proposalType: "remove" as const, remove: { removed } })),
    },
  );
  const bundle = concat(encodeMlsMessage(r.commit), await groupInfo(r.newState), Uint8Array.of(0));
  return { state: r.newState, bundle };
}

/** A Remove proposal of our own leaf (leaving: any member then commits it). */
export async function leaveProposal(state: ClientState): Promise<Uint8Array> {
  const removed = state.privatePath.leafIndex;
  const r = await createProposal(checked(state), true, { proposalType: "remove", remove: { removed } }, await suite());
  return encodeMlsMessage(r.message);
}

/** The group's `external_senders` entries, each encoded as an ExternalSender (the RFC's
 * vector, as the homeserver's entry was put there when the group was made). */
export function externalSenders(state: ClientState): Uint8Array[] {
  const ext = state.groupContext.extensions.find((e) => e.extensionType === "external_senders");
  if (ext === undefined) return [];
  const out: Uint8Array[] = [];
  try {
    const entries = new Reader(ext.extensionData).opaque();
    const list = new Reader(entries);
    while (!list.done) {
      const start = list.offset;
      list.opaque(); // signature_key
      list.skip(2); // credential_type: basic (identity) and x509 (certificates) are one vector each
      list.opaque();
      out.push(entries.subarray(start, list.offset));
    }
  } catch {
    return [];
  }
  return out;
}

/** A homeserver notice's signature: SignWithLabel(external-sender key, "roost notice", notice)
 * (docs/api.md, "What member queues receive"). */
export async function verifyNotice(entry: Uint8Array, notice: Uint8Array, signature: Uint8Array): Promise<boolean> {
  const key = new Reader(entry).opaque();
  return verifyWithLabel(key, "roost notice", notice, signature, (await suite()).signature);
}
