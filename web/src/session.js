// The code session in the editor: created on the first edit or run, autosaved as you type,
// followed live (another tab's saves arrive as `session.updated`), reconciled after a reconnect.
//
// Save states, shown beside the buttons: draft (no session yet), dirty (edits not yet sent),
// saving, saved (version N), offline (edits wait for the connection), conflict (the session
// changed elsewhere while this tab had unsaved edits: the person picks theirs or mine).

const SAVE_DELAY_MS = 300; // after the last keystroke
const SAVE_MAX_DELAY_MS = 2000; // while typing without a pause

export class SessionState {
  constructor(connection, editor, {onChange, onOpened, onError}) {
    this.connection = connection;
    this.editor = editor;
    this.onChange = onChange; // (state) => void, on every change of state, version or id
    this.onOpened = onOpened; // (session, isNew) => void
    this.onError = onError; // (message) => void
    this.id = null;
    this.language = null;
    this.version = 0;
    this.saved = ""; // the source as of `version`
    this.state = "draft";
    this.theirs = null; // the other version, in conflict
    this.timer = 0;
    this.firstEditAt = 0;
    this.saving = null; // the promise of the save in flight
    this.sent = null; // {version, source}: the last autosave sent, whose answer may be lost
    connection.on("session.updated", (event) => this._updated(event));
  }

  /** Open an existing session; rejects with the error (e.g. not_found). */
  async open(sessionId) {
    const {session} = await this.connection.request({type: "open", session_id: sessionId});
    this._adopt(session);
    this.editor.setSource(session.source_code);
    this._set("saved");
    this.onOpened(session, false);
    return session;
  }

  /** Start a new session (lazily: nothing is stored until the first edit or run). */
  startDraft(language) {
    this.id = null;
    this.language = language;
    this.version = 0;
    this.saved = "";
    this.theirs = null;
    this._set("draft");
  }

  /** The editor changed under the person's hands. */
  edited() {
    if (this.state === "conflict") return; // the banner asks first
    const now = performance.now();
    if (this.state !== "dirty") this.firstEditAt = now;
    this._set(this.connection.isOpen ? "dirty" : "offline");
    clearTimeout(this.timer);
    const wait = Math.min(SAVE_DELAY_MS, SAVE_MAX_DELAY_MS - (now - this.firstEditAt));
    // A failed save shows in the state (offline, conflict): nothing more to do with it here.
    this.timer = setTimeout(() => this.save().catch(() => {}), Math.max(0, wait));
  }

  /** Save now (idempotent). Resolves once what the editor holds is stored; rejects if not. */
  async save() {
    clearTimeout(this.timer);
    this.timer = 0;
    while (this.saving) await this.saving.catch(() => {});
    if (this.state === "conflict") throw {code: "conflict", message: "resolve the conflict first"};
    if (this.id && this.editor.source === this.saved) {
      this._set("saved");
      return;
    }
    this.saving = this._send(this.editor.source);
    try {
      await this.saving;
    } finally {
      this.saving = null;
    }
    if (this.editor.source !== this.saved) this.edited(); // typed while it was saving
  }

  async _send(source) {
    this._set("saving");
    try {
      if (!this.id) {
        const {session} = await this.connection.request({
          type: "create",
          language: this.language,
          source_code: source,
        });
        this._adopt(session);
        this.onOpened(session, true);
      } else {
        this.sent = {version: this.version, source};
        const reply = await this.connection.request({
          type: "autosave",
          session_id: this.id,
          source_code: source,
          base_version: this.version,
        });
        this.version = reply.version;
        this.saved = source;
      }
      if (this.theirs && this.theirs.version > this.version) {
        this._set("conflict"); // someone saved after us meanwhile
      } else {
        this.theirs = null;
        this._set(this.editor.source === this.saved ? "saved" : "dirty");
      }
    } catch (error) {
      if (error.code === "conflict") {
        await this._conflict();
      } else if (error.code === "disconnected") {
        this._set("offline"); // the reconnect reconciles
      } else {
        this._set("dirty");
        this.onError(error.message || String(error));
      }
      throw error;
    }
  }

  /** After a reconnect: follow the session again and settle what happened while away. */
  async reconnected() {
    if (!this.id) {
      if (this.state === "offline") this.save().catch(() => {}); // a draft's first save failed
      return;
    }
    let session;
    try {
      ({session} = await this.connection.request({type: "open", session_id: this.id}));
    } catch (error) {
      this.onError(error.message);
      return;
    }
    const mine = this.editor.source;
    const sent = this.sent;
    if (sent && session.version === sent.version + 1 && session.source_code === sent.source) {
      // Our save was stored but its answer was lost with the connection.
      this.version = session.version;
      this.saved = session.source_code;
    }
    if (session.source_code === mine) {
      this.version = session.version;
      this.saved = mine;
      this._set("saved");
    } else if (session.version === this.version) {
      this.save().catch(() => {}); // nobody else saved: ours goes through
    } else if (mine === this.saved) {
      this._take(session.version, session.source_code); // only they changed it
    } else {
      this.theirs = {version: session.version, source_code: session.source_code};
      this._set("conflict");
    }
  }

  keepMine() {
    if (!this.theirs) return;
    this.version = this.theirs.version;
    this.theirs = null;
    this._set("dirty");
    this.save().catch(() => {});
  }

  takeTheirs() {
    if (!this.theirs) return;
    const {version, source_code: source} = this.theirs;
    this.theirs = null;
    this._take(version, source);
  }

  _updated(event) {
    if (event.session_id !== this.id || event.version <= this.version) return;
    const unchanged = this.editor.source === this.saved && !this.saving && !this.timer;
    if (unchanged || this.editor.source === event.source_code) {
      this._take(event.version, event.source_code);
    } else {
      this.theirs = {version: event.version, source_code: event.source_code};
      clearTimeout(this.timer);
      this.timer = 0;
      this._set("conflict");
    }
  }

  async _conflict() {
    const known = this.version;
    let theirs;
    try {
      const {session} = await this.connection.request({type: "open", session_id: this.id});
      theirs = {version: session.version, source_code: session.source_code};
    } catch {
      theirs = this.theirs || {version: this.version + 1, source_code: this.saved};
    }
    // Resolved while the refusal was on its way ("Keep mine" or "Use theirs" moved the
    // version on): this refusal is stale and must not raise the banner again.
    if (this.version !== known) return;
    this.theirs = theirs;
    this._set("conflict");
  }

  _take(version, source) {
    this.version = version;
    this.saved = source;
    this.editor.setSource(source);
    this._set("saved");
  }

  _adopt(session) {
    this.id = session.session_id || session.id;
    this.language = session.language;
    this.version = session.version;
    this.saved = session.source_code;
    this.theirs = null;
  }

  _set(state) {
    this.state = state;
    this.onChange(state);
  }
}
