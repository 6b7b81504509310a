// The console: output chunks, told apart by stream, rendered at most once per animation frame.
//
// A program may send thousands of small chunks a second. Chunks wait in `pending`; each frame
// appends them (consecutive chunks of one stream joined into one text node) and scrolls once,
// only if the reader was at the bottom. The text goes into blocks of about BLOCK_CHARS, each
// closed at the end of a line, so a frame lays out only the last block, not all the output.
// Measured with 100 KB in 10,000 chunks (tests/browser/test_run.py): an element per chunk gave
// a 250 ms long task, one growing text node 98 ms, blocks none over 50 ms.

// Past this many characters the console stops showing more (the execution keeps all of it).
const MAX_CHARS = 4 << 20;
const BLOCK_CHARS = 4096;

export class Console {
  constructor(element) {
    this.element = element;
    this.pending = [];
    this.frame = 0;
    this._reset();
  }

  clear() {
    this.pending = [];
    this.element.replaceChildren();
    this._reset();
  }

  /** Append text of `stream` (stdout, stderr, compile, stdin) on the next frame. */
  write(stream, text) {
    if (!text) return;
    this.pending.push([stream, text]);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  /** A line of our own (a note or the final status) below the output, after what is pending. */
  note(text, kind = "note") {
    this.pending.push([null, text, kind]);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    if (!this.pending.length) return;
    const element = this.element;
    const atBottom = element.scrollHeight - element.scrollTop - element.clientHeight < 8;
    for (const [stream, text, kind] of this.pending) {
      if (stream === null) {
        this._line(text, kind);
      } else if (!this.isCut) {
        this._append(stream, text);
      }
    }
    this.pending = [];
    if (atBottom) element.scrollTop = element.scrollHeight;
  }

  _append(stream, text) {
    let part = text;
    if (this.chars + part.length > MAX_CHARS) {
      part = part.slice(0, MAX_CHARS - this.chars);
      this.isCut = true;
    }
    this.chars += part.length;
    // Chunks can be of any size (a fast program's output is read 64 KB at a time) and need
    // not end at a line's end: cut them at the first line's end past each block's size.
    while (part) {
      const end = part.indexOf("\n", Math.max(0, BLOCK_CHARS - this.blockChars - 1)) + 1;
      if (end === 0) {
        this._put(stream, part);
        break;
      }
      this._put(stream, part.slice(0, end));
      part = part.slice(end);
    }
    if (this.isCut) this._line(`(the console shows the first ${MAX_CHARS} characters)`, "note");
  }

  _put(stream, text) {
    if (!this.block) {
      this.block = document.createElement("div");
      this.block.className = "out-block";
      this.element.append(this.block);
      this.blockChars = 0;
    }
    if (this.span && this.span.dataset.stream === stream) {
      this.span.firstChild.appendData(text);
    } else {
      this.span = document.createElement("span");
      this.span.className = `out-${stream}`;
      this.span.dataset.stream = stream;
      this.span.append(document.createTextNode(text));
      this.block.append(this.span);
    }
    this.blockChars += text.length;
    if (this.blockChars >= BLOCK_CHARS && text.endsWith("\n")) this._closeBlock();
  }

  _line(text, kind) {
    const line = document.createElement("div");
    line.className = `out-${kind}`;
    line.textContent = text;
    this.element.append(line);
    this._closeBlock();
  }

  _closeBlock() {
    this.block = null;
    this.span = null;
    this.blockChars = 0;
  }

  _reset() {
    this.chars = 0;
    this.isCut = false;
    this._closeBlock();
  }
}
