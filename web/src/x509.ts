// Just enough X.509 (RFC 5280) to check a Roost credential chain in the page: a DER reader,
// the fields a chain check needs, and the chain check itself (Ed25519 signatures only, the
// algorithm every Roost AS signs with). docs/api.md, "X.509 credential profile".
import { hex } from "./bytes.js";

const SEQUENCE = 0x30;
const OID_ED25519 = "2b6570"; // 1.3.101.112
const OID_BASIC_CONSTRAINTS = "551d13"; // 2.5.29.19
const OID_SAN = "551d11"; // 2.5.29.17
const URI_NAME = 0x86; // GeneralName uniformResourceIdentifier [6] IA5String

export class CertificateError extends Error {}

interface Tlv {
  tag: number;
  /** The whole element, tag and length included. */
  raw: Uint8Array;
  value: Uint8Array;
}

/** The DER elements one after another in `bytes`. */
function elements(bytes: Uint8Array): Tlv[] {
  const out: Tlv[] = [];
  let at = 0;
  while (at < bytes.length) {
    if (at + 2 > bytes.length) throw new CertificateError("truncated DER");
    const tag = bytes[at];
    let len = bytes[at + 1];
    let head = 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n === 0 || n > 3 || at + 2 + n > bytes.length) throw new CertificateError("bad DER length");
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + bytes[at + 2 + i];
      head += n;
    }
    if (at + head + len > bytes.length) throw new CertificateError("truncated DER");
    out.push({ tag, raw: bytes.subarray(at, at + head + len), value: bytes.subarray(at + head, at + head + len) });
    at += head + len;
  }
  return out;
}

function one(bytes: Uint8Array, tag: number): Tlv {
  const [e, ...rest] = elements(bytes);
  if (e === undefined || rest.length > 0 || e.tag !== tag) throw new CertificateError("unexpected DER structure");
  return e;
}

const ascii = (b: Uint8Array): string => String.fromCharCode(...b);

function time(t: Tlv): number {
  const s = ascii(t.value);
  const m = t.tag === 0x17 ? /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s) : /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s);
  if (m === null) throw new CertificateError("bad certificate time");
  let year = Number(m[1]);
  if (t.tag === 0x17) year += year < 50 ? 2000 : 1900; // RFC 5280 section 4.1.2.5.1
  return Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
}

/** The parts of a certificate the checks below read. */
export interface Certificate {
  der: Uint8Array;
  tbs: Uint8Array;
  signatureAlgorithm: string;
  signature: Uint8Array;
  issuer: string;
  subject: string;
  notBefore: number;
  notAfter: number;
  keyAlgorithm: string;
  publicKey: Uint8Array;
  isCa: boolean;
  uris: string[];
}

function algorithm(seq: Tlv): string {
  const [oid] = elements(seq.value);
  if (oid?.tag !== 0x06) throw new CertificateError("bad algorithm identifier");
  return hex(oid.value);
}

function bitString(t: Tlv): Uint8Array {
  if (t.tag !== 0x03 || t.value[0] !== 0) throw new CertificateError("bad bit string");
  return t.value.subarray(1);
}

export function parseCertificate(der: Uint8Array): Certificate {
  const [tbsEl, algEl, sigEl] = elements(one(der, SEQUENCE).value);
  if (tbsEl?.tag !== SEQUENCE || algEl === undefined || sigEl === undefined) throw new CertificateError("not a certificate");
  const fields = elements(tbsEl.value);
  let i = fields[0]?.tag === 0xa0 ? 1 : 0; // [0] version
  i += 2; // serial number, signature algorithm (the outer one is the one checked)
  const [issuer, validity, subject, spki] = fields.slice(i, i + 4);
  if (issuer === undefined || validity === undefined || subject === undefined || spki === undefined) {
    throw new CertificateError("truncated certificate");
  }
  const [notBefore, notAfter] = elements(validity.value);
  const [keyAlg, keyBits] = elements(spki.value);
  if (notBefore === undefined || notAfter === undefined || keyAlg === undefined || keyBits === undefined) {
    throw new CertificateError("truncated certificate");
  }
  const cert: Certificate = {
    der,
    tbs: tbsEl.raw,
    signatureAlgorithm: algorithm(algEl),
    signature: bitString(sigEl),
    issuer: hex(issuer.raw),
    subject: hex(subject.raw),
    notBefore: time(notBefore),
    notAfter: time(notAfter),
    keyAlgorithm: algorithm(keyAlg),
    publicKey: bitString(keyBits),
    isCa: false,
    uris: [],
  };
  const exts = fields.find((f) => f.tag === 0xa3); // [3] extensions
  for (const ext of exts === undefined ? [] : elements(one(exts.value, SEQUENCE).value)) {
    const parts = elements(ext.value);
    const id = parts[0];
    const value = parts[parts.length - 1];
    if (id?.tag !== 0x06 || value?.tag !== 0x04) throw new CertificateError("bad extension");
    const oid = hex(id.value);
    if (oid === OID_BASIC_CONSTRAINTS) {
      const first = elements(one(value.value, SEQUENCE).value)[0];
      cert.isCa = first?.tag === 0x01 && first.value[0] !== 0;
    } else if (oid === OID_SAN) {
      for (const name of elements(one(value.value, SEQUENCE).value)) {
        if (name.tag === URI_NAME) cert.uris.push(ascii(name.value));
      }
    }
  }
  return cert;
}

export type Verify = (publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array) => Promise<boolean>;

function checkValidity(cert: Certificate, now: number, what: string): void {
  if (now < cert.notBefore || now > cert.notAfter) throw new CertificateError(`the ${what} certificate is outside its validity window`);
}

/** Check a chain (leaf first) up to the AS certificate, as the Python client does
 * (roost.client.credentials.verify_chain); returns the verified leaf. */
export async function verifyChain(chain: Uint8Array[], asDer: Uint8Array, verify: Verify, now = Date.now()): Promise<Certificate> {
  if (chain.length === 0) throw new CertificateError("the certificate chain is empty");
  const root = parseCertificate(asDer);
  checkValidity(root, now, "AS");
  const certs = chain.map(parseCertificate);
  // A chain may end with the AS certificate itself; it adds nothing.
  if (certs.length > 1 && hex(certs[certs.length - 1].der) === hex(root.der)) certs.pop();
  for (const [i, cert] of certs.entries()) {
    const what = i === 0 ? "leaf" : `intermediate #${i}`;
    checkValidity(cert, now, what);
    const issuer = certs[i + 1] ?? root;
    if (!issuer.isCa) throw new CertificateError(`the issuer of the ${what} certificate is not a CA`);
    const signed =
      cert.issuer === issuer.subject &&
      cert.signatureAlgorithm === OID_ED25519 &&
      issuer.keyAlgorithm === OID_ED25519 &&
      (await verify(issuer.publicKey, cert.tbs, cert.signature));
    if (!signed) throw new CertificateError(`the ${what} certificate is not signed by its issuer`);
  }
  if (certs[0].isCa) throw new CertificateError("the leaf certificate is a CA");
  return certs[0];
}
