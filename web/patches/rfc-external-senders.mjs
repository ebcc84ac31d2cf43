// Patch ts-mls 1.6.4 (installed in ../node_modules) to read the external_senders extension as
// RFC 9420 section 12.1.8.1 defines it: `ExternalSender external_senders<V>`, with
// Sender.sender_index indexing that vector. Upstream decodes each extension as ONE bare
// ExternalSender (docs/web.md), so without this the page cannot even join a Roost group: every
// Roost group lists the homeserver in that extension.
//
// The same edits as tests/interop/tsmls/patches/rfc-external-senders.mjs, except that the RFC
// reading is always on (a browser has no environment to switch it with). Run by `npm ci`
// (postinstall). Idempotent; refuses to touch an unexpected version.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const MARK = "/* roost-patch: rfc-external-senders */";
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "node_modules", "ts-mls");
const src = join(root, "dist", "src");

const version = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version;
if (version !== "1.6.4") {
  console.error(`rfc-external-senders: written for ts-mls 1.6.4, found ${version}; not patching`);
  process.exit(1);
}

function patch(file, edits) {
  const path = join(src, file);
  let text = readFileSync(path, "utf8");
  if (text.includes(MARK)) return false;
  for (const [from, to] of edits) {
    if (!text.includes(from)) throw new Error(`${file}: anchor not found: ${from.slice(0, 60)}`);
    text = text.replace(from, to);
  }
  writeFileSync(path, `${MARK}\n${text}`);
  return true;
}

const changed = [
  patch("externalSender.js", [
    [
      'import { decodeVarLenData, varLenDataEncoder } from "./codec/variableLength.js";',
      'import { decodeVarLenData, decodeVarLenType, varLenDataEncoder } from "./codec/variableLength.js";',
    ],
    [
      "//# sourceMappingURL=externalSender.js.map",
      `/** roost patch: the RFC 9420 reading of external_senders is always on in the browser. */
export const roostRfcExternalSenders = () => true;
/** roost patch: the whole extension data as \`ExternalSender external_senders<V>\` (or undefined). */
export function roostDecodeExternalSenders(data) {
    try {
        const d = decodeVarLenType(decodeExternalSender)(data, 0);
        return d !== undefined && d[1] === data.length ? d[0] : undefined;
    } catch {
        return undefined;
    }
}
//# sourceMappingURL=externalSender.js.map`,
    ],
  ]),
  patch("clientState.js", [
    [
      'import { decodeExternalSender } from "./externalSender.js";',
      'import { decodeExternalSender, roostDecodeExternalSenders, roostRfcExternalSenders } from "./externalSender.js";',
    ],
    [
      `    for (const externalSender of externalSenders) {
        const decoded = decodeExternalSender(externalSender.extensionData, 0);`,
      `    for (const externalSender of externalSenders) {
        if (roostRfcExternalSenders()) {
            const list = roostDecodeExternalSenders(externalSender.extensionData);
            if (list === undefined)
                return new CodecError("Could not decode external_senders");
            for (const s of list) {
                if (!(await authService.validateCredential(s.credential, s.signaturePublicKey)))
                    return new ValidationError("Could not validate external credential");
            }
            continue;
        }
        const decoded = decodeExternalSender(externalSender.extensionData, 0);`,
    ],
  ]),
  patch("publicMessage.js", [
    [
      'import { decodeExternalSender } from "./externalSender.js";',
      'import { decodeExternalSender, roostDecodeExternalSenders, roostRfcExternalSenders } from "./externalSender.js";',
    ],
    [
      `export function senderFromExtension(extensions, senderIndex) {`,
      `export function senderFromExtension(extensions, senderIndex) {
    if (roostRfcExternalSenders()) {
        const senders = extensions
            .filter((ex) => ex.extensionType === "external_senders")
            .flatMap((ex) => {
                const list = roostDecodeExternalSenders(ex.extensionData);
                if (list === undefined)
                    throw new CodecError("Could not decode external_senders");
                return list;
            });
        return senders[senderIndex];
    }`,
    ],
  ]),
];
console.log(changed.some(Boolean) ? "rfc-external-senders: ts-mls patched" : "rfc-external-senders: already patched");
