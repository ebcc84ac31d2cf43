// Builds the page into ../src/roost/web/static (index.html, app.js, sw.js, app.css, favicon.svg), deterministically:
// the same sources and node_modules always give the same bytes (tests/web checks the committed
// bundle against a fresh build). Usage: `npm ci && npm run build` in web/.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, "..", "src", "roost", "web", "static");
mkdirSync(out, { recursive: true });

// What the page's script and its service worker are both built with.
const common = {
  bundle: true,
  format: "iife",
  platform: "browser",
  target: "es2022",
  minify: true,
  sourcemap: false,
  charset: "utf8",
  logLevel: "warning",
};
await build({
  ...common,
  entryPoints: [join(here, "src", "main.ts")],
  outfile: join(out, "app.js"),
  legalComments: "eof",
  // ts-mls loads these only for cipher suites other than 1 (optional peer dependencies, not
  // installed): they stay out of the bundle.
  external: ["@noble/curves/*", "@noble/post-quantum/*", "@hpke/dhkem-x448", "@hpke/ml-kem", "@hpke/hybridkem-x-wing", "@hpke/chacha20poly1305"],
});
// The service worker is a script of its own, served as /sw.js so that its scope is the whole page.
await build({ ...common, entryPoints: [join(here, "src", "sw.ts")], outfile: join(out, "sw.js") });
for (const name of ["index.html", "app.css", "favicon.svg"]) copyFileSync(join(here, name), join(out, name));
