// The API as the website uses it: the session cookie signs the request in, the CSRF
// token (from the page's <meta>) proves the request comes from our own page.

/** An API error: the server's `{"error": {code, message, field, ...}}` and the status. */
export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `Request failed (${status})`);
    this.name = "ApiError";
    this.status = status;
    this.code = error?.code || "error";
    this.field = error?.field || null;
    this.details = error || {};
  }
}

function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]')?.content || "";
}

/**
 * Call `/api/v1{path}`. `body` is sent as JSON, or as is when it is FormData.
 * Answers the parsed JSON (or an ArrayBuffer with `{binary: true}`), null on 204.
 */
export async function api(method, path, { body, query, binary = false } = {}) {
  const url = new URL(`/api/v1${path}`, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null) url.searchParams.set(key, value);
  }
  const headers = { "X-CSRFToken": csrfToken(), Accept: "application/json" };
  let payload;
  if (body instanceof FormData) {
    payload = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
  } catch {
    throw new ApiError(0, { code: "offline", message: "Cannot reach Parley. Check your connection." });
  }
  if (response.status === 204) return null;
  if (!response.ok) {
    let error = null;
    try {
      error = (await response.json()).error;
    } catch {
      // not JSON: keep the status only
    }
    if (response.status === 401 || response.status === 403) {
      if (error?.code === "not_authenticated") location.assign("/login?next=" + encodeURIComponent(location.pathname));
    }
    throw new ApiError(response.status, error);
  }
  if (binary) return new Uint8Array(await response.arrayBuffer());
  return response.json();
}
