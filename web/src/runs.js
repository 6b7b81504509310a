// Executions: run the session, follow the shown execution's events into the console, stop it,
// feed an interactive one, resume after a reconnect, and list the session's past executions.
// A tty execution's console is the terminal (web/src/terminal.js): keystrokes are its stdin,
// and its size is the run's `cols` and `rows` (the program starts with it), then sent with
// `resize` whenever it changes. A tty execution opened again is shown at most at the size its
// program started with (the execution's `cols` and `rows`).
//
// The shown execution's events (README, "WebSocket /ws"): status, output {stream, seq, data}
// with seq 1, 2, ... and finished. `lastSeq` is the last output shown: a resumed follow
// (`subscribe {since: lastSeq}`) continues after it, and any output at or below it is a
// repeat and dropped, so nothing is lost or shown twice.

const HISTORY_SIZE = 20;
const RESUBSCRIBE_MS = 1000;

export class Runs {
  constructor(connection, apiKey, session, {text, terminal}, elements, {onState, onShown}) {
    this.connection = connection;
    this.apiKey = apiKey; // REST calls carry it
    this.session = session;
    this.text = text; // the console of other executions (web/src/console.js)
    this.terminal = terminal;
    this.el = elements;
    this.onState = onState; // (label, kind) => void: the run's state for the status element
    this.onShown = onShown; // (executionId, isNew) => void: which execution the console shows
    this.shown = null; // {id, lastSeq, attempt, status, interactive, tty, isFinal}
    this.isStarting = false;
    connection.on("status", (event) => this._status(event));
    connection.on("output", (event) => this._output(event));
    connection.on("finished", (event) => this._finished(event));
    connection.on("error", (event) => this._error(event));
  }

  /** Where the shown execution's output goes: the terminal for a tty one. */
  get console() {
    return this.shown && this.shown.tty ? this.terminal : this.text;
  }

  get isLive() {
    return this.isStarting || (this.shown !== null && !this.shown.isFinal);
  }

  async run() {
    if (this.isLive) return;
    this.isStarting = true;
    this._buttons();
    this.onState("Saving…", "busy");
    try {
      await this.session.save();
      const tty = this.el.tty.checked;
      const interactive = this.el.interactive.checked || tty; // a terminal's stdin stays open
      const message = {type: "run", session_id: this.session.id, interactive};
      if (tty) {
        // The program starts with the view's size: the terminal is shown (and fitted) first.
        this.terminal.sizeAtMost(null);
        this._showConsole(true);
        Object.assign(message, {tty: true, cols: this.terminal.cols, rows: this.terminal.rows});
      }
      if (this.el.stdin.value) message.stdin = this.el.stdin.value;
      this.onState("Queued", "busy");
      let reply;
      try {
        reply = await this.connection.request(message);
      } catch (error) {
        this._showConsole(); // the shown execution's again
        throw error;
      }
      this._show(reply.execution_id, {interactive, tty, size: null, follow: false});
      this.shown.status = reply.status;
      // Resized while the run was on its way (its resizes were not this run's yet).
      if (tty && (this.terminal.cols !== message.cols || this.terminal.rows !== message.rows)) {
        this.resized(this.terminal.cols, this.terminal.rows);
      }
      this.refreshHistory();
    } catch (error) {
      this.onState(describeError(error), "bad");
    } finally {
      this.isStarting = false;
      this._buttons();
    }
  }

  stop() {
    if (!this.shown || this.shown.isFinal) return;
    this.el.stop.disabled = true;
    this.onState("Stopping…", "busy");
    this.connection.send({type: "cancel", execution_id: this.shown.id}, (error) =>
      this.onState(describeError(error), "bad"),
    );
  }

  /** Show an execution (its JSON, or just {execution_id}) from the start: its events
   * replayed, then live if it still runs. */
  open(execution) {
    this._show(execution.execution_id, {
      interactive: Boolean(execution.interactive),
      tty: Boolean(execution.tty),
      size: startingSize(execution),
      follow: true,
    });
  }

  /** Show nothing (a new session). */
  reset() {
    if (this.shown && !this.shown.isFinal) {
      this.connection.send({type: "unsubscribe", execution_id: this.shown.id});
    }
    this.shown = null;
    this._showConsole();
    this.console.clear();
    this.el.runs.replaceChildren();
    this.onState("Ready", "idle");
    this._buttons();
  }

  /** Send a line (or end of input) to the shown interactive execution. */
  sendLine(text, eof = false) {
    if (!this.shown || this.shown.isFinal) return;
    const data = eof ? text : `${text}\n`;
    if (data) this.console.write("stdin", data);
    this.connection.send({type: "stdin", execution_id: this.shown.id, data, eof}, (error) =>
      this.console.note(`input not delivered: ${describeError(error)}`, "error"),
    );
  }

  /** Keystrokes typed into the terminal of the shown tty execution (its terminal echoes them). */
  sendKeys(data) {
    const shown = this.shown;
    if (!shown || shown.isFinal || !shown.tty) return;
    this.connection.send({type: "stdin", execution_id: shown.id, data}, (error) => {
      if (this.shown === shown && !shown.isFinal) {
        this.console.note(`input not delivered: ${describeError(error)}`, "error");
      }
    });
  }

  /** The terminal's new size, for the shown tty execution while it runs. */
  resized(cols, rows) {
    const shown = this.shown;
    if (!shown || shown.isFinal || !shown.tty) return;
    // A conflict (it finished meanwhile) needs no word: the finished event follows.
    this.connection.send({type: "resize", execution_id: shown.id, cols, rows}, () => {});
  }

  /** After a reconnect: go on following the shown execution after the last output shown. */
  reconnected() {
    if (this.shown && !this.shown.isFinal) this._subscribe();
  }

  async refreshHistory() {
    const sessionId = this.session.id;
    if (!sessionId) {
      this.el.runs.replaceChildren();
      return [];
    }
    let executions;
    try {
      const response = await this.apiKey.fetch(
        `/executions/session/${encodeURIComponent(sessionId)}?limit=${HISTORY_SIZE}`,
      );
      if (!response.ok) return [];
      executions = await response.json();
    } catch {
      return [];
    }
    if (sessionId !== this.session.id) return [];
    this.el.runs.replaceChildren(...executions.map((execution) => this._historyItem(execution)));
    return executions;
  }

  _historyItem(execution) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "run-item";
    button.dataset.executionId = execution.execution_id;
    button.dataset.status = execution.status;
    if (this.shown && this.shown.id === execution.execution_id) {
      button.setAttribute("aria-current", "true");
    }
    const when = new Date(execution.queued_at || execution.created_at);
    const status = document.createElement("span");
    status.className = "run-status";
    status.textContent = execution.status;
    const detail = document.createElement("span");
    detail.className = "run-detail";
    detail.textContent = [
      execution.exit_code !== undefined ? `exit ${execution.exit_code}` : null,
      execution.execution_time_ms !== undefined ? `${execution.execution_time_ms} ms` : null,
      Number.isNaN(when.getTime()) ? null : when.toLocaleTimeString(),
    ]
      .filter(Boolean)
      .join(" · ");
    button.append(status, detail);
    button.addEventListener("click", () => this.open(execution));
    item.append(button);
    return item;
  }

  _show(executionId, {interactive, tty, size, follow}) {
    const previous = this.shown;
    if (previous && previous.id !== executionId && !previous.isFinal) {
      this.connection.send({type: "unsubscribe", execution_id: previous.id});
    }
    this.shown = {id: executionId, lastSeq: 0, attempt: 0, interactive, tty, isFinal: false};
    if (tty) this.terminal.sizeAtMost(size);
    this._showConsole();
    this.console.clear();
    this.onShown(executionId, !follow);
    for (const button of this.el.runs.querySelectorAll(".run-item")) {
      button.toggleAttribute("aria-current", button.dataset.executionId === executionId);
    }
    this.onState(follow ? "Loading…" : "Queued", "busy");
    if (follow) this._subscribe();
    this._buttons();
  }

  _subscribe() {
    const shown = this.shown;
    this.connection.send(
      {type: "subscribe", execution_id: shown.id, since: shown.lastSeq},
      (error) => {
        if (this.shown !== shown) return;
        if (error.code === "disconnected") return; // the reconnect subscribes again
        this.onState(describeError(error), "bad");
        shown.isFinal = true;
        this._buttons();
      },
    );
  }

  _status(event) {
    const shown = this.shown;
    if (!shown || event.execution_id !== shown.id || shown.isFinal) return;
    if (event.status === "RUNNING" && event.attempt > shown.attempt) {
      if (shown.attempt > 0) {
        // A retry: the stored output is the last attempt's, so the console starts over too.
        this.console.clear();
        this.console.note(`attempt ${event.attempt} (the previous one was interrupted)`);
      }
      shown.attempt = event.attempt;
    }
    shown.status = event.status;
    if (event.status === "RUNNING") {
      this.onState(event.attempt > 1 ? `Running (attempt ${event.attempt})` : "Running", "busy");
      if (shown.tty) this.terminal.focus();
      else if (shown.interactive) this.el.line.focus();
    } else if (event.status === "QUEUED") {
      this.onState("Queued", "busy");
    }
    this._buttons();
  }

  _output(event) {
    const shown = this.shown;
    if (!shown || event.execution_id !== shown.id) return;
    if (event.seq <= shown.lastSeq) return; // a repeat after a resumed follow
    shown.lastSeq = event.seq;
    this.console.write(event.stream, event.data);
  }

  _finished(event) {
    const shown = this.shown;
    if (!shown || event.execution_id !== shown.id || shown.isFinal) return;
    shown.isFinal = true;
    shown.status = event.status;
    shown.interactive = Boolean(event.interactive);
    const summary = describeExecution(event);
    this.console.note(summary, event.status === "COMPLETED" ? "done" : "failed");
    this.onState(summary, event.status === "COMPLETED" ? "ok" : "bad");
    this._buttons();
    this.refreshHistory();
  }

  _error(event) {
    const shown = this.shown;
    // Errors that answer a message carry its ref and reach whoever sent it; session errors
    // are the session's.
    if (!shown || shown.isFinal || event.session_id || event.ref !== undefined) return;
    if (event.execution_id && event.execution_id !== shown.id) return;
    // The follow ended early (the server is stopping, or lost the stream): pick it up again.
    if (event.code === "unavailable" || event.execution_id) {
      setTimeout(() => {
        if (this.shown === shown && !shown.isFinal && this.connection.isOpen) this._subscribe();
      }, RESUBSCRIBE_MS);
    } else {
      this.console.note(describeError(event), "error");
    }
  }

  /** Show the shown execution's console (the terminal for a tty one), or the one asked for. */
  _showConsole(tty = Boolean(this.shown && this.shown.tty)) {
    this.el.output.hidden = tty;
    if (tty) this.terminal.show();
    else this.terminal.hide();
  }

  _buttons() {
    const live = this.isLive;
    this.el.run.disabled = live;
    this.el.stop.disabled = !(this.shown && !this.shown.isFinal);
    // A terminal takes keystrokes itself: no line field.
    const shown = this.shown;
    const interactive = Boolean(shown && !shown.isFinal && shown.interactive && !shown.tty);
    if (this.el.lineForm.hidden === interactive) {
      this.el.lineForm.hidden = !interactive;
      if (interactive) this.el.line.focus();
    }
  }
}

/** The size a tty execution's program started with, {cols, rows}; null when it does not say. */
function startingSize(execution) {
  const {cols, rows} = execution;
  return Number.isInteger(cols) && Number.isInteger(rows) ? {cols, rows} : null;
}

/** The final line: status, reason, exit code, time and memory. */
export function describeExecution(execution) {
  const parts = [execution.status];
  const reason = execution.reason;
  if (reason && reason !== "exit" && reason !== execution.status.toLowerCase()) {
    parts.push(reason.replace(/_/g, " ")); // not "TIMEOUT · timeout"
  }
  if (execution.exit_code !== undefined && execution.exit_code !== null) {
    parts.push(`exit ${execution.exit_code}`);
  }
  if (execution.signal) parts.push(`signal ${execution.signal}`);
  if (execution.execution_time_ms !== undefined) parts.push(`${execution.execution_time_ms} ms`);
  if (execution.memory_kb !== undefined) parts.push(formatMemory(execution.memory_kb));
  if (execution.stdout_truncated || execution.stderr_truncated) parts.push("output truncated");
  const error = execution.error;
  if (error && error.toLowerCase() !== execution.status.toLowerCase()) parts.push(error);
  return parts.join(" · ");
}

export function describeError(error) {
  if (!error) return "error";
  if (error.code === "rate_limited" && error.retry_after) {
    return `${error.message} (try again in ${Math.ceil(error.retry_after)} s)`;
  }
  if (error.code === "disconnected") return "Not connected: retrying…";
  if (error.code === "unauthorized") return "API key needed";
  return error.message || error.code || String(error);
}

function formatMemory(kb) {
  return kb >= 1024 ? `${(kb / 1024).toFixed(1)} MB` : `${kb} KB`;
}
