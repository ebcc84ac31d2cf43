// The realtime socket (docs/api.md, "Realtime"): a fresh ticket for every (re)connect, hello
// with the positions processed so far and the group queues' keys, binary delivery frames
// handed over in order, acks after processing, pings, and reconnects with growing waits.
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

export class Realtime {
  private ws: WebSocket | undefined;
  private readonly positions: Map<string, number>;
  private backoff = 250;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private awaitingPong = false;
  private chain: Promise<void> = Promise.resolve();
  private stopped = false;
  /** How many sockets this page has opened (shown to the user as reconnects). */
  connects = 0;

  constructor(
    private readonly session: Session,
    private readonly deliver: Delivery,
    private readonly onStatus: (s: Status) => void,
    /** The group queues to serve, id -> key (b64u): the session gets exactly these. */
    private readonly queueKeys: Record<string, string>,
    /** Told on every `ready` which of them the server refused. */
    private readonly onRefused: (refused: Refused) => void,
    /** Where an earlier load of this device left off (it saved them with its state). */
    positions: Iterable<[string, number]> = [],
    private direct: number | undefined = undefined,
  ) {
    this.positions = new Map(positions);
    session.onToken = (token) => this.send({ type: "auth", token });
  }

  start(): void {
    void this.connect();
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
      const queues: Record<string, number> = {};
      for (const [q, seq] of this.positions) queues[q] = seq;
      const hello = { type: "hello", queues, queue_keys: this.queueKeys, ...(this.direct === undefined ? {} : { direct: this.direct }) };
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") this.control(JSON.parse(ev.data) as Record<string, unknown>);
      else this.frame(new Uint8Array(ev.data as ArrayBuffer));
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      clearInterval(this.pingTimer);
      this.ws = undefined;
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
      const refused = m.refused;
      this.onRefused(refused !== null && typeof refused === "object" ? (refused as Refused) : {});
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
    } else if (m.type === "pong") {
      this.awaitingPong = false;
    }
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
        this.positions.set(queueId, Math.max(this.positions.get(queueId) ?? 0, last));
        this.send({ type: "ack", queues: { [queueId]: this.positions.get(queueId) } });
      }
    });
  }

  private send(m: object): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(m));
  }
}
