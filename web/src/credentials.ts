// Which credentials the page accepts (docs/api.md, "X.509 credential profile"), as the Python
// client does (roost.client.credential_policy, server_keys): a member's x509 chain must be
// issued by the AS of the domain in its client id and certify exactly its MLS signature key;
// a homeserver's external-sender chain must be issued by its domain's AS and name
// `roost:server:<domain>`. Our AS certificate is the one the server gave at registration;
// another domain's is fetched through our homeserver once per page load.
import type { AuthenticationService, Credential } from "ts-mls";

import { ApiError, seg, type Api } from "./api.js";
import { Reader, hex } from "./bytes.js";
import { suite } from "./mls.js";
import { parseCertificate, verifyChain } from "./x509.js";

const CLIENT_URI = "roost:client:";
const SERVER_URI = "roost:server:";

/** A credential the page will not accept; the message says whose and why, in words. */
export class CredentialRefused extends Error {}

export class Credentials {
  private readonly asCertificates = new Map<string, Promise<Uint8Array>>();
  /** Credentials already verified (leaf certificate and key): a check per message stays cheap. */
  private readonly verified = new Set<string>();

  constructor(
    private readonly api: Api,
    private readonly homeDomain: string,
    ownChain: Uint8Array[],
  ) {
    // Our credential is [leaf, AS]: the AS certificate our homeserver issued us under.
    const pinned = ownChain.length > 1 ? ownChain[ownChain.length - 1] : undefined;
    if (pinned !== undefined) this.asCertificates.set(homeDomain, Promise.resolve(pinned));
  }

  /** ts-mls's hook: every leaf joined, added or changed, and every external sender. */
  readonly authService: AuthenticationService = {
    validateCredential: async (credential: Credential, signatureKey: Uint8Array): Promise<boolean> => {
      await this.check(credential, signatureKey);
      return true;
    },
  };

  /** Accept a member (or, by its certificate's SAN, a homeserver listed as external sender),
   * or throw CredentialRefused. */
  async check(credential: Credential, signatureKey: Uint8Array): Promise<void> {
    if (credential.credentialType !== "x509" || credential.certificates.length === 0) {
      throw new CredentialRefused("A member's credential was refused: it is not an x509 certificate chain.");
    }
    const chain = credential.certificates;
    const memo = `${hex(chain[0])}/${hex(signatureKey)}`;
    if (this.verified.has(memo)) return;
    const named = namesIn(chain[0]);
    const who = named.client ?? (named.server === undefined ? "a member" : `the homeserver of ${named.server}`);
    const domain = named.client !== undefined ? domainOfClient(named.client) : named.server;
    try {
      if (domain === undefined || domain === "") throw new Error("its certificate names no single Roost client or homeserver");
      const leaf = await verifyChain(chain, await this.asCertificate(domain), await verifier());
      const uris = leaf.uris.filter((u) => u.startsWith(CLIENT_URI) || u.startsWith(SERVER_URI));
      if (uris.length !== 1) throw new Error("its certificate must name exactly one client or homeserver");
      if (hex(leaf.publicKey) !== hex(signatureKey)) throw new Error("its certificate certifies another key");
    } catch (e) {
      throw new CredentialRefused(`The credential of ${who} was refused: ${reason(e)}.`);
    }
    this.verified.add(memo);
  }

  /** A homeserver's ExternalSender entry (`signature_key`, then an x509 credential), checked
   * as issued by `domain`'s AS to that homeserver; returns its key. */
  async checkExternalSender(entry: Uint8Array, domain: string): Promise<Uint8Array> {
    const r = new Reader(entry);
    const key = r.opaque();
    const type = r.take(2);
    if (type[0] !== 0 || type[1] !== 2) throw new CredentialRefused(`The homeserver of ${domain} was refused: its credential is not x509.`);
    const list = new Reader(r.opaque());
    const certificates: Uint8Array[] = [];
    while (!list.done) certificates.push(list.opaque());
    if (namesIn(certificates[0] ?? new Uint8Array()).server !== domain) {
      throw new CredentialRefused(`The homeserver of ${domain} was refused: its certificate does not name it.`);
    }
    await this.check({ credentialType: "x509", certificates }, key);
    return key;
  }

  /** The AS certificate (DER) of `domain`: ours as pinned, another's through our homeserver. */
  private asCertificate(domain: string): Promise<Uint8Array> {
    let got = this.asCertificates.get(domain);
    if (got === undefined) {
      const path = domain === this.homeDomain ? "/v1/as/certificate" : `/v1/domains/${seg(domain)}/as-certificate`;
      got = this.api.bytes("GET", path).catch((e: unknown) => {
        this.asCertificates.delete(domain); // a failed fetch is tried again next time
        throw new Error(`the certificate of ${domain}'s authentication service could not be had (${reason(e)})`);
      });
      this.asCertificates.set(domain, got);
    }
    return got;
  }
}

let verifyPromise: Promise<(k: Uint8Array, m: Uint8Array, s: Uint8Array) => Promise<boolean>> | undefined;
function verifier(): Promise<(k: Uint8Array, m: Uint8Array, s: Uint8Array) => Promise<boolean>> {
  verifyPromise ??= suite().then((cs) => (k, m, s) => cs.signature.verify(k, m, s).catch(() => false));
  return verifyPromise;
}

const reason = (e: unknown): string => (e instanceof ApiError ? e.detail || e.code : e instanceof Error ? e.message : String(e)).replace(/\.$/, "");

/** The client id or homeserver domain a leaf certificate names (unverified: to pick the AS). */
function namesIn(der: Uint8Array): { client?: string; server?: string } {
  let uris: string[];
  try {
    uris = parseCertificate(der).uris;
  } catch {
    return {};
  }
  const clients = uris.filter((u) => u.startsWith(CLIENT_URI)).map((u) => u.slice(CLIENT_URI.length));
  const servers = uris.filter((u) => u.startsWith(SERVER_URI)).map((u) => u.slice(SERVER_URI.length));
  if (clients.length + servers.length !== 1) return {};
  return { client: clients[0], server: servers[0] };
}

/** `alice@example.org/…` → `example.org`. */
const domainOfClient = (clientId: string): string => clientId.split("/", 1)[0].split("@").pop() ?? "";
