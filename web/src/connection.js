// One WebSocket to /ws that outlives dropped connections (README, "WebSocket /ws").
//
// request(message) sends it with a fresh `ref` and resolves with the reply that echoes the ref
// (created, opened, saved, queued, unsubscribed, pong), or rejects with the `error` event that
// does, or with {code: "disconnected"} when the socket closes first. send(message) expects no
// reply: an error echoing its ref goes to its onError. Every other event goes to the handlers
// registered with on(type). After a drop the socket reconnects with a growing delay and calls
// the onOpen handlers, which open their session and subscribe again with `since`.
//
// With an API key (web/src/apikey.js) the socket's first message is {type: "auth", token}, and
// it counts as open once `authenticated` comes back. A refused key (or none where one is needed)
// closes the socket with 4401: then it waits, without retrying, until restart() (a new key).

const FIRST_RETRY_MS = 250;
const LAST_RETRY_MS = 5000;
// How long to remember the ref of a message that gets no reply unless it fails.
const SILENT_REF_MS = 30000;
// The server's close code for a missing or refused key (docs/protocol.md, "Close codes").
const CLOSE_UNAUTHORIZED = 4401;

export class Connection {
  constructor(url, apiKey) {
    this.url = url;
    this.apiKey = apiKey;
    this.socket = null;
    this.isOpen = false;
    this.refs = 0;
    this.pending = new Map(); // ref -> {resolve, reject}
    this.handlers = new Map(); // event type -> [handler]
    this.openHandlers = [];
    this.stateHandlers = [];
    this.retryMs = FIRST_RETRY_MS;
    this.retryTimer = 0;
    this.wasOpen = false;
    this.state = "connecting";
    this.refusal = null; // the last `unauthorized` error of the current socket
  }

  start() {
    this._connect();
    // Back from sleep or offline: try at once rather than after the current delay.
    const retryNow = () => {
      if (!this.isOpen && this.retryTimer) {
        clearTimeout(this.retryTimer);
        this.retryTimer = 0;
        this._connect();
      }
    };
    window.addEventListener("online", retryNow);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") retryNow();
    });
  }

  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(handler);
  }

  /** handler(isReconnect) runs each time the socket opens: false the first time. */
  onOpen(handler) {
    this.openHandlers.push(handler);
  }

  /** handler(state) with state "connecting", "open", "offline" or "unauthorized". */
  onState(handler) {
    this.stateHandlers.push(handler);
  }

  request(message) {
    if (!this.isOpen) return Promise.reject(this._notOpen());
    const ref = this._ref();
    return new Promise((resolve, reject) => {
      this.pending.set(ref, {resolve, reject});
      this.socket.send(JSON.stringify({...message, ref}));
    });
  }

  send(message, onError = null) {
    if (!this.isOpen) {
      if (onError) onError(this._notOpen());
      return false;
    }
    const ref = this._ref();
    if (onError) {
      const forget = setTimeout(() => this.pending.delete(ref), SILENT_REF_MS);
      this.pending.set(ref, {
        resolve: () => clearTimeout(forget),
        reject: (error) => {
          clearTimeout(forget);
          onError(error);
        },
      });
    }
    this.socket.send(JSON.stringify({...message, ref}));
    return true;
  }

  /** The server needs a key this page lacks: close, and send nothing until restart(). */
  suspend() {
    clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    const socket = this.socket;
    this.socket = null;
    this._lost(needsKey());
    this._setState("unauthorized");
    if (socket) socket.close();
  }

  /** Connect again at once, with the key now in use; the onOpen handlers run as after a drop. */
  restart() {
    clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    const socket = this.socket;
    this.socket = null;
    this._lost({code: "disconnected", message: "connection restarted"});
    if (socket) socket.close();
    this._connect();
  }

  _ref() {
    this.refs += 1;
    return `p${this.refs}`;
  }

  _connect() {
    this.retryTimer = 0;
    this.refusal = null;
    this._setState("connecting");
    const socket = new WebSocket(this.url);
    this.socket = socket;
    const token = this.apiKey.value;
    socket.addEventListener("open", () => {
      if (this.socket !== socket) return;
      if (!token) {
        this._opened();
        return;
      }
      // The key first: a refusal is an error echoing this ref, then close code 4401.
      const ref = this._ref();
      this.pending.set(ref, {resolve: () => this._opened(), reject: () => {}});
      socket.send(JSON.stringify({type: "auth", token, ref}));
    });
    socket.addEventListener("message", (message) => {
      if (this.socket === socket) this._receive(message.data);
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return;
      if (event.code === CLOSE_UNAUTHORIZED) {
        this._lost(needsKey());
        this._setState("unauthorized");
        const message = this.refusal ? this.refusal.message : "unauthorized";
        this.apiKey.refused(token, message);
        return;
      }
      this._lost({code: "disconnected", message: "connection lost"});
      this._setState("offline");
      // Jittered, growing delay: a restarted server is not met by every page at once.
      const delay = this.retryMs * (0.75 + Math.random() / 2);
      this.retryMs = Math.min(this.retryMs * 2, LAST_RETRY_MS);
      this.retryTimer = setTimeout(() => this._connect(), delay);
    });
  }

  _opened() {
    this.isOpen = true;
    this.retryMs = FIRST_RETRY_MS;
    this._setState("open");
    const isReconnect = this.wasOpen;
    this.wasOpen = true;
    for (const handler of this.openHandlers) handler(isReconnect);
  }

  /** Not open any more: every request waiting for an answer fails with `error`. */
  _lost(error) {
    this.isOpen = false;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const {reject} of pending) reject(error);
  }

  _notOpen() {
    return this.state === "unauthorized" ? needsKey() : offline();
  }

  _receive(text) {
    let event;
    try {
      event = JSON.parse(text);
    } catch {
      return;
    }
    if (event.type === "error" && event.code === "unauthorized") this.refusal = event;
    if (event.ref !== undefined && this.pending.has(event.ref)) {
      const {resolve, reject} = this.pending.get(event.ref);
      this.pending.delete(event.ref);
      if (event.type === "error") reject(event);
      else resolve(event);
      return;
    }
    for (const handler of this.handlers.get(event.type) || []) handler(event);
  }

  _setState(state) {
    this.state = state;
    for (const handler of this.stateHandlers) handler(state);
  }
}

function needsKey() {
  return {code: "unauthorized", message: "this server needs an API key"};
}

function offline() {
  return {code: "disconnected", message: "not connected to the server"};
}
