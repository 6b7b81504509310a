// The terminal console: a tty run's output drawn by xterm.js, its keystrokes sent back.
//
// A run with `tty: true` (docs/protocol.md) has one output stream, written as a terminal
// writes it (\r, cursor moves, colours), and a keyboard: what is typed here goes to the
// program as `stdin` (the terminal in the sandbox echoes it, so nothing is written here), and
// the size the fit addon gives the view is sent with `resize`. The xterm view is made the first
// time a tty run is shown, and kept. A run opened again (from the list, after a reload) is
// shown at the size its program started with (the execution's `cols` and `rows`), the size its
// output was written for, at most what the view holds: a wider one would be cut off.
//
// The page's CSP allows style elements only with its nonce: xterm adds three (its scrollbar,
// its cell size and its colours) with no way to pass one, so `withStyleNonce` gives every style
// element made on the page the nonce (web/build.mjs turns xterm's one style attribute into CSSOM).

import {FitAddon} from "@xterm/addon-fit";
import {Terminal} from "@xterm/xterm";
import "@xterm/xterm/css/xterm.css";

// Past this many lines above the screen the terminal forgets the oldest (the execution keeps all).
const SCROLLBACK_LINES = 5000;
const NOTE_COLOURS = {done: "32", failed: "31", error: "31", note: "2"};

export class TerminalConsole {
  /**
   * `element`: the container (hidden until a tty run is shown). `onData(text)`: keystrokes;
   * `onResize(cols, rows)`: the view's new size. `nonce`: the page's CSP style nonce.
   */
  constructor(element, {nonce, onData, onResize}) {
    this.element = element;
    this.nonce = nonce;
    this.onData = onData;
    this.onResize = onResize;
    this.terminal = null;
    this.fit = null;
    this.runSize = null; // {cols, rows}: the most the view takes (null: all the box holds)
  }

  get cols() {
    return this.terminal ? this.terminal.cols : 80;
  }

  get rows() {
    return this.terminal ? this.terminal.rows : 24;
  }

  /** Show the view (made on first use) and size it to its container. */
  show() {
    this.element.hidden = false;
    if (!this.terminal) this._open();
    this.resize();
  }

  hide() {
    this.element.hidden = true;
  }

  focus() {
    if (this.terminal) this.terminal.focus();
  }

  clear() {
    if (this.terminal) this.terminal.reset();
  }

  /** The program's output (one stream on a terminal), as it wrote it. */
  write(stream, text) {
    if (this.terminal && text) this.terminal.write(text);
  }

  /** A line of our own (the final status) below the output; the cursor goes (reset shows it). */
  note(text, kind = "note") {
    if (!this.terminal) return;
    const colour = NOTE_COLOURS[kind] || NOTE_COLOURS.note;
    const atLineStart = this.terminal.buffer.active.cursorX === 0;
    this.terminal.write(`${atLineStart ? "" : "\r\n"}\x1b[${colour}m${text}\x1b[0m\x1b[?25l`);
  }

  /** From now on, the view is at most `size` ({cols, rows}, a run's starting size), or fits its
   * box (null). */
  sizeAtMost(size) {
    this.runSize = size;
    this.resize();
  }

  /** Fit the view to its container, within `runSize` (no-op while hidden: a hidden box has no
   * size). */
  resize() {
    if (!this.fit || this.element.hidden) return;
    const size = this.fit.proposeDimensions();
    if (!size || !Number.isFinite(size.cols) || !Number.isFinite(size.rows)) return;
    const cols = this.runSize ? Math.min(size.cols, this.runSize.cols) : size.cols;
    const rows = this.runSize ? Math.min(size.rows, this.runSize.rows) : size.rows;
    if (cols === this.terminal.cols && rows === this.terminal.rows) return;
    this.terminal.resize(cols, rows);
  }

  /** The colours follow the page's theme (its CSS variables). */
  applyTheme() {
    if (!this.terminal) return;
    const style = getComputedStyle(this.element);
    const value = (name) => style.getPropertyValue(name).trim();
    this.terminal.options.theme = {
      background: value("--editor-bg"),
      foreground: value("--text"),
      cursor: value("--text"),
      selectionBackground: value("--selection"),
    };
  }

  _open() {
    withStyleNonce(this.nonce, () => {
      this.terminal = new Terminal({
        convertEol: false,
        cursorBlink: true,
        fontFamily: getComputedStyle(this.element).getPropertyValue("--mono").trim(),
        fontSize: 13,
        scrollback: SCROLLBACK_LINES,
      });
      this.fit = new FitAddon();
      this.terminal.loadAddon(this.fit);
      this.terminal.open(this.element);
    });
    this.applyTheme();
    this.terminal.onData((data) => this.onData(data));
    this.terminal.onResize(({cols, rows}) => {
      this._showSize();
      this.onResize(cols, rows);
    });
    this._showSize();
    new ResizeObserver(() => this.resize()).observe(this.element);
  }

  _showSize() {
    this.element.dataset.cols = String(this.terminal.cols);
    this.element.dataset.rows = String(this.terminal.rows);
  }
}

let styleNonce = "";

/** Run `make` with every style element the page creates given the nonce, now and later. */
function withStyleNonce(nonce, make) {
  if (!styleNonce) {
    // xterm makes some of its style elements later (on the first render, on a theme change):
    // the patch stays. It adds nothing a script of ours could not do: the nonce is in the page.
    const createElement = Document.prototype.createElement;
    Document.prototype.createElement = function (name, options) {
      const element = createElement.call(this, name, options);
      if (String(name).toLowerCase() === "style") element.setAttribute("nonce", styleNonce);
      return element;
    };
  }
  styleNonce = nonce;
  make();
}
