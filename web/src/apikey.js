// The API key of a server that needs one (README, "Security"): asked for in the page when the
// server answers 401 (REST) or closes the socket with 4401, kept in this browser's
// localStorage until forgotten, and sent as `Authorization: Bearer` on REST calls and as the
// socket's first message, {type: "auth", token}: a browser cannot set a WebSocket's headers,
// and a key in the URL (?token=) would be kept in the history.

const STORAGE_KEY = "livecode.apiKey";

export class ApiKey {
  constructor() {
    this.value = read();
    this.refusedHandlers = [];
  }

  /** Use this key from now on, and remember it in this browser. */
  use(value) {
    this.value = value;
    try {
      localStorage.setItem(STORAGE_KEY, value);
    } catch {
      // Storage off (a private window's quota): the key still works until the page goes.
    }
  }

  forget() {
    this.value = "";
    try {
      localStorage.removeItem(STORAGE_KEY);
    } catch {
      // nothing kept
    }
  }

  /** handler({hadKey, message}) when the server refuses the key in use, or asks for one. */
  onRefused(handler) {
    this.refusedHandlers.push(handler);
  }

  /** The server refused `sent` (the key sent then; "" for none), saying `message`. */
  refused(sent, message) {
    if (sent !== this.value) return; // about a key replaced since
    if (sent) this.forget(); // never sent again, nor found after a reload
    for (const handler of this.refusedHandlers) handler({hadKey: Boolean(sent), message});
  }

  /** fetch() with the key; a 401 answer is reported to the onRefused handlers, and returned. */
  async fetch(url, options = {}) {
    const sent = this.value;
    const headers = {...options.headers};
    if (sent) headers.Authorization = `Bearer ${sent}`;
    const response = await fetch(url, {...options, headers});
    if (response.status === 401) this.refused(sent, await errorMessage(response));
    return response;
  }
}

function read() {
  try {
    return localStorage.getItem(STORAGE_KEY) || "";
  } catch {
    return "";
  }
}

async function errorMessage(response) {
  try {
    const body = await response.clone().json();
    return (body.error && body.error.message) || response.statusText;
  } catch {
    return response.statusText;
  }
}
