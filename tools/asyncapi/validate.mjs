// Validate an AsyncAPI document with the official parser: `node validate.mjs docs/asyncapi.yaml`.
// Prints every diagnostic as one JSON line; exits 1 when any is an error (severity 0).
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const path = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(path, "utf8"), { source: path });
for (const d of diagnostics) {
  console.log(JSON.stringify({ severity: d.severity, code: d.code, message: d.message, path: d.path.join(".") }));
}
const errors = diagnostics.filter((d) => d.severity === 0);
if (document === undefined || errors.length > 0) {
  console.error(`${path}: ${errors.length} error(s)`);
  process.exit(1);
}
console.error(`${path}: valid AsyncAPI ${document.version()} (${document.channels().length} channels)`);
