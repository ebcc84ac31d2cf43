// ts-mls interop driver for Roost tests.
//
// Protocol: one JSON object per line on stdin, one JSON reply per line on stdout.
//   request:  {"id": <any>, "op": "<name>", ...args}
//   reply:    {"id": <same>, "ok": true, "result": {...}}
//          or {"id": <same>, "ok": false, "error": "<message>", "kind": "<error class>"}
// All byte strings travel as lowercase hex. MLS objects are full MLSMessage encodings
// (RFC 9420 section 6) unless the field name says otherwise (ratchet_tree is the bare
// `optional<Node> ratchet_tree<V>` vector).
//
// One driver process hosts any number of clients, each addressed by a `client` name; a client
// holds its unused KeyPackages and its groups (keyed by hex group id). Handshake messages are
// always sent as PublicMessage (the Roost DS must be able to read them); application messages
// are PrivateMessage.
import { createInterface } from "node:readline";
import {
  createApplicationMessage,
  createCommit,
  createGroup,
  createProposal,
  decodeMlsMessage,
  defaultCapabilities,
  defaultExtensionTypes,
  defaultLifetime,
  emptyPskIndex,
  encodeMlsMessage,
  generateKeyPackage,
  generateKeyPackageWithKey,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
  ciphersuites,
  joinGroup,
  makePskIndex,
  joinGroupExternal,
  mlsExporter,
  processMessage,
  acceptAll,
} from "ts-mls";
import { createGroupInfo } from "ts-mls/createCommit.js";
import { encodeRatchetTree, decodeRatchetTree } from "ts-mls/ratchetTree.js";
import { makeKeyPackageRef } from "ts-mls/keyPackage.js";
import { encodeGroupContext } from "ts-mls/groupContext.js";

const hex = (b) => Buffer.from(b).toString("hex");
const unhex = (s) => new Uint8Array(Buffer.from(s, "hex"));
const eqBytes = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

// Cipher suite implementations are expensive to build; cache per suite id.
const suiteCache = new Map();
async function suite(id = 1) {
  if (!suiteCache.has(id)) {
    const name = Object.keys(ciphersuites).find((n) => ciphersuites[n] === id);
    if (name === undefined) throw new Error(`unsupported cipher suite ${id}`);
    suiteCache.set(id, await getCiphersuiteImpl(getCiphersuiteFromName(name)));
  }
  return suiteCache.get(id);
}

const clients = new Map(); // name -> {keyPackages: [{publicPackage, privatePackage, ref, suite}], groups: Map}

function client(name) {
  // psks: external PSKs by base64 id (the form ts-mls's makePskIndex looks up)
  if (!clients.has(name)) clients.set(name, { keyPackages: [], groups: new Map(), psks: {} });
  return clients.get(name);
}

function group(c, groupIdHex) {
  const g = c.groups.get(groupIdHex);
  if (g === undefined) throw new Error(`unknown group ${groupIdHex}`);
  return g;
}

function decodeMessage(bytesHex) {
  const decoded = decodeMlsMessage(unhex(bytesHex), 0);
  if (decoded === undefined) throw new Error("could not decode MLSMessage");
  return decoded[0];
}

// ts-mls names the RFC 9420 default extension types and uses numbers for the others.
function extensionTypeName(type) {
  const name = Object.keys(defaultExtensionTypes).find((n) => defaultExtensionTypes[n] === type);
  return name ?? type;
}

const wrap = (content) => hex(encodeMlsMessage({ version: "mls10", ...content }));

// RFC 9420 section 2.1.2 variable-length size prefix (sizes < 2^14 suffice here).
function opaqueV(bytes) {
  const n = bytes.length;
  const prefix = n < 64 ? [n] : [0x40 | (n >> 8), n & 0xff];
  return new Uint8Array([...prefix, ...bytes]);
}

// ts-mls 1.6.4 writes the external_pub extension as the bare HPKE public key, but RFC 9420
// section 12.4.3.2 defines it as `struct { HPKEPublicKey external_pub; }` with
// `opaque HPKEPublicKey<V>`, i.e. length-prefixed. With rfcExternalPub we build the RFC
// encoding ourselves (same key ts-mls would derive from the external secret).
async function externalPubExtension(state, cs, rfcExternalPub) {
  const keyPair = await cs.hpke.deriveKeyPair(state.keySchedule.externalSecret);
  const pub = await cs.hpke.exportPublicKey(keyPair.publicKey);
  return { extensionType: "external_pub", extensionData: rfcExternalPub ? opaqueV(pub) : pub };
}

// The same bug on the joining side: ts-mls imports the extension data as the key. This view
// of the suite strips the RFC length prefix from a prefixed X25519 key (33 bytes, 0x20 first)
// and passes every other key through unchanged.
function acceptRfcExternalPub(cs) {
  const hpke = new Proxy(cs.hpke, {
    get(target, prop) {
      const value = target[prop];
      if (prop === "importPublicKey") {
        return (key) => value.call(target, key.length === 33 && key[0] === 32 ? key.subarray(1) : key);
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { ...cs, hpke };
}

async function groupInfoAndTree(g, withTreeExtension = false, externalPub = false, rfcExternalPub = true) {
  const { state, cs } = g;
  let extensions = [];
  if (withTreeExtension) {
    extensions = [{ extensionType: "ratchet_tree", extensionData: encodeRatchetTree(state.ratchetTree) }];
  }
  // external_pub lets others join by external commit (RFC 9420 section 12.4.3.2).
  if (externalPub) extensions.push(await externalPubExtension(state, cs, rfcExternalPub));
  const gi = await createGroupInfo(state.groupContext, state.confirmationTag, state, extensions, cs);
  return {
    group_info: wrap({ wireformat: "mls_group_info", groupInfo: gi }),
    ratchet_tree: hex(encodeRatchetTree(state.ratchetTree)),
  };
}

// Commits are applied locally at once (ts-mls returns the new state); the reply carries what
// the DS and the other members need.
async function commit(g, options) {
  const result = await createCommit(
    { state: g.state, cipherSuite: g.cs, pskIndex: makePskIndex(g.state, g.client.psks) },
    { wireAsPublicMessage: true, ratchetTreeExtension: g.treeExtension, ...options },
  );
  g.state = result.newState;
  const extra = await groupInfoAndTree(g, g.treeExtension);
  return {
    commit: hex(encodeMlsMessage(result.commit)),
    welcome: result.welcome ? wrap({ wireformat: "mls_welcome", welcome: result.welcome }) : null,
    ...extra,
    epoch: Number(g.state.groupContext.epoch),
  };
}

function members(state) {
  const out = [];
  state.ratchetTree.forEach((node, i) => {
    if (i % 2 === 0 && node !== undefined && node.nodeType === "leaf") {
      const cred = node.leaf.credential;
      out.push({
        leaf_index: i / 2,
        identity: cred.credentialType === "basic" ? hex(cred.identity) : null,
        signature_key: hex(node.leaf.signaturePublicKey),
      });
    }
  });
  return out;
}

const ops = {
  async key_package({ client: name, identity, suite: suiteId = 1 }) {
    const cs = await suite(suiteId);
    const credential = { credentialType: "basic", identity: unhex(identity) };
    const kp = await generateKeyPackage(credential, defaultCapabilities(), defaultLifetime, [], cs);
    const ref = await makeKeyPackageRef(kp.publicPackage, cs.hash);
    client(name).keyPackages.push({ ...kp, ref, suite: suiteId });
    return { key_package: wrap({ wireformat: "mls_key_package", keyPackage: kp.publicPackage }), ref: hex(ref) };
  },

  // A KeyPackage for a client whose keys and credential were made elsewhere: an x509 chain
  // (hex DER, leaf first) issued by a Roost AS for the given Ed25519 signature key pair (the
  // e2e ts-mls-over-HTTP test registers the client with the homeserver first).
  async key_package_x509({
    client: name,
    certificates,
    signature_private,
    signature_public,
    lifetime_seconds = 30 * 86400, // Roost's KeyPackage directory takes at most 90 days
    last_resort = false, // the last_resort KeyPackage extension (type 10), also in capabilities
    suite: suiteId = 1,
  }) {
    const cs = await suite(suiteId);
    const now = BigInt(Math.floor(Date.now() / 1000));
    const lifetime = { notBefore: now - 60n, notAfter: now + BigInt(lifetime_seconds) };
    const credential = { credentialType: "x509", certificates: certificates.map(unhex) };
    const keys = { signKey: unhex(signature_private), publicKey: unhex(signature_public) };
    const capabilities = defaultCapabilities();
    const extensions = [];
    if (last_resort) {
      capabilities.extensions = [...capabilities.extensions, 10];
      extensions.push({ extensionType: 10, extensionData: new Uint8Array() });
    }
    const kp = await generateKeyPackageWithKey(credential, capabilities, lifetime, extensions, keys, cs);
    const ref = await makeKeyPackageRef(kp.publicPackage, cs.hash);
    client(name).keyPackages.push({ ...kp, ref, suite: suiteId });
    return { key_package: wrap({ wireformat: "mls_key_package", keyPackage: kp.publicPackage }), ref: hex(ref) };
  },

  async create_group({
    client: name,
    identity,
    group_id,
    suite: suiteId = 1,
    ratchet_tree_extension = false,
    extensions = [], // [[type number, data hex], ...] group context extensions
  }) {
    const cs = await suite(suiteId);
    const credential = { credentialType: "basic", identity: unhex(identity) };
    const kp = await generateKeyPackage(credential, defaultCapabilities(), defaultLifetime, [], cs);
    const exts = extensions.map(([type, data]) => ({ extensionType: extensionTypeName(type), extensionData: unhex(data) }));
    const state = await createGroup(unhex(group_id), kp.publicPackage, kp.privatePackage, exts, cs);
    const g = { state, cs, treeExtension: ratchet_tree_extension, client: client(name) };
    client(name).groups.set(group_id, g);
    return { epoch: 0, ...(await groupInfoAndTree(g, false)) };
  },

  async add_members({ client: name, group_id, key_packages }) {
    const g = group(client(name), group_id);
    const proposals = key_packages.map((kpHex) => {
      const m = decodeMessage(kpHex);
      if (m.wireformat !== "mls_key_package") throw new Error(`expected a KeyPackage, got ${m.wireformat}`);
      return { proposalType: "add", add: { keyPackage: m.keyPackage } };
    });
    return commit(g, { extraProposals: proposals });
  },

  async self_update({ client: name, group_id }) {
    // An empty commit always carries an UpdatePath (RFC 9420 section 12.4), i.e. a full
    // key refresh of the committer's leaf and direct path.
    return commit(group(client(name), group_id), {});
  },

  async remove({ client: name, group_id, leaf_index }) {
    const g = group(client(name), group_id);
    return commit(g, { extraProposals: [{ proposalType: "remove", remove: { removed: leaf_index } }] });
  },

  async commit_pending({ client: name, group_id }) {
    // Commits every proposal received so far (by reference).
    return commit(group(client(name), group_id), {});
  },

  async propose_remove({ client: name, group_id, leaf_index }) {
    const g = group(client(name), group_id);
    const proposal = { proposalType: "remove", remove: { removed: leaf_index } };
    const r = await createProposal(g.state, true, proposal, g.cs);
    g.state = r.newState;
    return { proposal: hex(encodeMlsMessage(r.message)) };
  },

  async propose_add({ client: name, group_id, key_package }) {
    const g = group(client(name), group_id);
    const m = decodeMessage(key_package);
    if (m.wireformat !== "mls_key_package") throw new Error(`expected a KeyPackage, got ${m.wireformat}`);
    const r = await createProposal(g.state, true, { proposalType: "add", add: { keyPackage: m.keyPackage } }, g.cs);
    g.state = r.newState;
    return { proposal: hex(encodeMlsMessage(r.message)) };
  },

  async add_external_psk({ client: name, psk_id, secret }) {
    client(name).psks[Buffer.from(psk_id, "hex").toString("base64")] = unhex(secret);
    return {};
  },

  async commit_psk({ client: name, group_id, psk_id = null, resumption_epoch = null }) {
    // One PreSharedKey proposal by value: an external PSK, or a resumption PSK of this group.
    const g = group(client(name), group_id);
    const nonce = new Uint8Array(g.cs.kdf.size);
    globalThis.crypto.getRandomValues(nonce);
    const preSharedKeyId =
      psk_id !== null
        ? { psktype: "external", pskId: unhex(psk_id), pskNonce: nonce }
        : {
            psktype: "resumption",
            usage: "application",
            pskGroupId: g.state.groupContext.groupId,
            pskEpoch: BigInt(resumption_epoch),
            pskNonce: nonce,
          };
    return commit(g, { extraProposals: [{ proposalType: "psk", psk: { preSharedKeyId } }] });
  },

  async join({ client: name, welcome, ratchet_tree = null }) {
    const c = client(name);
    const m = decodeMessage(welcome);
    if (m.wireformat !== "mls_welcome") throw new Error(`expected a Welcome, got ${m.wireformat}`);
    const refs = m.welcome.secrets.map((s) => s.newMember);
    const idx = c.keyPackages.findIndex((kp) => refs.some((r) => eqBytes(r, kp.ref)));
    if (idx < 0) throw new Error("Welcome is not addressed to any KeyPackage of this client");
    const kp = c.keyPackages[idx];
    const cs = await suite(kp.suite);
    let tree;
    if (ratchet_tree !== null) {
      const decoded = decodeRatchetTree(unhex(ratchet_tree), 0);
      if (decoded === undefined) throw new Error("could not decode ratchet tree");
      tree = decoded[0];
    }
    const psks = makePskIndex(undefined, c.psks);
    const state = await joinGroup(m.welcome, kp.publicPackage, kp.privatePackage, psks, cs, tree);
    c.keyPackages.splice(idx, 1); // a KeyPackage is single-use
    const groupId = hex(state.groupContext.groupId);
    c.groups.set(groupId, { state, cs, treeExtension: false, client: c });
    return { group_id: groupId, epoch: Number(state.groupContext.epoch), leaf_index: state.privatePath.leafIndex };
  },

  async process({ client: name, message, group_id = null }) {
    const c = client(name);
    const m = decodeMessage(message);
    let gid = group_id;
    if (m.wireformat === "mls_public_message") gid ??= hex(m.publicMessage.content.groupId);
    else if (m.wireformat === "mls_private_message") gid ??= hex(m.privateMessage.groupId);
    else throw new Error(`cannot process wire format ${m.wireformat}`);
    const g = group(c, gid);
    const contentType =
      m.wireformat === "mls_public_message" ? m.publicMessage.content.contentType : m.privateMessage.contentType;
    const r = await processMessage(m, g.state, makePskIndex(g.state, c.psks), acceptAll, g.cs);
    g.state = r.newState;
    const base = { group_id: gid, epoch: Number(g.state.groupContext.epoch) };
    if (r.kind === "applicationMessage") return { ...base, kind: "application", data: hex(r.message) };
    const removed = g.state.groupActiveState?.kind === "removedFromGroup";
    return { ...base, kind: contentType, removed };
  },

  async encrypt({ client: name, group_id, plaintext }) {
    const g = group(client(name), group_id);
    const r = await createApplicationMessage(g.state, unhex(plaintext), g.cs);
    g.state = r.newState;
    return { message: wrap({ wireformat: "mls_private_message", privateMessage: r.privateMessage }) };
  },

  async group_info({
    client: name,
    group_id,
    ratchet_tree_extension = false,
    external_pub = false,
    rfc_external_pub = true,
  }) {
    const g = group(client(name), group_id);
    return groupInfoAndTree(g, ratchet_tree_extension, external_pub, rfc_external_pub);
  },

  async join_external({
    client: name,
    identity,
    group_info,
    ratchet_tree = null,
    suite: suiteId = 1,
    rfc_external_pub = true,
  }) {
    const c = client(name);
    const m = decodeMessage(group_info);
    if (m.wireformat !== "mls_group_info") throw new Error(`expected a GroupInfo, got ${m.wireformat}`);
    const cs = await suite(suiteId);
    const credential = { credentialType: "basic", identity: unhex(identity) };
    const kp = await generateKeyPackage(credential, defaultCapabilities(), defaultLifetime, [], cs);
    let tree;
    if (ratchet_tree !== null) {
      const decoded = decodeRatchetTree(unhex(ratchet_tree), 0);
      if (decoded === undefined) throw new Error("could not decode ratchet tree");
      tree = decoded[0];
    }
    const joinCs = rfc_external_pub ? acceptRfcExternalPub(cs) : cs;
    const r = await joinGroupExternal(m.groupInfo, kp.publicPackage, kp.privatePackage, false, joinCs, tree);
    const groupId = hex(r.newState.groupContext.groupId);
    const g = { state: r.newState, cs, treeExtension: false, client: c };
    c.groups.set(groupId, g);
    const commitMsg = wrap({ wireformat: "mls_public_message", publicMessage: r.publicMessage });
    return { commit: commitMsg, welcome: null, ...(await groupInfoAndTree(g)), epoch: Number(r.newState.groupContext.epoch), group_id: groupId };
  },

  async state({ client: name, group_id, exporter_label = "", exporter_context = "", exporter_length = 32 }) {
    const g = group(client(name), group_id);
    const { state, cs } = g;
    const label = new TextDecoder().decode(unhex(exporter_label));
    const exporter = await mlsExporter(state.keySchedule.exporterSecret, label, unhex(exporter_context), exporter_length, cs);
    return {
      group_id,
      epoch: Number(state.groupContext.epoch),
      epoch_authenticator: hex(state.keySchedule.epochAuthenticator),
      exporter: hex(exporter),
      tree_hash: hex(state.groupContext.treeHash),
      confirmed_transcript_hash: hex(state.groupContext.confirmedTranscriptHash),
      group_context: hex(encodeGroupContext(state.groupContext)),
      leaf_index: state.privatePath.leafIndex,
      members: members(state),
      active: state.groupActiveState?.kind === "active",
    };
  },

  async ping() {
    return { version: "ts-mls 1.6.4" };
  },
};

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
// Requests are handled strictly in order: every op mutates shared state.
let queue = Promise.resolve();
rl.on("line", (line) => {
  queue = queue.then(() => handle(line));
});
rl.on("close", () => {
  queue.then(() => process.exit(0));
});

async function handle(line) {
  if (line.trim() === "") return;
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    process.stdout.write(JSON.stringify({ id: null, ok: false, error: `bad JSON: ${e.message}`, kind: "ProtocolError" }) + "\n");
    return;
  }
  let reply;
  try {
    const op = ops[req.op];
    if (op === undefined) throw new Error(`unknown op ${req.op}`);
    reply = { id: req.id, ok: true, result: await op(req) };
  } catch (e) {
    reply = { id: req.id, ok: false, error: String(e?.message ?? e), kind: e?.constructor?.name ?? "Error" };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
}
