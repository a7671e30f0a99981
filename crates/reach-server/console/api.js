// Calls to Reach's REST API (the same /api every client uses). The session
// is an HttpOnly cookie this script cannot read; every call marks itself
// with X-Requested-With so that the server accepts the cookie.

export class ApiError extends Error {
  constructor(status, code, message, target) {
    super(message);
    this.status = status;
    this.code = code;
    this.target = target;
  }
}

/** Calls the API; resolves to the parsed JSON (null for 204), or throws ApiError. */
export async function api(path, { method = 'GET', json, form } = {}) {
  const headers = { 'X-Requested-With': 'reach-console', Accept: 'application/json' };
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, credentials: 'same-origin' });
  } catch {
    throw new ApiError(0, 'NetworkError', 'The Reach server cannot be reached. Check that it is running and that this computer is online.');
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error;
    const failure = new ApiError(
      response.status,
      error ? error.code : 'HttpError',
      error ? error.message : `The server answered ${response.status} ${response.statusText}.`,
      error ? error.target : undefined,
    );
    if (response.status === 401 && path !== '/console/session') {
      window.dispatchEvent(new CustomEvent('reach:signed-out', { detail: failure.message }));
    }
    throw failure;
  }
  return data;
}

/** Puts an OData query together: odata({ $filter: "...", $top: 20 }). */
export function odata(params) {
  const parts = Object.entries(params)
    .filter(([, value]) => value !== undefined && value !== null && value !== '')
    .map(([key, value]) => `${key}=${encodeURIComponent(value)}`);
  return parts.length ? `?${parts.join('&')}` : '';
}

/** An OData string literal: quotes doubled. */
export function literal(text) {
  return `'${String(text).replaceAll("'", "''")}'`;
}

/** Words for a person, from an API error. */
export function explain(error) {
  if (!(error instanceof ApiError)) return `Something went wrong in the console: ${error.message}`;
  const hints = {
    Forbidden: 'Your account lacks the permission for this. Ask an administrator for the role named above.',
    TooManyRequests: 'Wait a moment and try again.',
    ActiveRequestAlreadyExists: 'Wait for the running action on this device to finish, or cancel it in the Action center.',
    InternalServerError: 'The server hit a problem; the details are in its log.',
  };
  const hint = hints[error.code];
  const message = /[.!?]$/.test(error.message) ? error.message : `${error.message}.`;
  return hint ? `${message} ${hint}` : message;
}
