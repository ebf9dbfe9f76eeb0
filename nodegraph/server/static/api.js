// The server's native API (docs/server_api.md), as small async functions.
// The token comes from the page's own URL (?token=...) and goes out as a bearer header on HTTP and
// as ?token= on the WebSocket and on URLs the browser fetches by itself (<img src>).

const token = new URLSearchParams(window.location.search).get("token") || "";

/** An error the server reported: `records` are its {file, node, field, message} records. */
export class ApiError extends Error {
  constructor(status, records) {
    super(records.map((r) => r.message).join("; ") || `HTTP ${status}`);
    this.status = status;
    this.records = records;
  }
}

/** Call the API; resolves to the parsed JSON body, rejects with an ApiError. */
export async function call(method, path, body) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { errors: [{ message: text }] };
  }
  if (!response.ok) {
    const records = (data && data.errors) || [{ message: `HTTP ${response.status}` }];
    throw new ApiError(response.status, records);
  }
  return data;
}

/** A URL the browser loads by itself (an image), carrying the token. */
export function withToken(url) {
  if (!token) return url;
  return `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
}

/**
 * Listen to WS /api/events; `onMessage` gets every parsed message, `onState` "open"/"closed".
 * Reconnects after a drop (a server restart) with a short back-off.
 */
export function listen(onMessage, onState) {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  let delay = 500;
  const connect = () => {
    const socket = new WebSocket(withToken(`${scheme}://${window.location.host}/api/events`));
    socket.onopen = () => {
      delay = 500;
      onState("open");
    };
    socket.onmessage = (event) => onMessage(JSON.parse(event.data));
    socket.onclose = () => {
      onState("closed");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 8000);
    };
  };
  connect();
}
