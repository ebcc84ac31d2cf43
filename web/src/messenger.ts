// Conversations: starting one with a user (a connection request carrying the Welcome to a new
// two-user group, docs/api.md "Connections"), accepting an invitation, sending, and handling
// what the realtime socket delivers. Everything that touches MLS state runs one step at a time.
import type { ClientState, KeyPackage } from "ts-mls";

import { ApiError, seg, type RequestOptions } from "./api.js";
import { Reader, b64u, fromB64u, fromUtf8, utf8 } from "./bytes.js";
import { CredentialRefused, Credentials } from "./credentials.js";
import { fileLine, parseReference, referenceBytes, type AssetReference } from "./files.js";
import { GROUP_KEY_WRAP_HEADER, GroupKeyRefused, groupKeyHeaders, newGroupKey, openSealedNotice, unwrapGroupKey, wrapGroupKey } from "./group-key.js";
import {
  CIPHER_SUITE,
  commitAdds,
  commitRemoves,
  createRoostGroup,
  decodeKeyPackageBatch,
  encrypt,
  groupName,
  joinFromWelcome,
  leaveProposal,
  externalSenders,
  members,
  pendingProposals,
  processIncoming,
  removedFromGroup,
  senderLeaf,
  useAuthService,
  userOfLeaf,
  verifyNotice,
} from "./mls.js";
import { setConversationPolicy } from "./push.js";
import { Realtime, type Refused, type Status } from "./realtime.js";
import { encodeDevice, type SavedConversation, type SavedDevice, type SavedInvitation, type SavedMessage, type SavedQueue } from "./saved.js";
import type { Session } from "./session.js";
import type { Vault } from "./store.js";

/** `id` is the b64u of the MLS group id bytes: the group's name in paths and in queue items. */
export type Conversation = SavedConversation;
export type Invitation = SavedInvitation;

interface DirectEvent {
  type: string;
  connection_id?: string;
  group_id?: string;
  from?: string;
  payload?: string;
  /** The group key of a `welcome` or `connection_request`, wrapped by the committer or the
   * requester (group-key.ts); absent: a legacy group. */
  group_key_wrap?: string;
}

/** What a request on one group needs: its id (b64u) and its key, if it has one. */
interface GroupRef {
  id: string;
  groupKey?: Uint8Array;
}

interface ConnectionOut {
  connection_id: string;
  requester: string;
  responder: string;
  state: string;
}

/** A homeserver notice (docs/api.md, "What member queues receive"). */
interface Notice {
  type?: string;
  group_id?: string;
  user_id?: string;
  display_name?: string | null;
}

/** How far an unfinished start of a conversation got (see startConversation). */
interface Starting {
  connectionId: string;
  keyPackages?: KeyPackage[];
  /** The queue made for the new group (kept so a retry does not make another). */
  queue?: SavedQueue;
  group?: GroupRef & { state: ClientState };
  added?: { state: ClientState; welcome: Uint8Array };
}

// The realtime session's refusals of the one shared queue of a device an older page made
// (docs/api.md, "Realtime").
const QUEUE_REFUSED: Record<string, string> = {
  forbidden: "The server did not accept this browser's key to its message queue: messages of your conversations cannot reach it. Log out and log in again to make it a new device.",
  queue_not_found: "This browser's message queue is gone from the server: messages of your conversations cannot reach it. Log out and log in again to make it a new device.",
};

// The same for a conversation's own queue.
const CONVERSATION_QUEUE_REFUSED: Record<string, string> = {
  forbidden: "the server did not accept this browser's key to its message queue",
  queue_not_found: "its message queue is gone from the server",
};

/** Conversations this device is no longer in: their queues are deleted. "left" counts at
 * once: the DS sends a member nothing of the commit that removes it (docs/api.md). */
const OVER = new Set(["left", "rejected", "deleted", "removed"]);

const ITEM_MLS_MESSAGE = 1;
const ITEM_SERVER_NOTICE = 2;
/** A server notice sealed under the group's key (groups made with one); 2 is one in the clear. */
const ITEM_SEALED_NOTICE = 3;

export class Messenger {
  readonly conversations = new Map<string, Conversation>();
  readonly invitations = new Map<string, Invitation>();
  status: Status = "connecting";
  /** The conversation on screen: its messages are not counted as unread. */
  openId: string | null = null;
  /** The one queue an older page made for all of this device's conversations (b64u id, or
   * ""): still read for the conversations registered on it. Newer conversations have their
   * own queue each (Conversation.queue). */
  private queueId = "";
  /** That queue's key (b64u): only this device holds it, like the conversations' queue keys;
   * they authorise reading a queue and registering it with a group. Kept in the encrypted
   * record only, never logged. */
  private queueKey = "";
  /** Why messages of the conversations cannot reach this device, in words (shown above the
   * conversation list), or undefined while they can. */
  queueProblem: string | undefined;
  /** Why the shared queue of an older page has no key (its claim failed), in words. */
  private claimProblem: string | undefined;
  private realtime: Realtime | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  /** Queue positions processed so far, saved together with the states they led to. */
  private readonly positions = new Map<string, number>();
  private direct: number | undefined;
  /** Starts of conversations that failed part-way, by peer (in this page's memory). */
  private readonly starting = new Map<string, Starting>();
  /** Made without a saved record (a new device). */
  private readonly fresh: boolean;
  /** Set by stop(): nothing more is written to the vault (e.g. after the account was deleted). */
  private stopped = false;
  /** The homeserver's encoded ExternalSender entry: the key that signs its notices. */
  private externalSender: Uint8Array | undefined;
  /** Members' and homeservers' credentials, checked against their domain's AS. */
  readonly credentials: Credentials;
  /** Invitations refused for a credential, in words (shown above the conversation list). */
  readonly refusals: string[] = [];

  constructor(
    readonly session: Session,
    private readonly changed: () => void,
    private readonly vault: Vault | undefined,
    saved?: SavedDevice,
  ) {
    this.credentials = new Credentials(session.api, session.domain, session.identity.certificates);
    useAuthService(this.credentials.authService);
    this.fresh = saved === undefined;
    if (saved === undefined) return;
    for (const c of saved.conversations) this.conversations.set(c.id, c);
    for (const i of saved.invitations) this.invitations.set(i.connectionId, i);
    this.queueId = saved.queueId;
    this.queueKey = saved.queueKey;
    for (const [q, seq] of saved.positions) this.positions.set(q, seq);
    this.direct = saved.direct;
  }

  /** The socket, serving each conversation's queue (and an older page's shared queue). */
  async start(): Promise<void> {
    const api = this.session.api;
    // A new device is written at once: a reload resumes it even before any conversation.
    if (this.fresh) await this.save();
    if (this.queueId !== "" && this.queueKey === "") {
      // Saved by an older page: the queue predates keys, and its creator may claim one, once.
      try {
        this.queueKey = (await api.json<{ queue_key: string }>("POST", `/v1/queues/${this.queueId}/key`)).queue_key;
        await this.save();
      } catch (e) {
        // The socket still brings the direct queue; the next load tries again.
        this.claimProblem = `Could not get the key to this browser's message queue: ${e instanceof Error ? e.message : String(e)}`;
      }
    }
    const deliver = (q: string | null, items: Array<[number, Uint8Array]>, last: number): Promise<void> =>
      this.serial(() => this.delivered(q, items, last));
    const onStatus = (s: Status): void => {
      this.status = s;
      this.changed();
    };
    const keys: Record<string, string> = this.queueKey === "" ? {} : { [this.queueId]: this.queueKey };
    for (const c of this.conversations.values()) if (c.queue !== undefined) keys[c.queue.id] = c.queue.key;
    const onRefused = (refused: Refused): void => {
      const problems: string[] = [];
      const shared = this.queueKey === "" ? undefined : refused[this.queueId];
      if (this.claimProblem !== undefined) problems.push(this.claimProblem);
      else if (shared !== undefined) problems.push(QUEUE_REFUSED[shared] ?? QUEUE_REFUSED.forbidden);
      for (const c of this.conversations.values()) {
        const code = c.queue === undefined ? undefined : refused[c.queue.id];
        if (code !== undefined) problems.push(`Messages of “${c.peer}” cannot reach this browser: ${CONVERSATION_QUEUE_REFUSED[code] ?? CONVERSATION_QUEUE_REFUSED.forbidden}.`);
      }
      this.queueProblem = problems.length === 0 ? undefined : problems.join(" ");
      this.changed();
    };
    this.realtime = new Realtime(this.session, deliver, onStatus, keys, onRefused, this.positions, this.direct);
    this.realtime.start();
  }

  /** Write the device (keys, states, messages, positions) to the vault. A failed write is
   * logged: the page goes on in memory. */
  private async save(): Promise<void> {
    if (this.vault === undefined || this.stopped) return;
    const s = this.session;
    const record = encodeDevice({
      domain: s.domain,
      userId: s.userId,
      clientId: s.clientId,
      identity: s.identity,
      keyPackages: s.keyPackages,
      queueId: this.queueId,
      queueKey: this.queueKey,
      positions: [...this.positions],
      direct: this.direct,
      conversations: [...this.conversations.values()],
      invitations: [...this.invitations.values()],
    });
    await this.vault.save(record).catch((e) => console.error("could not save this device's state", e));
  }

  /** This device's notification policy for a conversation (null: the default), told to the
   * server and kept with the conversation. */
  async setNotify(id: string, policy: string | null): Promise<void> {
    const c = this.conversations.get(id);
    await setConversationPolicy(this.session.api, id, policy, groupKeyHeaders(c?.groupKey));
    if (c === undefined) return;
    if (policy === null) delete c.notify;
    else c.notify = policy;
    await this.save();
    this.changed();
  }

  stop(): void {
    this.stopped = true;
    this.realtime?.stop();
    this.session.close();
  }

  get reconnects(): number {
    return Math.max(0, (this.realtime?.connects ?? 1) - 1);
  }

  /** A new group-message queue for one conversation, served by the open socket before the
   * caller registers it with the group (so the group's first items come in real time).
   * Past the server's queue limit: 409 too_many_queues, said in words by api.ts. */
  private async newQueue(): Promise<SavedQueue> {
    const made = await this.session.api.json<{ queue_id: string; queue_key: string }>("POST", "/v1/queues");
    const q = { id: made.queue_id, key: made.queue_key };
    await this.realtime?.subscribe(q.id, q.key);
    return q;
  }

  /** Delete a conversation's queue (with its key) and stop serving it. A queue already gone
   * is fine; any other failure leaves it to the next try. */
  private async dropQueue(q: SavedQueue): Promise<void> {
    try {
      await this.session.api.request("DELETE", `/v1/queues/${encodeURIComponent(q.id)}`, { headers: { "Roost-Queue-Key": q.key } });
    } catch (e) {
      if (!(e instanceof ApiError && e.code === "queue_not_found")) throw e;
    }
    this.realtime?.forget(q.id);
    this.positions.delete(q.id);
  }

  /** Once a conversation's last items are processed and it is over for this device (left,
   * removed as found when the group is opened, the group deleted, the request rejected): its
   * queue goes. */
  private async retireQueues(): Promise<void> {
    let dropped = false;
    for (const c of this.conversations.values()) {
      if (c.queue === undefined || !OVER.has(c.status)) continue;
      try {
        await this.dropQueue(c.queue);
        delete c.queue;
        dropped = true;
      } catch (e) {
        console.warn(`could not delete a conversation's queue: ${e instanceof Error ? e.message : "failed"}`);
      }
    }
    if (dropped) await this.save();
  }

  private serial<T>(step: () => Promise<T>): Promise<T> {
    const run = this.chain.then(step);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Start a conversation with `peer` (an exact user id). A start that fails part-way is
   * taken up where it stopped by the next try: the server allows one connection request and
   * one claim of the peer's KeyPackages, so neither may be spent twice. */
  startConversation(peerInput: string): Promise<Conversation> {
    return this.serial(async () => {
      const api = this.session.api;
      const peer = peerInput.trim().toLowerCase();
      let s = this.starting.get(peer);
      if (s === undefined) {
        s = { connectionId: await this.openConnection(peer) };
        this.starting.set(peer, s);
      }
      if (s.keyPackages === undefined) {
        const claimed = await api.bytes("POST", `/v1/users/${seg(peer)}/keypackages/claim?cipher_suite=${CIPHER_SUITE}`);
        const keyPackages = decodeKeyPackageBatch(claimed);
        if (keyPackages.length === 0) throw new ApiError(0, "no_key_packages", `${peer} has no device that can receive messages yet.`);
        s.keyPackages = keyPackages;
      }
      if (s.group === undefined) {
        const groupId = utf8(`${b64u(crypto.getRandomValues(new Uint8Array(16)))}@${this.session.domain}`);
        const created = await createRoostGroup(this.session.identity, groupId, await this.homeExternalSender());
        s.queue ??= await this.newQueue();
        const groupKey = newGroupKey();
        await this.registerGroup(created.body, s.queue, groupKey);
        s.group = { id: b64u(groupId), state: created.state, groupKey };
      }
      if (s.added === undefined) {
        const added = await commitAdds(s.group.state, s.keyPackages);
        await this.postCommit(s.group, added.bundle, added.state);
        s.added = { state: added.state, welcome: added.welcome };
      }
      // The Welcome goes as the request's payload, the group key with it wrapped for the epoch
      // the add made (the peer's first); the DS hands the wrap on in the request's event.
      const headers: Record<string, string> = {};
      if (s.group.groupKey !== undefined) headers[GROUP_KEY_WRAP_HEADER] = await wrapGroupKey(s.added.state, s.group.groupKey);
      await api.request("POST", `/v1/connections/${seg(s.connectionId)}/request`, { body: s.added.welcome, headers });
      this.starting.delete(peer);
      const c: Conversation = { id: s.group.id, peer, status: "waiting", messages: [], unread: 0, state: s.added.state, connectionId: s.connectionId, queue: s.queue };
      if (s.group.groupKey !== undefined) c.groupKey = s.group.groupKey;
      this.conversations.set(c.id, c);
      await this.save();
      this.changed();
      return c;
    });
  }

  /** A group conversation named `name` with `invitees` (user ids this user is connected
   * with: only they may have their KeyPackages claimed). Each gets the Welcome in their direct
   * queue from the DS. */
  createGroup(name: string, invitees: string[]): Promise<Conversation> {
    return this.serial(async () => {
      const sender = await this.homeExternalSender();
      const keyPackages = await this.claim(invitees);
      const groupId = utf8(`${b64u(crypto.getRandomValues(new Uint8Array(16)))}@${this.session.domain}`);
      const id = b64u(groupId);
      const created = await createRoostGroup(this.session.identity, groupId, sender, name.trim());
      const groupKey = newGroupKey();
      const queue = await this.newQueue();
      try {
        await this.registerGroup(created.body, queue, groupKey);
      } catch (e) {
        await this.dropQueue(queue).catch(() => undefined);
        throw e;
      }
      let state = created.state;
      if (keyPackages.length > 0) {
        const added = await commitAdds(state, keyPackages);
        await this.postCommit({ id, groupKey }, added.bundle, added.state);
        state = added.state;
      }
      const c: Conversation = { id, peer: name.trim(), group: true, status: "active", messages: [], unread: 0, state, queue, groupKey };
      c.roles = { [this.session.userId]: "admin" };
      this.conversations.set(id, c);
      await this.save();
      this.changed();
      return c;
    });
  }

  /** Create a group on the DS with this device's leaf on `queue` (its key authorises that),
   * sealed under `groupKey` (without one: a legacy group). */
  private async registerGroup(body: Uint8Array, queue: SavedQueue, groupKey: Uint8Array | undefined): Promise<void> {
    const path = `/v1/groups?queue_id=${encodeURIComponent(queue.id)}&external_join=false`;
    await this.session.api.request("POST", path, { body, headers: { "Roost-Queue-Key": queue.key, ...groupKeyHeaders(groupKey) } });
  }

  /** A request on one group (`/v1/groups/{id}` and below), with the group's key when it has
   * one: every request on a group goes through here. */
  private onGroup(g: GroupRef, method: string, rest: string, options: RequestOptions = {}): Promise<Response> {
    const headers = { ...options.headers, ...groupKeyHeaders(g.groupKey) };
    return this.session.api.request(method, `/v1/groups/${g.id}${rest}`, { ...options, headers });
  }

  /** Post a commit bundle. One with a Welcome (`next`: the state it leads to) gives the
   * joiners the group key, wrapped under that epoch's exporter. */
  private async postCommit(g: GroupRef, bundle: Uint8Array, next?: ClientState): Promise<void> {
    const headers: Record<string, string> = {};
    if (next !== undefined && g.groupKey !== undefined) headers[GROUP_KEY_WRAP_HEADER] = await wrapGroupKey(next, g.groupKey);
    await this.onGroup(g, "POST", "/commits", { body: bundle, headers });
  }

  /** Add users (connected with this one) to a group conversation. */
  invite(id: string, invitees: string[]): Promise<void> {
    return this.serial(async () => {
      const c = this.active(id);
      const added = await commitAdds(c.state, await this.claim(invitees));
      await this.postCommit(c, added.bundle, added.state);
      c.state = added.state;
      await this.save();
      this.changed();
    });
  }

  /** One commit adding these clients to a conversation: our own user's new device, which any
   * member may add (docs/api.md, "Own devices"). */
  addClients(id: string, keyPackages: KeyPackage[]): Promise<void> {
    return this.serial(async () => {
      const c = this.conversations.get(id);
      if (c === undefined || (c.status !== "active" && c.status !== "waiting")) throw new Error("You are no longer in this conversation.");
      const added = await commitAdds(c.state, keyPackages);
      await this.postCommit(c, added.bundle, added.state);
      c.state = added.state;
      await this.save();
      this.changed();
    });
  }

  /** Remove every device of `userId` from a group conversation (admins only, the DS says). */
  remove(id: string, userId: string): Promise<void> {
    return this.serial(async () => {
      const c = this.active(id);
      const leaves = members(c.state).filter((m) => m.userId === userId && !m.me).map((m) => m.leaf);
      if (leaves.length === 0) throw new Error(`${userId} is not a member.`);
      const r = await commitRemoves(c.state, leaves);
      await this.postCommit(c, r.bundle);
      c.state = r.state;
      await this.save();
      this.changed();
    });
  }

  /** Make `userId` an admin of a group conversation. */
  promote(id: string, userId: string): Promise<void> {
    return this.serial(async () => {
      const c = this.active(id);
      await this.onGroup(c, "PUT", `/roles/${seg(userId)}`, { json: { role: "admin" } });
      await this.refreshRoles(c);
      this.changed();
    });
  }

  /** Leave a group conversation: a Remove proposal of our leaf, which the others commit. */
  leave(id: string): Promise<void> {
    return this.serial(async () => {
      const c = this.active(id);
      await this.onGroup(c, "POST", "/proposals", { body: await leaveProposal(c.state) });
      c.status = "left";
      await this.save();
      await this.retireQueues();
      this.changed();
    });
  }

  /** The roles as the DS holds them; a group that no longer has us says so. */
  private async refreshRoles(c: Conversation): Promise<void> {
    try {
      const g = (await (await this.onGroup(c, "GET", "")).json()) as { roles: Record<string, string> };
      c.roles = g.roles;
    } catch (e) {
      if (!(e instanceof ApiError && (e.code === "not_member" || e.code === "group_not_found"))) throw e;
      if (c.status === "active") c.status = e.code === "not_member" ? "removed" : "deleted";
    }
    await this.save();
    await this.retireQueues();
  }

  private active(id: string): Conversation {
    const c = this.conversations.get(id);
    if (c === undefined || !c.group) throw new Error("No such group conversation.");
    if (c.status !== "active") throw new Error("You are no longer in this group.");
    return c;
  }

  /** One KeyPackage per device of each user. */
  private async claim(userIds: string[]): Promise<KeyPackage[]> {
    const out: KeyPackage[] = [];
    for (const u of userIds.map((x) => x.trim().toLowerCase()).filter((x) => x !== "")) {
      const got = decodeKeyPackageBatch(await this.session.api.bytes("POST", `/v1/users/${seg(u)}/keypackages/claim?cipher_suite=${CIPHER_SUITE}`));
      if (got.length === 0) throw new ApiError(0, "no_key_packages", `${u} has no device that can receive messages yet.`);
      out.push(...got);
    }
    return out;
  }

  /** A new connection request to `peer`, or the one an earlier, unfinished start opened. */
  private async openConnection(peer: string): Promise<string> {
    const api = this.session.api;
    try {
      return (await api.json<{ connection_id: string }>("POST", "/v1/connections", { json: { to: peer } })).connection_id;
    } catch (e) {
      if (!(e instanceof ApiError && e.code === "connection_exists")) throw e;
      let cursor: string | null = null;
      do {
        const q: string = cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`;
        const page = await api.json<{ connections: ConnectionOut[]; next_cursor: string | null }>("GET", `/v1/connections?limit=100${q}`);
        const mine = page.connections.find((c) => c.state === "opening" && c.requester === this.session.userId && c.responder === peer);
        if (mine !== undefined) return mine.connection_id;
        cursor = page.next_cursor;
      } while (cursor !== null);
      throw e;
    }
  }

  /** Accept an invitation: join the group from its Welcome and register our queue. */
  accept(connectionId: string): Promise<Conversation> {
    return this.serial(async () => {
      const inv = this.invitations.get(connectionId);
      if (inv === undefined) throw new Error("That invitation is gone.");
      // The Welcome is read (and its members' credentials checked) before the server is told:
      // a refused invitation leaves nothing changed.
      const joined = await joinFromWelcome(inv.welcome, this.session.keyPackages);
      // So is the group key: one that does not open refuses the invitation (the request's
      // event carries no wrap for a legacy group).
      let groupKey: Uint8Array | undefined;
      try {
        groupKey = inv.groupKeyWrap === undefined ? undefined : await unwrapGroupKey(joined.state, inv.groupKeyWrap);
      } catch (e) {
        if (e instanceof GroupKeyRefused) throw new GroupKeyRefused(`The invitation from ${inv.from} cannot be accepted: ${e.message}.`);
        throw e;
      }
      await this.session.api.request("POST", `/v1/connections/${seg(connectionId)}/accept`);
      this.invitations.delete(connectionId);
      const c = await this.join(joined, inv.from, false, groupKey);
      c.connectionId = connectionId;
      await this.save();
      this.changed();
      return c;
    });
  }

  /** Decline an invitation; the requester's page then deletes the group it made for it. */
  decline(connectionId: string): Promise<void> {
    return this.serial(async () => {
      await this.session.api.request("POST", `/v1/connections/${seg(connectionId)}/reject`);
      this.invitations.delete(connectionId);
      await this.save();
      this.changed();
    });
  }

  /** Join from a Welcome: a connection's conversation of two, or (`group`) a group someone
   * added us to, titled by its name or, without one (e.g. made by another client), its inviter.
   * `groupKey`: the group's key, unwrapped from the Welcome event (none: a legacy group). */
  private async join(joined: Awaited<ReturnType<typeof joinFromWelcome>>, from: string, group = false, groupKey?: Uint8Array): Promise<Conversation> {
    const { state, used } = joined;
    this.session.usedKeyPackage(used);
    const id = b64u(state.groupContext.groupId);
    const queue = await this.newQueue();
    try {
      await this.onGroup({ id, groupKey }, "PUT", "/queue", { json: { queue_id: queue.id }, headers: { "Roost-Queue-Key": queue.key } });
    } catch (e) {
      await this.dropQueue(queue).catch(() => undefined);
      throw e;
    }
    const name = groupName(state);
    // Another device of ours added this one to a conversation of two: titled by the other user.
    const others = [...new Set(members(state).map((m) => m.userId))].filter((u) => u !== this.session.userId);
    const ownPair = from === this.session.userId && name === undefined && others.length === 1;
    const title = name ?? (ownPair ? others[0] : group ? `Group with ${from}` : from);
    const c: Conversation = { id, peer: title, status: "active", messages: [], unread: 0, state, queue };
    if (groupKey !== undefined) c.groupKey = groupKey;
    if ((group && !ownPair) || name !== undefined) c.group = true;
    this.conversations.set(id, c);
    return c;
  }

  send(id: string, text: string): Promise<void> {
    return this.post(id, utf8(text), { from: this.session.userId, text, mine: true });
  }

  /** Send an uploaded file's reference (files.ts), as roost.client does: the JSON is the message. */
  sendFile(id: string, ref: AssetReference): Promise<void> {
    return this.post(id, referenceBytes(ref), { from: this.session.userId, text: fileLine(ref), mine: true, file: ref });
  }

  private post(id: string, payload: Uint8Array, message: SavedMessage): Promise<void> {
    return this.serial(async () => {
      const c = this.conversations.get(id);
      if (c === undefined) throw new Error("No such conversation.");
      const out = await encrypt(c.state, payload);
      c.state = out.state; // a ratchet generation is never used twice, even if the send fails
      await this.save();
      await this.onGroup(c, "POST", "/messages", {
        body: out.message,
        headers: { "Roost-Message-Id": b64u(crypto.getRandomValues(new Uint8Array(16))) },
      });
      c.messages.push(message);
      await this.save();
      this.changed();
    });
  }

  open(id: string | null): void {
    this.openId = id;
    const c = id === null ? undefined : this.conversations.get(id);
    if (c && c.unread > 0) {
      c.unread = 0;
      void this.serial(() => this.save());
    }
    if (c?.group && c.status === "active") {
      void this.serial(() => this.refreshRoles(c))
        .then(() => this.changed())
        .catch((e) => console.warn("could not read the group's roles", e));
    }
    this.changed();
  }

  private async delivered(queueId: string | null, items: Array<[number, Uint8Array]>, last: number): Promise<void> {
    for (const [, payload] of items) {
      try {
        if (queueId === null) await this.directEvent(JSON.parse(fromUtf8(payload)) as DirectEvent);
        else await this.groupItem(payload);
      } catch (e) {
        console.error("could not process an item", e);
      }
    }
    // The new states and the position they reach are written together, before the ack.
    if (queueId === null) this.direct = Math.max(this.direct ?? 0, last);
    else this.positions.set(queueId, Math.max(this.positions.get(queueId) ?? 0, last));
    await this.save();
    await this.retireQueues();
    this.changed();
  }

  private async directEvent(e: DirectEvent): Promise<void> {
    const conn = e.connection_id ?? "";
    if (e.type === "connection_request" && e.payload && e.from && e.from !== this.session.userId) {
      const inv: Invitation = { connectionId: conn, from: e.from, welcome: fromB64u(e.payload) };
      if (e.group_key_wrap !== undefined) inv.groupKeyWrap = e.group_key_wrap;
      this.invitations.set(conn, inv);
    } else if (e.type === "connection_accepted" || e.type === "connection_rejected") {
      for (const c of this.conversations.values()) {
        if (c.connectionId !== conn || c.status !== "waiting") continue;
        c.status = e.type === "connection_accepted" ? "active" : "rejected";
        if (c.status === "rejected") {
          // The group only ever held us (docs/api.md, "Connections"); already gone is fine.
          await this.onGroup(c, "DELETE", "").catch(() => undefined);
        }
      }
      this.invitations.delete(conn); // answered on another device of ours
    } else if (e.type === "welcome" && e.payload && e.group_id && !this.conversations.has(e.group_id)) {
      try {
        const joined = await joinFromWelcome(fromB64u(e.payload), this.session.keyPackages);
        // The key is unwrapped before anything is registered: a Welcome whose key does not
        // open is refused whole, like one with a refused credential.
        const groupKey = e.group_key_wrap === undefined ? undefined : await unwrapGroupKey(joined.state, e.group_key_wrap);
        await this.join(joined, e.from ?? "", true, groupKey);
      } catch (err) {
        if (err instanceof CredentialRefused) this.refusals.push(`An invitation from ${e.from ?? "someone"} was refused. ${err.message}`);
        else if (err instanceof GroupKeyRefused) this.refusals.push(`An invitation from ${e.from ?? "someone"} to a group was refused: ${err.message}.`);
        else if (!(err instanceof Error && err.message.includes("another device"))) throw err;
      }
    }
  }

  private async groupItem(payload: Uint8Array): Promise<void> {
    const r = new Reader(payload);
    const itemType = r.u8();
    const groupId = r.opaque();
    const id = b64u(groupId);
    r.u64(); // group_seq: the queue's own order already is the group's
    r.opaque(); // policy
    const body = r.opaque();
    const c = this.conversations.get(id);
    if (c === undefined) return;
    if (itemType === ITEM_SERVER_NOTICE || itemType === ITEM_SEALED_NOTICE) {
      const sealed = itemType === ITEM_SEALED_NOTICE ? groupId : undefined;
      const notice = await this.verifiedNotice(c, body, sealed);
      if (notice !== undefined) this.applyNotice(c, notice);
      return;
    }
    if (itemType !== ITEM_MLS_MESSAGE) return;
    const leaf = await senderLeaf(c.state, body);
    let got;
    try {
      // Every sender's credential, not only those met joining: a cache hit once checked.
      if (leaf !== undefined) await this.credentials.check(leaf.credential, leaf.signaturePublicKey);
      got = await processIncoming(c.state, body);
    } catch (e) {
      if (!(e instanceof CredentialRefused)) throw e;
      c.messages.push({ from: "", text: `A message was refused. ${e.message}`, mine: false, notice: true });
      return;
    }
    const from = userOfLeaf(leaf);
    c.state = got.state;
    if (got.kind === "application") {
      if (c.status === "waiting") c.status = "active"; // a message from the peer means they joined
      const file = parseReference(got.text);
      c.messages.push({ from: from ?? c.peer, text: file ? fileLine(file) : fromUtf8(got.text), mine: false, file });
      if (this.openId !== c.id || document.hidden) c.unread += 1;
    } else if (removedFromGroup(c.state)) {
      c.status = "removed";
    } else if (pendingProposals(c.state) > 0 && c.status === "active") {
      await this.commitPending(c);
    }
  }

  /** The homeserver's encoded ExternalSender entry (fetched once), its certificate checked
   * against our AS. */
  private async homeExternalSender(): Promise<Uint8Array> {
    if (this.externalSender === undefined) {
      const d = await this.session.api.json<{ external_sender: string }>("GET", `/v1/ds/external-sender?cipher_suite=${CIPHER_SUITE}`);
      const entry = fromB64u(d.external_sender);
      await this.credentials.checkExternalSender(entry, this.session.domain);
      this.externalSender = entry;
    }
    return this.externalSender;
  }

  /** The ExternalSender entry whose key signs a group's notices: the homeserver of the
   * group's domain (the part of the group id after its last '@'), listed in the group's
   * external_senders — ours, or another domain's certified by that domain's AS. */
  private async noticeSigner(c: Conversation): Promise<Uint8Array> {
    const listed = externalSenders(c.state);
    const domain = fromUtf8(fromB64u(c.id)).split("@").pop() ?? "";
    if (domain === this.session.domain || domain === "") {
      const entry = await this.homeExternalSender();
      if (!listed.some((e) => b64u(e) === b64u(entry))) throw new Error("the homeserver is not this group's external sender");
      return entry;
    }
    for (const entry of listed) {
      try {
        await this.credentials.checkExternalSender(entry, domain);
        return entry;
      } catch (e) {
        if (!(e instanceof CredentialRefused)) throw e;
      }
    }
    throw new Error(`the group lists no external sender certified for ${domain}`);
  }

  /** A SignedNotice, if the homeserver listed in this group's external_senders signed it and it
   * names this group; anything else is dropped (logged without its content). `sealedFor`: the
   * group id of a notice sealed under the group's key (item type 3), opened first. */
  private async verifiedNotice(c: Conversation, body: Uint8Array, sealedFor?: Uint8Array): Promise<Notice | undefined> {
    try {
      const r = new Reader(sealedFor === undefined ? body : await openSealedNotice(c.groupKey, sealedFor, body));
      const noticeBytes = r.opaque();
      const signature = r.opaque();
      const entry = await this.noticeSigner(c);
      if (!(await verifyNotice(entry, noticeBytes, signature))) throw new Error("bad signature");
      const notice = JSON.parse(fromUtf8(noticeBytes)) as Notice;
      if (typeof notice.group_id !== "string" || b64u(fromB64u(notice.group_id)) !== c.id) throw new Error("it names another group");
      return notice;
    } catch (e) {
      console.warn(`a server notice was dropped: ${e instanceof Error ? e.message : "unreadable"}`);
      return undefined;
    }
  }

  /** A verified notice as a line in the conversation (and what it changes). */
  private applyNotice(c: Conversation, notice: Notice): void {
    const user = typeof notice.user_id === "string" ? notice.user_id : undefined;
    const who = user === this.session.userId ? "You" : user;
    let line: string | undefined;
    if (notice.type === "group_deleted") {
      if (c.status !== "rejected") c.status = "deleted";
    } else if (notice.type === "display_name_changed" && who !== undefined) {
      const name = typeof notice.display_name === "string" ? notice.display_name : null;
      line = name === null ? `${who} removed ${who === "You" ? "your" : "their"} display name.` : `${who} changed ${who === "You" ? "your" : "their"} display name to “${name}”.`;
    } else if (notice.type === "user_deleted" && who !== undefined) {
      line = `${who} deleted ${who === "You" ? "your" : "their"} account.`;
    } else if (notice.type === "admin_promoted" && user !== undefined && who !== undefined) {
      line = `${who} ${who === "You" ? "are" : "is"} now an admin.`;
      if (c.roles !== undefined) c.roles[user] = "admin";
    }
    if (line !== undefined) c.messages.push({ from: "", text: line, mine: false, notice: true });
  }

  /** Commit proposals at once (the homeserver's Removes of deleted devices, a member leaving):
   * whoever commits first wins, the others' commits get 409 epoch_conflict and are dropped
   * (as is one refused while messages of the group are still on their way to us: a later
   * commit takes the proposals along). */
  private async commitPending(c: Conversation): Promise<void> {
    const r = await commitRemoves(c.state, []);
    try {
      await this.postCommit(c, r.bundle);
      c.state = r.state;
    } catch (e) {
      if (!(e instanceof ApiError && (e.code === "epoch_conflict" || e.code === "items_in_transit"))) throw e;
    }
  }
}
