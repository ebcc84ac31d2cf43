// Byte helpers for the wire formats of docs/api.md: base64url, MLS variable-length vectors
// (RFC 9420 section 2.1.2) and a strict reader.

export const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);
export const fromUtf8 = (bytes: Uint8Array): string => new TextDecoder("utf-8", { fatal: true }).decode(bytes);

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function b64u(bytes: Uint8Array): string {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function fromB64u(text: string): Uint8Array {
  const plain = text.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  const binary = atob(plain + "=".repeat((4 - (plain.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

export const hex = (bytes: Uint8Array): string => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

export function varint(n: number): Uint8Array {
  if (n < 0x40) return Uint8Array.of(n);
  if (n < 0x4000) return Uint8Array.of(0x40 | (n >> 8), n & 0xff);
  if (n < 0x40000000) return Uint8Array.of(0x80 | (n >>> 24), (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
  throw new RangeError("vector too long");
}

/** `opaque data<V>`: the length as an MLS varint, then the bytes. */
export const opaque = (bytes: Uint8Array): Uint8Array => concat(varint(bytes.length), bytes);

export class Reader {
  private at = 0;
  constructor(private readonly data: Uint8Array) {}

  get done(): boolean {
    return this.at === this.data.length;
  }

  get offset(): number {
    return this.at;
  }

  skip(n: number): void {
    this.take(n);
  }

  take(n: number): Uint8Array {
    if (this.at + n > this.data.length) throw new RangeError("truncated");
    const out = this.data.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }

  u8(): number {
    return this.take(1)[0];
  }

  /** A uint64 as a JS number: queue seqs stay below 2^53 (docs/api.md, "Queues"). */
  u64(): number {
    const b = this.take(8);
    let n = 0;
    for (const x of b) n = n * 256 + x;
    return n;
  }

  varint(): number {
    const first = this.u8();
    const size = 1 << (first >> 6);
    if (size === 8) throw new RangeError("invalid varint");
    let n = first & 0x3f;
    for (let i = 1; i < size; i++) n = n * 256 + this.u8();
    return n;
  }

  opaque(): Uint8Array {
    return this.take(this.varint());
  }
}
