// Calls to this server's API, with the API key kept in the browser (localStorage).
// Paths are relative, so the page also works behind a proxy under a path prefix.

const KEY_STORAGE = "fish-speech.api-key"; // shared with the docs pages

export const apiKey = {
  get: () => localStorage.getItem(KEY_STORAGE) || "",
  set: (key) => localStorage.setItem(KEY_STORAGE, key),
  clear: () => localStorage.removeItem(KEY_STORAGE),
};

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

// Called on every 401, so the page can ask for the key.
let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

async function errorDetail(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return response.statusText || `HTTP ${response.status}`;
  }
}

/** fetch() with the key; resolves to the Response, rejects with ApiError on 4xx/5xx. */
export async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = apiKey.get();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(path, { ...options, headers });
  if (response.ok) return response;
  const detail = await errorDetail(response);
  if (response.status === 401) onUnauthorized(detail);
  throw new ApiError(response.status, detail);
}

export async function apiJson(path, options = {}) {
  const response = await api(path, options);
  return response.json();
}

export function postJson(path, body, options = {}) {
  return api(path, {
    ...options,
    method: options.method || "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}
