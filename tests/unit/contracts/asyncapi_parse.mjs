// Parse an AsyncAPI document with the official parser (@asyncapi/parser), as AsyncAPI tools do.
// Usage: node asyncapi_parse.mjs <folder holding node_modules/@asyncapi/parser> <asyncapi.yaml>
// Prints every diagnostic; exits 1 if the parser reports an error (severity 0) or builds no document.
import { createRequire } from "node:module";
import path from "node:path";

const [modules, file] = process.argv.slice(2);
const require = createRequire(path.join(path.resolve(modules), "package.json"));
const { Parser, fromFile } = require("@asyncapi/parser");

const { document, diagnostics } = await fromFile(new Parser(), path.resolve(file)).parse();
const severities = ["error", "warning", "info", "hint"];
for (const d of diagnostics) {
  console.log(`${severities[d.severity] ?? d.severity} ${d.code} at /${d.path.join("/")}: ${d.message}`);
}
const failed = !document || diagnostics.some((d) => d.severity === 0);
console.log(failed ? "AsyncAPI document INVALID" : "AsyncAPI document valid");
process.exit(failed ? 1 : 0);
