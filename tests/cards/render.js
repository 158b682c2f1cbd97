// Renders cards to PNG in headless Chromium, the way a reader of the README should see them.
// Usage: node render.js OUT_DIR CARD.json...   (CHROMIUM overrides the browser binary)
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const { execFileSync } = require("child_process");

const [outDir, ...cards] = process.argv.slice(2);
if (!outDir || cards.length === 0) {
  console.error("usage: node render.js OUT_DIR CARD.json...");
  process.exit(2);
}
const chromium = process.env.CHROMIUM || "chromium";
const here = __dirname;
const hostConfig = fs.readFileSync(path.join(here, "teams-host-config.json"), "utf8");
const work = fs.mkdtempSync(path.join(os.tmpdir(), "secmon-cards-"));
fs.mkdirSync(outDir, { recursive: true });

for (const file of cards) {
  const name = path.basename(file, ".json");
  // Alert text may hold "</script>": keep it from closing the page's script element.
  const card = JSON.stringify(JSON.parse(fs.readFileSync(file, "utf8"))).replace(/</g, "\\u003c");
  // Everything the page needs is local: no network, no remote fonts or images.
  const page = `<!DOCTYPE html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="file://${here}/node_modules/adaptivecards/dist/adaptivecards.css">
<style>body{margin:0;padding:16px;background:#ebebeb;font-family:'Segoe UI',Arial,sans-serif}
#card{width:520px;background:#fff;border-radius:6px;box-shadow:0 1px 3px rgba(0,0,0,.2);overflow:hidden}
.ac-pushButton{border:1px solid #d1d1d1;background:#fff;border-radius:4px;padding:6px 12px;font-weight:600;color:#242424}</style>
<script src="file://${here}/node_modules/markdown-it/dist/markdown-it.min.js"></script>
<script src="file://${here}/node_modules/adaptivecards/dist/adaptivecards.js"></script>
</head><body><div id="card"></div><script>
const md = window.markdownit();
AdaptiveCards.AdaptiveCard.onProcessMarkdown = (text, result) => { result.outputHtml = md.render(text); result.didProcess = true; };
const card = new AdaptiveCards.AdaptiveCard();
card.hostConfig = new AdaptiveCards.HostConfig(${hostConfig});
card.parse(${card});
document.getElementById("card").appendChild(card.render());
</script></body></html>`;
  const html = path.join(work, `${name}.html`);
  fs.writeFileSync(html, page);
  const png = path.join(outDir, `${name}.png`);
  execFileSync(chromium, [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--allow-file-access-from-files", `--user-data-dir=${path.join(work, "profile")}`,
    "--hide-scrollbars", "--window-size=552,760", "--virtual-time-budget=3000", `--screenshot=${png}`, `file://${html}`,
  ], { stdio: ["ignore", "ignore", "pipe"], timeout: 60000 });
  console.log(`rendered ${png}`);
}
fs.rmSync(work, { recursive: true, force: true });
