// The API as the pages use it: every request with the caller's key (sessionStorage), errors as objects,
// and a task's Server-Sent Events read from a fetch() stream (EventSource cannot send the key).

const KEY = "comfyjobs.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
  // [{field: "params.steps", reason: "..."}] of a 422
  get fields() {
    return (this.body && this.body.error && this.body.error.fields) || [];
  }
}

function headers(extra) {
  const h = new Headers(extra || {});
  const key = apiKey();
  if (key) h.set("X-API-Key", key);
  return h;
}

export async function request(method, path, body) {
  const init = { method, headers: headers() };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

// Calls onEvent({event, id, data}) for each event of the task until the stream ends (the final event).
export async function followTask(taskId, onEvent, signal) {
  const resp = await fetch(`/tasks/${encodeURIComponent(taskId)}/events`, { headers: headers(), signal });
  if (resp.status === 204) return;
  if (!resp.ok) throw new ApiError(resp.status, null);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { event: "message", id: null, data: "" };
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // a heartbeat comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event.event = value;
        else if (field === "id") event.id = value;
        else if (field === "data") event.data += (event.data ? "\n" : "") + value;
      }
      if (event.data) {
        try {
          event.data = JSON.parse(event.data);
        } catch {
          /* left as text */
        }
        onEvent(event);
      }
    }
  }
}
