// Files in a conversation, as roost.client sends them (docs/api.md, "Assets"): encrypted in the
// page with a fresh AES-256-GCM key in 64 KiB segments, the ciphertext uploaded to the assets
// API, and the reference (`roost.asset.v2`, which holds the key) sent as an MLS application
// message. A recipient downloads through its own homeserver, decrypts and is offered the file.
import { ApiError, seg, type Api } from "./api.js";
import { b64u, fromB64u, fromUtf8, utf8 } from "./bytes.js";
import { $, el, errorText } from "./dom.js";
import type { Messenger } from "./messenger.js";

const SEGMENT = 64 * 1024;
const TAG = 16;
const KEY_BYTES = 32;
const AAD = utf8("roost asset v1");
const REFERENCE_TYPE = "roost.asset.v2";
const OCTET_STREAM = "application/octet-stream";

/** The reference's JSON, field for field as roost.client's `AssetReference.to_json`. */
export interface AssetReference {
  type: typeof REFERENCE_TYPE;
  domain: string;
  asset_id: string;
  capability: string;
  key: string;
  size: number;
  expires_at: number;
  media_type: string;
  name?: string;
}

export const ciphertextSize = (size: number): number => size + TAG * (Math.floor(size / SEGMENT) + 1);

/** The reference an application message carries, or undefined (a text message). */
export function parseReference(payload: Uint8Array): AssetReference | undefined {
  let o: Partial<AssetReference>;
  try {
    o = JSON.parse(fromUtf8(payload)) as Partial<AssetReference>;
  } catch {
    return undefined;
  }
  if (o === null || typeof o !== "object" || o.type !== REFERENCE_TYPE) return undefined;
  const str = (v: unknown): v is string => typeof v === "string" && v !== "";
  const count = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
  if (!str(o.domain) || !str(o.asset_id) || !str(o.capability) || !str(o.key) || !count(o.size) || !count(o.expires_at)) return undefined;
  try {
    if (fromB64u(o.key).length !== KEY_BYTES) return undefined;
  } catch {
    return undefined;
  }
  const ref: AssetReference = {
    type: REFERENCE_TYPE,
    domain: o.domain.toLowerCase(),
    asset_id: o.asset_id,
    capability: o.capability,
    key: o.key,
    size: o.size,
    expires_at: o.expires_at,
    media_type: typeof o.media_type === "string" ? o.media_type : OCTET_STREAM,
  };
  if (typeof o.name === "string") ref.name = o.name;
  return ref;
}

/** Compact JSON, as roost.client writes it. */
export const referenceBytes = (ref: AssetReference): Uint8Array => utf8(JSON.stringify(ref));

export const fileName = (ref: AssetReference): string => ref.name ?? "file";

export function sizeText(bytes: number): string {
  if (bytes < 1024) return `${bytes} bytes`;
  const units = ["KB", "MB", "GB", "TB"];
  let v = bytes / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/** A file message's line in the conversation. */
export const fileLine = (ref: AssetReference): string => `File: ${fileName(ref)} (${sizeText(ref.size)})`;

// ---- segmented AES-GCM: segment i has the nonce i (11 bytes, big endian) ‖ final flag ------
function nonce(index: number, final: boolean): Uint8Array<ArrayBuffer> {
  const n = new Uint8Array(12);
  let v = index;
  for (let i = 10; i >= 0 && v > 0; i--) {
    n[i] = v % 256;
    v = Math.floor(v / 256);
  }
  n[11] = final ? 1 : 0;
  return n;
}

const aesKey = (raw: Uint8Array, usage: KeyUsage): Promise<CryptoKey> =>
  crypto.subtle.importKey("raw", raw as Uint8Array<ArrayBuffer>, "AES-GCM", false, [usage]);

const gcm = (index: number, final: boolean) => ({ name: "AES-GCM", iv: nonce(index, final), additionalData: AAD as Uint8Array<ArrayBuffer>, tagLength: 128 });

/** The file's ciphertext, read and encrypted one segment at a time; the last segment holds
 * fewer than 64 KiB (possibly none), so the ciphertext cannot be cut or extended unnoticed. */
async function encryptFile(key: CryptoKey, file: Blob, progress: (done: number) => void): Promise<Blob> {
  const parts: ArrayBuffer[] = [];
  const full = Math.floor(file.size / SEGMENT);
  for (let i = 0; i <= full; i++) {
    const plain = await file.slice(i * SEGMENT, Math.min(file.size, (i + 1) * SEGMENT)).arrayBuffer();
    parts.push(await crypto.subtle.encrypt(gcm(i, i === full), key, plain));
    progress(Math.min(file.size, (i + 1) * SEGMENT));
  }
  return new Blob(parts, { type: OCTET_STREAM });
}

class Decryptor {
  private buffer = new Uint8Array(0);
  private index = 0;
  readonly out: ArrayBuffer[] = [];
  constructor(private readonly key: CryptoKey) {}

  private async open(piece: Uint8Array, final: boolean): Promise<void> {
    try {
      this.out.push(await crypto.subtle.decrypt(gcm(this.index++, final), this.key, piece as Uint8Array<ArrayBuffer>));
    } catch {
      throw new Error("The file does not decrypt: it was damaged or tampered with.");
    }
  }

  async feed(data: Uint8Array): Promise<void> {
    const joined = new Uint8Array(this.buffer.length + data.length);
    joined.set(this.buffer);
    joined.set(data, this.buffer.length);
    let at = 0;
    // A full piece is final only if nothing follows it, which we cannot know yet: keep it.
    while (joined.length - at > SEGMENT + TAG) {
      await this.open(joined.subarray(at, at + SEGMENT + TAG), false);
      at += SEGMENT + TAG;
    }
    this.buffer = joined.slice(at);
  }

  async finish(): Promise<void> {
    if (this.buffer.length < TAG || this.buffer.length >= SEGMENT + TAG) throw new Error("The file is truncated or padded.");
    await this.open(this.buffer, true);
  }
}

// ---- the assets API -----------------------------------------------------------------------
interface Usage {
  used_bytes: number;
  quota_bytes: number;
  max_asset_bytes: number;
}

/** The server's refusals, in words. */
function assetError(e: ApiError, size: number): Error {
  if (e.code === "asset_too_large") return new Error(`The file is too big for this server (${sizeText(size)}).`);
  if (e.code === "quota_exceeded") return new Error("Your file storage on this server is full: there is no room for this file.");
  if (e.code === "asset_not_found") return new Error("The file is no longer available: it expired or was withdrawn.");
  return e;
}

function problemOf(xhr: XMLHttpRequest): ApiError {
  try {
    const p = JSON.parse(xhr.responseText) as { code?: string; detail?: string };
    return new ApiError(xhr.status, p.code ?? `http_${xhr.status}`, p.detail ?? "");
  } catch {
    return new ApiError(xhr.status, `http_${xhr.status}`, `The server answered ${xhr.status}.`);
  }
}

/** POST /v1/assets with upload progress (fetch reports none, XMLHttpRequest does). */
function post(api: Api, body: Blob, progress: (sent: number) => void): Promise<{ asset_id: string; capability: string; expires_at: number }> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/assets");
    xhr.setRequestHeader("Content-Type", OCTET_STREAM);
    xhr.setRequestHeader("Authorization", `Bearer ${api.token}`);
    xhr.upload.onprogress = (ev) => progress(ev.loaded);
    xhr.onload = () => {
      if (xhr.status !== 201) return reject(problemOf(xhr));
      try {
        resolve(JSON.parse(xhr.responseText));
      } catch {
        reject(new ApiError(xhr.status, "malformed_answer", "The server's answer to the upload does not read."));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, "network", "The server cannot be reached. Check your connection and try again."));
    xhr.send(body);
  });
}

export type Progress = (step: "encrypting" | "uploading" | "downloading", done: number, total: number) => void;

/** Encrypt and upload `file`; the reference to send. Files over the server's limit or the
 * user's remaining quota are refused before anything is uploaded. */
export async function uploadFile(api: Api, domain: string, file: File, progress: Progress): Promise<AssetReference> {
  const total = ciphertextSize(file.size);
  const usage = await api.json<Usage>("GET", "/v1/assets/usage");
  if (total > usage.max_asset_bytes) {
    throw new Error(`${file.name} is too big: ${sizeText(file.size)}. This server takes files up to ${sizeText(usage.max_asset_bytes)}.`);
  }
  if (total > usage.quota_bytes - usage.used_bytes) {
    throw new Error(`${file.name} (${sizeText(file.size)}) does not fit in your file storage: ${sizeText(Math.max(0, usage.quota_bytes - usage.used_bytes))} of ${sizeText(usage.quota_bytes)} left.`);
  }
  const raw = crypto.getRandomValues(new Uint8Array(KEY_BYTES));
  const ciphertext = await encryptFile(await aesKey(raw, "encrypt"), file, (n) => progress("encrypting", n, file.size));
  let out;
  try {
    out = await post(api, ciphertext, (n) => progress("uploading", n, total));
  } catch (e) {
    throw e instanceof ApiError ? assetError(e, file.size) : e;
  }
  return {
    type: REFERENCE_TYPE,
    domain,
    asset_id: out.asset_id,
    capability: out.capability,
    key: b64u(raw),
    size: file.size,
    expires_at: out.expires_at,
    media_type: file.type || OCTET_STREAM,
    name: file.name,
  };
}

/** Download through this user's own homeserver (another domain's asset is relayed for its own
 * users only, so that needs the token), decrypt, and check the size the reference promised. */
export async function downloadFile(api: Api, domain: string, ref: AssetReference, progress: Progress): Promise<Blob> {
  const headers: Record<string, string> = { "Roost-Capability": ref.capability };
  if (ref.domain !== domain) headers.Authorization = `Bearer ${api.token}`;
  let resp: Response;
  try {
    resp = await fetch(`/v1/assets/${seg(ref.domain)}/${seg(ref.asset_id)}`, { headers });
  } catch {
    throw new Error("The server cannot be reached. Check your connection and try again.");
  }
  if (!resp.ok || resp.body === null) {
    let p: { code?: string; detail?: string } = {};
    try {
      p = (await resp.json()) as typeof p;
    } catch {
      // not a problem document: the status says it
    }
    throw assetError(new ApiError(resp.status, p.code ?? `http_${resp.status}`, p.detail ?? `The server answered ${resp.status}.`), ref.size);
  }
  const d = new Decryptor(await aesKey(fromB64u(ref.key), "decrypt"));
  const total = ciphertextSize(ref.size);
  const reader = resp.body.getReader();
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    got += value.length;
    if (got > total) throw new Error("The file is larger than its reference says.");
    await d.feed(value);
    progress("downloading", got, total);
  }
  await d.finish();
  const blob = new Blob(d.out, { type: OCTET_STREAM });
  if (blob.size !== ref.size) throw new Error("The file's size differs from its reference.");
  return blob;
}

// ---- on the page ----------------------------------------------------------------------------
const percent = (done: number, total: number): string => `${total === 0 ? 100 : Math.floor((100 * done) / total)}%`;

// One control per asset, kept across re-renders of the conversation (a download in progress
// and its finished "Save" link survive every change to the message list).
const controls = new Map<string, HTMLElement>();

/** "Download" for a file message: fetch, decrypt, then a link that saves it. */
export function fileControl(api: Api, domain: string, ref: AssetReference): HTMLElement {
  const known = controls.get(ref.asset_id);
  if (known !== undefined) return known;
  const box = el("span", undefined, "file");
  const button = el("button", "Download");
  button.type = "button";
  button.setAttribute("aria-label", `Download ${fileName(ref)}`);
  const bar = el("progress");
  bar.hidden = true;
  const status = el("span", "", "file-status");
  status.setAttribute("role", "status");
  button.addEventListener("click", () => {
    button.disabled = true;
    bar.hidden = false;
    bar.value = 0;
    status.textContent = "Downloading…";
    downloadFile(api, domain, ref, (_step, done, total) => {
      bar.value = total === 0 ? 1 : done / total;
      status.textContent = `Downloading ${percent(done, total)}`;
    })
      .then((blob) => {
        const link = el("a", `Save ${fileName(ref)}`);
        link.href = URL.createObjectURL(blob);
        link.download = fileName(ref);
        status.textContent = "Downloaded and decrypted.";
        button.replaceWith(link);
      })
      .catch((e) => {
        status.textContent = errorText(e);
        button.disabled = false;
      });
  });
  box.append(button, bar, status);
  controls.set(ref.asset_id, box);
  return box;
}

/** The "Send a file" form of the open conversation, with progress and errors in words. */
export function wireFileForm(messenger: () => Messenger | undefined): void {
  const form = $<HTMLFormElement>("file-form");
  const input = $<HTMLInputElement>("file");
  const bar = $<HTMLProgressElement>("file-progress");
  const status = $("file-status");
  const error = $("file-error");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const m = messenger();
    const file = input.files?.[0];
    if (m === undefined || m.openId === null || file === undefined) return;
    const id = m.openId;
    const button = form.querySelector("button") as HTMLButtonElement;
    button.disabled = true;
    error.textContent = "";
    bar.hidden = false;
    bar.value = 0;
    const show: Progress = (step, done, total) => {
      bar.value = total === 0 ? 1 : done / total;
      status.textContent = `${step === "encrypting" ? "Encrypting" : "Uploading"} ${file.name}: ${percent(done, total)}`;
    };
    uploadFile(m.session.api, m.session.domain, file, show)
      .then((ref) => m.sendFile(id, ref))
      .then(() => {
        bar.value = 1;
        status.textContent = `Sent ${file.name}.`;
        input.value = "";
      })
      .catch((e) => {
        bar.hidden = true;
        status.textContent = "";
        error.textContent = errorText(e);
      })
      .finally(() => (button.disabled = false));
  });
}
