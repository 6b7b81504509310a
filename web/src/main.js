// The playground at /: wires the editor, the session, the executions and the console to one
// WebSocket. The session's URL is /#/s/<session_id> (and /#/s/<session_id>/e/<execution_id>
// for one of its executions): the same URL in another tab or on another machine shows the
// same source and follows it live. A server with API keys gets one asked for in the page
// (web/src/apikey.js) when it answers 401, or closes the socket with 4401.

import {ApiKey} from "./apikey.js";
import {Connection} from "./connection.js";
import {Console} from "./console.js";
import {Editor} from "./editor.js";
import {describeError, Runs} from "./runs.js";
import {SessionState} from "./session.js";
import {isTemplate, TEMPLATES} from "./templates.js";
import {TerminalConsole} from "./terminal.js";

const LANGUAGE_KEY = "livecode.language";
const THEME_KEY = "livecode.theme";
const THEMES = ["system", "light", "dark"];
const SAVE_LABELS = {
  draft: () => "Draft",
  dirty: () => "Edited",
  saving: () => "Saving…",
  saved: (version) => `Saved · v${version}`,
  offline: () => "Offline · not saved",
  conflict: () => "Conflict",
};

const $ = (id) => document.getElementById(id);
const el = {
  language: $("language"),
  run: $("run"),
  stop: $("stop"),
  newSession: $("new-session"),
  theme: $("theme"),
  saveState: $("save-state"),
  connection: $("connection"),
  conflict: $("conflict"),
  conflictText: $("conflict-text"),
  keepMine: $("keep-mine"),
  takeTheirs: $("take-theirs"),
  status: $("run-status"),
  output: $("output"),
  stdin: $("stdin"),
  interactive: $("interactive"),
  tty: $("tty"),
  terminal: $("terminal"),
  lineForm: $("line-form"),
  line: $("line"),
  eof: $("eof"),
  runs: $("runs"),
  keyForm: $("key-form"),
  keyText: $("key-text"),
  keyInput: $("api-key"),
  keyError: $("key-error"),
  forgetKey: $("forget-key"),
};

function parseHash() {
  const match = location.hash.match(/^#\/s\/([^/]+)(?:\/e\/([^/]+))?/);
  if (!match) return {sessionId: null, executionId: null};
  return {
    sessionId: decodeURIComponent(match[1]),
    executionId: match[2] ? decodeURIComponent(match[2]) : null,
  };
}

function sessionUrl(sessionId, executionId = null) {
  if (!sessionId) return location.pathname + location.search;
  let hash = `#/s/${encodeURIComponent(sessionId)}`;
  if (executionId) hash += `/e/${encodeURIComponent(executionId)}`;
  return hash;
}

function setUrl(sessionId, executionId = null, {push = false} = {}) {
  const url = sessionUrl(sessionId, executionId);
  if (url === (location.hash || location.pathname + location.search)) return;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

const storedLanguage = localStorage.getItem(LANGUAGE_KEY) || "python";
const apiKey = new ApiKey();
const connection = new Connection(
  `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`,
  apiKey,
);
const nonce = document.querySelector('meta[name="csp-nonce"]')?.content || "";
const output = new Console(el.output);
const terminal = new TerminalConsole(el.terminal, {
  nonce,
  onData: (data) => runs.sendKeys(data),
  onResize: (cols, rows) => runs.resized(cols, rows),
});
const editor = new Editor($("editor"), {
  language: storedLanguage,
  source: parseHash().sessionId ? "" : TEMPLATES[storedLanguage] || "",
  nonce,
  onEdit: () => session.edited(),
  onRun: () => runs.run(),
});
const session = new SessionState(connection, editor, {
  onChange: showSaveState,
  onOpened: (opened, isNew) => {
    chooseLanguage(opened.language);
    if (isNew) setUrl(opened.session_id || opened.id);
    document.title = `livecode · ${opened.language}`;
  },
  onError: (message) => setRunState(message, "bad"),
});
const runs = new Runs(connection, apiKey, session, {text: output, terminal}, el, {
  onState: setRunState,
  onShown: (executionId, isNew) => {
    if (isNew) latestExecutionId = executionId;
    if (session.id) setUrl(session.id, isLatest(executionId) ? null : executionId);
  },
});
let latestExecutionId = null;
session.startDraft(storedLanguage);

function isLatest(executionId) {
  return executionId === null || executionId === latestExecutionId;
}

function setRunState(label, kind) {
  el.status.textContent = label;
  el.status.dataset.kind = kind;
}

function showSaveState(state) {
  el.saveState.dataset.state = state;
  el.saveState.dataset.version = String(session.version);
  el.saveState.textContent = SAVE_LABELS[state](session.version);
  el.conflict.hidden = state !== "conflict";
  if (state === "conflict" && session.theirs) {
    el.conflictText.textContent =
      `This session was changed elsewhere (version ${session.theirs.version}) ` +
      "while you had unsaved edits.";
  }
}

function chooseLanguage(language) {
  if (![...el.language.options].some((option) => option.value === language)) {
    el.language.append(new Option(language, language));
  }
  el.language.value = language;
  editor.setLanguage(language);
}

async function loadLanguages() {
  try {
    const response = await apiKey.fetch("/languages");
    if (response.status === 401) return; // the key prompt is up; a key loads them again
    const languages = await response.json();
    const chosen = session.language || el.language.value || storedLanguage;
    el.language.replaceChildren(
      ...languages.map((language) => {
        const label = `${language.name} ${language.version || ""}`.trim();
        const option = new Option(language.available ? label : `${label} (unavailable)`, language.id);
        option.disabled = !language.available;
        return option;
      }),
    );
    chooseLanguage(chosen);
    el.language.disabled = false;
  } catch {
    setRunState("Could not load the languages", "bad");
  }
}

/** Show what the URL names: a session (and maybe one of its executions), or a new draft. */
async function route() {
  const {sessionId, executionId} = parseHash();
  if (!sessionId) {
    if (session.id || session.state !== "draft") startDraft(el.language.value || storedLanguage);
    return;
  }
  if (sessionId !== session.id) {
    runs.reset();
    try {
      await session.open(sessionId);
    } catch (error) {
      if (error.code === "unauthorized") return; // the key prompt is up; a key routes again
      setUrl(null);
      startDraft(storedLanguage);
      output.note(`Session ${sessionId} could not be opened: ${describeError(error)}`, "error");
      return;
    }
  }
  const executions = await runs.refreshHistory();
  latestExecutionId = executions.length ? executions[0].execution_id : null;
  const wanted = executionId
    ? executions.find((execution) => execution.execution_id === executionId) || {
        execution_id: executionId,
      }
    : executions[0];
  // The latest execution is shown again, followed live if it still runs: a reload keeps it.
  if (wanted) runs.open(wanted);
}

function startDraft(language) {
  runs.reset();
  session.startDraft(language);
  chooseLanguage(language);
  editor.setSource(TEMPLATES[language] || "");
  document.title = "livecode";
}

function changeLanguage() {
  const language = el.language.value;
  localStorage.setItem(LANGUAGE_KEY, language);
  editor.setLanguage(language);
  if (session.language === language) return;
  const source = editor.source;
  if (!session.id) {
    session.language = language;
    if (isTemplate(source)) editor.setSource(TEMPLATES[language] || "");
    return;
  }
  // A session keeps its language: another language is another session, with this source.
  setUrl(null, null, {push: true});
  runs.reset();
  session.startDraft(language);
  if (isTemplate(source)) editor.setSource(TEMPLATES[language] || "");
  else session.save().catch(() => {});
}

function cycleTheme() {
  const current = localStorage.getItem(THEME_KEY) || "system";
  const next = THEMES[(THEMES.indexOf(current) + 1) % THEMES.length];
  if (next === "system") localStorage.removeItem(THEME_KEY);
  else localStorage.setItem(THEME_KEY, next);
  showTheme(next);
}

function showTheme(theme) {
  if (theme === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  el.theme.dataset.theme = theme;
  el.theme.setAttribute("aria-label", `Theme: ${theme}`);
  el.theme.title = `Theme: ${theme} (click to change)`;
  terminal.applyTheme();
}

function showConnection(state) {
  el.connection.dataset.state = state;
  el.connection.textContent = {
    connecting: "Connecting…",
    open: "Connected",
    offline: "Offline: reconnecting…",
    unauthorized: "API key needed",
  }[state];
  if (state === "offline" && session.state === "dirty") showSaveState("offline");
}

/** The server wants a key: none was given, or it refused the one in use (then forgotten). */
function askForKey({hadKey, message}) {
  connection.suspend();
  el.keyText.textContent = hadKey
    ? "The server refused the API key."
    : "This server needs an API key.";
  const said = message.charAt(0).toUpperCase() + message.slice(1);
  el.keyError.textContent = hadKey ? `${said}. Check the key, or ask for a new one.` : "";
  el.keyError.hidden = !hadKey;
  el.keyForm.hidden = false;
  el.forgetKey.hidden = true;
  setRunState("API key needed", "bad");
  el.keyInput.focus();
}

function useKey(value) {
  apiKey.use(value);
  el.keyText.textContent = "Checking the key…";
  el.keyError.hidden = true;
  el.forgetKey.hidden = false;
  languagesLoaded = loadLanguages();
  connection.restart();
}

/** A key works (the socket took it), or none is needed. */
function keyAccepted() {
  if (!el.keyForm.hidden) {
    el.keyForm.hidden = true;
    el.keyInput.value = "";
    setRunState("Ready", "idle");
  }
  el.forgetKey.hidden = !apiKey.value;
}

el.keyForm.addEventListener("submit", (event) => {
  event.preventDefault(); // the page's policy allows no form submission
  const value = el.keyInput.value.trim();
  if (value) useKey(value);
});
el.forgetKey.addEventListener("click", () => {
  // Without a key, a server that needs one answers 401 again, and the prompt comes back.
  apiKey.forget();
  el.forgetKey.hidden = true;
  languagesLoaded = loadLanguages();
  connection.restart();
});
apiKey.onRefused(askForKey);
el.run.addEventListener("click", () => runs.run());
el.stop.addEventListener("click", () => runs.stop());
el.newSession.addEventListener("click", () => {
  setUrl(null, null, {push: true});
  startDraft(el.language.value || storedLanguage);
  editor.focus();
});
el.language.addEventListener("change", changeLanguage);
el.theme.addEventListener("click", cycleTheme);
el.keepMine.addEventListener("click", () => session.keepMine());
el.takeTheirs.addEventListener("click", () => session.takeTheirs());
el.lineForm.addEventListener("submit", (event) => {
  event.preventDefault();
  runs.sendLine(el.line.value);
  el.line.value = "";
});
el.eof.addEventListener("click", () => {
  runs.sendLine(el.line.value, true);
  el.line.value = "";
});
el.line.addEventListener("keydown", (event) => {
  if (event.key === "d" && event.ctrlKey) {
    event.preventDefault();
    el.eof.click();
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !event.defaultPrevented) {
    event.preventDefault();
    runs.run();
  }
});
// Back and forward fire both events: one navigation at a time, in order.
let routing = Promise.resolve();
const navigate = () => {
  routing = routing.then(route, route);
};
window.addEventListener("hashchange", navigate);
window.addEventListener("popstate", navigate);
connection.on("error", (event) => {
  // A session follow that fell too far behind ended: open the session again.
  if (event.session_id && event.session_id === session.id) session.reconnected();
});
connection.onState(showConnection);
showTheme(localStorage.getItem(THEME_KEY) || "system");
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => terminal.applyTheme());
showSaveState("draft");
setRunState("Ready", "idle");

let languagesLoaded = loadLanguages();
let isReady = false;
connection.onOpen((isReconnect) => {
  keyAccepted();
  // After a key was asked for, the session in the URL may never have been opened: route.
  if (isReconnect && isReady && (session.id || !parseHash().sessionId)) {
    session.reconnected();
    runs.reconnected();
    return;
  }
  navigate();
  Promise.all([languagesLoaded, routing]).then(() => {
    if (isReady) return;
    isReady = true;
    performance.mark("livecode-ready");
    document.documentElement.dataset.ready = "true";
  });
});
connection.start();
