// Validates an AsyncAPI document with the official parser (tests/typescript.rs):
//   node validate_asyncapi.mjs <document.json>
// The parser is looked up from $ASYNCAPI_PARSER_PREFIX (an npm prefix holding @asyncapi/parser).
// Prints every diagnostic and exits with 1 when any is an error.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const prefix = process.env.ASYNCAPI_PARSER_PREFIX;
const require = createRequire(join(prefix, "package.json"));
const { Parser } = require("@asyncapi/parser");
const severities = ["error", "warning", "info", "hint"];
const diagnostics = await new Parser().validate(readFileSync(process.argv[2], "utf8"));
for (const d of diagnostics) {
  console.log(`${severities[d.severity]} ${d.code} at ${JSON.stringify(d.path)}: ${d.message}`);
}
const errors = diagnostics.filter((d) => d.severity === 0).length;
console.log(`${errors} errors, ${diagnostics.length - errors} other diagnostics`);
process.exit(errors === 0 ? 0 : 1);
