// The realtime socket (docs/api.md, "Realtime"): a fresh ticket for every (re)connect, hello
// with the positions processed so far and the group queues' keys (more keys than fit one
// frame follow in `subscribe` frames), binary delivery frames handed over in order, acks
// after processing, pings, and reconnects with growing waits. A queue made while connected is
// added with a `subscribe` frame.
import { Reader, b64u } from "./bytes.js";
import type { Session } from "./session.js";

export type Status = "connecting" | "online" | "offline" | "replaced";

/** Group queues the server would not serve, from `ready`: queue id (b64u) -> error code
 * ("forbidden": the key is wrong; "queue_not_found"). Empty when it serves them all. */
export type Refused = Record<string, string>;

export interface Delivery {
  /** Group-queue items (queue id b64u) or, with queueId null, direct-queue events; `last` is
   * the frame's last position, processed once this resolves. */
  (queueId: string | null, items: Array<[number, Uint8Array]>, last: number): Promise<void>;
}

const KIND_GROUP = 1;
const KIND_DIRECT = 2;
const BACKOFF_MAX_MS = 10_000;
// Keys per hello or subscribe frame: ~100 bytes each keeps a frame well under the server's
// 64 KiB limit for client frames.
const KEYS_PER_FRAME = 500;
const SUBSCRIBE_WAIT_MS = 10_000;

export class Realtime {
  private ws: WebSocket | undefined;
  private readonly positions: Map<string, number>;
  private backoff = 250;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private awaitingPong = false;
  private chain: Promise<void> = Promise.resolve();
  private stopped = false;
  /** The group queues to serve, id -> key (b64u): every hello presents them all. */
  private readonly queueKeys: Map<string, string>;
  /** Refusals of the current socket, from `ready` and `subscribed`. */
  private refused: Refused = {};
  private nextId = 0;
  /** Subscribe frames waiting for their `subscribed`, by id; resolved on close too. */
  private readonly waiting = new Map<number, () => void>();
  /** How many sockets this page has opened (shown to the user as reconnects). */
  connects = 0;

  constructor(
    private readonly session: Session,
    private readonly deliver: Delivery,
    private readonly onStatus: (s: Status) => void,
    /** The group queues to serve at first, id -> key (b64u). */
    queueKeys: Record<string, string>,
    /** Told on every `ready` and `subscribed` which of them the server refused so far. */
    private readonly onRefused: (refused: Refused) => void,
    /** Where an earlier load of this device left off (it saved them with its state). */
    positions: Iterable<[string, number]> = [],
    private direct: number | undefined = undefined,
  ) {
    this.positions = new Map(positions);
    this.queueKeys = new Map(Object.entries(queueKeys));
    session.onToken = (token) => this.send({ type: "auth", token });
  }

  start(): void {
    void this.connect();
  }

  /** Serve one more queue (made while the page runs): on the open socket a `subscribe` frame,
   * resolved once the server answers (or the socket closes: the next hello names it). With no
   * socket open, the next hello names it. */
  async subscribe(queueId: string, key: string): Promise<void> {
    this.queueKeys.set(queueId, key);
    const ws = this.ws;
    if (ws === undefined || ws.readyState !== WebSocket.OPEN) return;
    const id = ++this.nextId;
    const answered = new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.waiting.delete(id) && resolve(), SUBSCRIBE_WAIT_MS);
      this.waiting.set(id, () => {
        clearTimeout(timer);
        resolve();
      });
    });
    ws.send(JSON.stringify({ type: "subscribe", queue_keys: { [queueId]: key }, id }));
    await answered;
  }

  /** Stop presenting a queue (deleted): later hellos leave it out. */
  forget(queueId: string): void {
    this.queueKeys.delete(queueId);
    this.positions.delete(queueId);
    delete this.refused[queueId];
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.pingTimer);
    this.ws?.close(1000);
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    this.onStatus("connecting");
    let ticket: string;
    try {
      ticket = (await this.session.api.json<{ ticket: string }>("POST", "/v1/realtime/tickets")).ticket;
    } catch (e) {
      if ((e as { status?: number }).status === 401) await this.session.authenticate().catch(() => {});
      this.retry();
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/v1/realtime?ticket=${encodeURIComponent(ticket)}`);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.connects += 1;
    ws.onopen = () => {
      this.refused = {};
      const entries = [...this.queueKeys];
      const chunk = (from: number): { queue_keys: Record<string, string>; queues: Record<string, number> } => {
        const part = entries.slice(from, from + KEYS_PER_FRAME);
        const queues: Record<string, number> = {};
        for (const [q] of part) {
          const seq = this.positions.get(q);
          if (seq !== undefined) queues[q] = seq;
        }
        return { queue_keys: Object.fromEntries(part), queues };
      };
      ws.send(JSON.stringify({ type: "hello", ...chunk(0), ...(this.direct === undefined ? {} : { direct: this.direct }) }));
      for (let from = KEYS_PER_FRAME; from < entries.length; from += KEYS_PER_FRAME) {
        ws.send(JSON.stringify({ type: "subscribe", ...chunk(from) }));
      }
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") this.control(JSON.parse(ev.data) as Record<string, unknown>);
      else this.frame(new Uint8Array(ev.data as ArrayBuffer));
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      clearInterval(this.pingTimer);
      this.ws = undefined;
      for (const done of this.waiting.values()) done();
      this.waiting.clear();
      if (ev.code === 4409) {
        this.onStatus("replaced"); // another socket of this client took over: do not fight it
        return;
      }
      this.onStatus("offline");
      this.retry();
    };
  }

  private retry(): void {
    if (this.stopped) return;
    const wait = this.backoff;
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    setTimeout(() => void this.connect(), wait);
  }

  private control(m: Record<string, unknown>): void {
    if (m.type === "ready") {
      this.backoff = 250;
      this.onStatus("online");
      this.noteRefused(m.refused);
      const every = Number(m.ping_interval ?? 20) * 1000;
      clearInterval(this.pingTimer);
      this.awaitingPong = false;
      this.pingTimer = setInterval(() => {
        if (this.awaitingPong) {
          this.ws?.close(4000); // no pong within an interval: the connection is dead
          return;
        }
        this.awaitingPong = true;
        this.send({ type: "ping" });
      }, every);
    } else if (m.type === "subscribed") {
      this.noteRefused(m.refused);
      const done = typeof m.id === "number" ? this.waiting.get(m.id) : undefined;
      if (done !== undefined) {
        this.waiting.delete(m.id as number);
        done();
      }
    } else if (m.type === "pong") {
      this.awaitingPong = false;
    }
  }

  private noteRefused(refused: unknown): void {
    if (refused !== null && typeof refused === "object") Object.assign(this.refused, refused as Refused);
    this.onRefused({ ...this.refused });
  }

  private frame(data: Uint8Array): void {
    const r = new Reader(data);
    const kind = r.u8();
    const queueId = kind === KIND_GROUP ? b64u(r.take(16)) : null;
    if (kind !== KIND_GROUP && kind !== KIND_DIRECT) return;
    const items: Array<[number, Uint8Array]> = [];
    while (!r.done) items.push([r.u64(), r.opaque().slice()]);
    // One at a time, in arrival order; the ack follows the processing.
    this.chain = this.chain.then(async () => {
      const fresh = items.filter(([seq]) => seq > (queueId === null ? (this.direct ?? 0) : (this.positions.get(queueId) ?? 0)));
      const last = items[items.length - 1][0];
      if (fresh.length > 0) await this.deliver(queueId, fresh, last).catch((e) => console.error("delivery failed", e));
      if (queueId === null) {
        this.direct = Math.max(this.direct ?? 0, last);
        this.send({ type: "ack", queues: {}, direct: this.direct });
      } else {
        // A queue forgotten meanwhile (deleted) keeps no position; its ack is harmless.
        if (this.queueKeys.has(queueId)) this.positions.set(queueId, Math.max(this.positions.get(queueId) ?? 0, last));
        this.send({ type: "ack", queues: { [queueId]: last } });
      }
    });
  }

  private send(m: object): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(m));
  }
}
