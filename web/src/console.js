// The console: output chunks, told apart by stream, rendered at most once per animation frame.
//
// A program may send thousands of small chunks a second; touching the DOM for each froze the
// page. Chunks wait in `pending` and each frame appends them, consecutive chunks of one stream
// joined into one text node, and scrolls once (only if the reader was at the bottom).

// Past this many characters the console stops showing more (the execution keeps all of it).
const MAX_CHARS = 4 << 20;

export class Console {
  constructor(element) {
    this.element = element;
    this.pending = [];
    this.frame = 0;
    this.chars = 0;
    this.lastSpan = null;
    this.isCut = false;
  }

  clear() {
    this.pending = [];
    this.element.replaceChildren();
    this.chars = 0;
    this.lastSpan = null;
    this.isCut = false;
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
    const fragment = document.createDocumentFragment();
    for (const [stream, text, kind] of this.pending) {
      if (stream === null) {
        const line = document.createElement("div");
        line.className = `out-${kind}`;
        line.textContent = text;
        fragment.append(line);
        this.lastSpan = null;
        continue;
      }
      if (this.isCut) continue;
      let part = text;
      if (this.chars + part.length > MAX_CHARS) {
        part = part.slice(0, MAX_CHARS - this.chars);
        this.isCut = true;
      }
      this.chars += part.length;
      if (this.lastSpan && this.lastSpan.dataset.stream === stream) {
        this.lastSpan.firstChild.appendData(part);
      } else {
        const span = document.createElement("span");
        span.className = `out-${stream}`;
        span.dataset.stream = stream;
        span.append(document.createTextNode(part));
        fragment.append(span);
        this.lastSpan = span;
      }
      if (this.isCut) {
        const line = document.createElement("div");
        line.className = "out-note";
        line.textContent = `(the console shows the first ${MAX_CHARS} characters)`;
        fragment.append(line);
        this.lastSpan = null;
      }
    }
    this.pending = [];
    element.append(fragment);
    if (atBottom) element.scrollTop = element.scrollHeight;
  }
}
