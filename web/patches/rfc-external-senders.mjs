// Patch ts-mls 1.6.4 to read the external_senders extension as RFC 9420 section 12.1.8.1
// defines it: `ExternalSender external_senders<V>`, with Sender.sender_index indexing that
// vector. Upstream decodes each extension as ONE bare ExternalSender (docs/web.md), so without
// this a ts-mls client cannot even join a Roost group (every Roost group lists the homeserver
// in that extension) nor verify the homeserver's Remove proposals.
//
//   node rfc-external-senders.mjs [--into DIR] [--switch VAR]
//
// --into DIR: the package whose node_modules/ts-mls is patched (default: the web page's,
// ../ from here). --switch VAR: the RFC reading is on only in processes where the environment
// variable VAR is "1", else ts-mls behaves exactly as upstream (the interop tests keep pinning
// the upstream bug that way); without it the reading is always on (a browser has no
// environment to switch it with). Run by `npm ci` (postinstall) of web/ and of the ts-mls
// interop peer. Idempotent; refuses to touch an unexpected version.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: { into: { type: "string" }, switch: { type: "string" } },
});
const MARK = "/* roost-patch: rfc-external-senders */";
const into = args.into ? resolve(args.into) : join(dirname(fileURLToPath(import.meta.url)), "..");
const root = join(into, "node_modules", "ts-mls");
const src = join(root, "dist", "src");
if (args.switch !== undefined && !/^[A-Z_][A-Z0-9_]*$/.test(args.switch)) {
  console.error(`rfc-external-senders: --switch wants an environment variable name`);
  process.exit(2);
}
const readingOn =
  args.switch === undefined
    ? `/** roost patch: the RFC 9420 reading of external_senders is always on. */
export const roostRfcExternalSenders = () => true;`
    : `/** roost patch: is the RFC 9420 reading of external_senders switched on? */
export const roostRfcExternalSenders = () => globalThis.process?.env?.${args.switch} === "1";`;

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
      `${readingOn}
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
