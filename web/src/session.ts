// Account and device: register or log in (a new device of the user, added with the password,
// or approved by another device: devices.ts), prove possession of the signature key for a
// bearer token, keep the token fresh, publish KeyPackages (docs/api.md, "Authentication",
// "Registration and clients").
import { Api, ApiError } from "./api.js";
import { b64u, concat, fromB64u, opaque, utf8 } from "./bytes.js";
import { CIPHER_SUITE, keyPackageBatch, newSigningKey, sign, type HeldKeyPackage, type Identity, type SigningKey } from "./mls.js";

const KEY_PACKAGES = 10; // ordinary ones per batch, plus a last-resort one
const RENEW_BEFORE_S = 60; // renew the token this long before it expires

export interface ClientInfo {
  client_id: string;
  credential: [string, string];
}

export class Session {
  readonly api = new Api();
  keyPackages: HeldKeyPackage[] = [];
  private renewTimer: ReturnType<typeof setTimeout> | undefined;
  /** Called with each renewed token (the realtime socket switches to it). */
  onToken: (token: string) => void = () => {};

  private constructor(
    readonly domain: string,
    readonly userId: string,
    readonly clientId: string,
    readonly identity: Identity,
  ) {}

  static async register(name: string, password: string): Promise<Session> {
    const api = new Api();
    const domain = await homeDomain(api);
    const userId = `${name.trim().toLowerCase()}@${domain}`;
    const key = await newSigningKey();
    const d = await api.json<{ user_id: string; client: ClientInfo }>("POST", "/v1/register", {
      json: { name: name.trim(), password, client: await clientKey(key, domain, userId) },
      auth: false,
    });
    return Session.start(domain, d.user_id, d.client, key);
  }

  /** Log in as a new device of the user (its own key, added with the password). */
  static async logIn(user: string, password: string): Promise<Session> {
    const api = new Api();
    const domain = await homeDomain(api);
    const trimmed = user.trim().toLowerCase();
    const userId = trimmed.includes("@") ? trimmed : `${trimmed}@${domain}`;
    const key = await newSigningKey();
    const info = await api.json<ClientInfo>("POST", "/v1/clients", {
      json: { user_id: userId, password, client: await clientKey(key, domain, userId) },
      auth: false,
    });
    return Session.start(domain, userId, info, key);
  }

  /** The device an earlier load of this page saved: the same key, a fresh token. */
  static async resume(saved: Pick<Session, "domain" | "userId" | "clientId" | "identity" | "keyPackages">): Promise<Session> {
    const s = new Session(saved.domain, saved.userId, saved.clientId, saved.identity);
    s.keyPackages = saved.keyPackages;
    await s.authenticate();
    return s;
  }

  /** A device the server just made (by password, registration or approval): token, KeyPackages. */
  static async start(domain: string, userId: string, info: ClientInfo, key: SigningKey): Promise<Session> {
    const identity = { ...key, certificates: info.credential.map(fromB64u) };
    const s = new Session(domain, userId, info.client_id, identity);
    await s.authenticate();
    await s.publishKeyPackages();
    return s;
  }

  /** Challenge, signature, token (docs/api.md, "Authentication"). */
  async authenticate(): Promise<void> {
    const ch = await this.api.json<{ challenge_id: string; nonce: string }>("POST", "/v1/auth/challenge", {
      json: { client_id: this.clientId },
      auth: false,
    });
    const content = concat(opaque(utf8(this.domain)), opaque(utf8(this.clientId)), opaque(fromB64u(ch.nonce)));
    const signature = await sign(this.identity, "roost auth", content);
    const t = await this.api.json<{ token: string; expires_at: number }>("POST", "/v1/auth/token", {
      json: { challenge_id: ch.challenge_id, signature: b64u(signature) },
      auth: false,
    });
    this.api.token = t.token;
    this.onToken(t.token);
    clearTimeout(this.renewTimer);
    // A minute before it expires, or half-way through a short-lived one.
    const lifetime = t.expires_at - Date.now() / 1000;
    const inMs = Math.max(0.5, lifetime > 2 * RENEW_BEFORE_S ? lifetime - RENEW_BEFORE_S : lifetime / 2) * 1000;
    this.renewTimer = setTimeout(() => void this.renew(), inMs);
  }

  private async renew(): Promise<void> {
    try {
      await this.authenticate();
    } catch {
      this.renewTimer = setTimeout(() => void this.renew(), 5000);
    }
  }

  /** A fresh batch replaces all earlier packages of this client on the server. */
  async publishKeyPackages(): Promise<void> {
    const { held, body } = await keyPackageBatch(this.identity, KEY_PACKAGES);
    await this.api.request("POST", "/v1/keypackages", { body });
    this.keyPackages = held;
  }

  /** Forget a used KeyPackage's keys (the last-resort one is reusable, RFC 9420 section 16.8). */
  usedKeyPackage(k: HeldKeyPackage): void {
    if (!k.lastResort) this.keyPackages = this.keyPackages.filter((x) => x !== k);
  }

  close(): void {
    clearTimeout(this.renewTimer);
  }
}

export async function homeDomain(api: Api): Promise<string> {
  const d = await api.json<{ home_domain: string; cipher_suites: number[] }>("GET", "/.well-known/roost", { auth: false });
  if (!d.cipher_suites.includes(CIPHER_SUITE)) throw new ApiError(0, "unsupported_cipher_suite", "This server does not offer the cipher suite this page uses.");
  return d.home_domain;
}

/** A `ClientKey` with its proof of possession (docs/api.md, "Authentication"). */
export async function clientKey(key: SigningKey, domain: string, userId: string): Promise<object> {
  const content = concat(opaque(utf8(domain)), opaque(utf8(userId)), opaque(key.publicKey));
  const proof = await sign(key, "roost client key", content);
  return { cipher_suite: CIPHER_SUITE, signature_key: b64u(key.publicKey), proof: b64u(proof) };
}
