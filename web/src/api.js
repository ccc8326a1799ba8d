// The controller's JSON API (/api/<Method>): the same methods, messages and roles as the gRPC
// services. The bearer token lives in sessionStorage: it is gone when the tab is closed.
const TOKEN_KEY = 'pgfleet.token';
const WHO_KEY = 'pgfleet.who';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  get who() {
    try { return JSON.parse(sessionStorage.getItem(WHO_KEY) || 'null'); } catch { return null; }
  },
  get canOperate() {
    const role = this.who?.role;
    return role === 'operator' || role === 'admin';
  },
  save(token, who) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(WHO_KEY, JSON.stringify(who));
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(WHO_KEY);
  },
};

let onUnauthenticated = () => {};
export function setUnauthenticatedHandler(fn) { onUnauthenticated = fn; }

async function call(method, { params, body, token } = {}) {
  const query = params ? `?${new URLSearchParams(params)}` : '';
  const response = await fetch(`api/${method}${query}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: {
      Authorization: `Bearer ${token ?? session.token ?? ''}`,
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* reported below */ }
  if (!response.ok) {
    const error = json?.error ?? {};
    if (response.status === 401 && token === undefined) onUnauthenticated();
    throw new ApiError(response.status, error.code ?? 'HTTP_' + response.status,
      error.message ?? `HTTP ${response.status}`);
  }
  if (json === null) throw new ApiError(response.status, 'BAD_JSON', 'the controller sent no JSON');
  return json;
}

export const api = {
  get: (method, params) => call(method, { params }),
  post: (method, body) => call(method, { body }),
  // Checks a token before it is kept.
  whoAmI: (token) => call('WhoAmI', { token }),
};
