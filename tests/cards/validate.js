// Parses every card JSON file given on the command line (or in target/cards) with the real Adaptive
// Cards parser and fails on any parse error or warning: unknown element types, invalid values, a
// version above what the host (Teams through Workflows: 1.4; 1.5 cards show an error box) supports.
"use strict";
const fs = require("fs");
const path = require("path");
const AC = require("adaptivecards/dist/adaptivecards.js");

const MAX_VERSION = new AC.Version(1, 4);

function cardFiles(args) {
  if (args.length > 0) return args;
  const dir = path.join(__dirname, "..", "..", "target", "cards");
  return fs.readdirSync(dir).filter((f) => f.endsWith(".json")).map((f) => path.join(dir, f));
}

function validate(file) {
  const json = JSON.parse(fs.readFileSync(file, "utf8"));
  const problems = [];
  const version = AC.Version.parse(json.version, new AC.SerializationContext());
  if (!version || !version.isValid || version.major !== 1 || version.minor > MAX_VERSION.minor) {
    problems.push(`version ${JSON.stringify(json.version)}: Workflows posts render up to 1.4`);
  }
  const context = new AC.SerializationContext(MAX_VERSION);
  const card = new AC.AdaptiveCard();
  card.parse(json, context);
  for (let i = 0; i < context.eventCount; i++) {
    const e = context.getEventAt(i);
    problems.push(`${AC.ValidationEvent[e.event]} (${e.phase === AC.ValidationPhase.Parse ? "parse" : "validation"}): ${e.message}`);
  }
  const report = card.validateProperties();
  for (const e of report.validationEvents) {
    problems.push(`${AC.ValidationEvent[e.event]} (validation): ${e.message}`);
  }
  return problems;
}

const files = cardFiles(process.argv.slice(2));
if (files.length === 0) {
  console.error("no card files: run `cargo test --test notify` first (it writes target/cards/*.json)");
  process.exit(2);
}
let failed = 0;
for (const file of files) {
  let problems;
  try {
    problems = validate(file);
  } catch (err) {
    problems = [`not readable: ${err.message}`];
  }
  if (problems.length) {
    failed++;
    console.log(`FAIL ${path.basename(file)}`);
    for (const p of problems) console.log(`  - ${p}`);
  } else {
    console.log(`ok   ${path.basename(file)}`);
  }
}
console.log(`${files.length - failed}/${files.length} cards parse with zero errors and warnings`);
process.exit(failed ? 1 : 0);
