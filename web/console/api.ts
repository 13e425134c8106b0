/** The console's calls to the broker: same origin, JSON, the CSRF token on every change. */

export interface Session {
  user: string;
  role: 'viewer' | 'operator' | 'admin';
  via: string;
  csrf: string | null;
  login: boolean;
}

let csrf: string | null = null;

export function setCsrf(token: string | null): void {
  csrf = token;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: any,
  ) {
    super(typeof body?.message === 'string' ? body.message : typeof body?.error?.message === 'string' ? body.error.message : `HTTP ${status}`);
  }
}

export interface Answer<T> {
  status: number;
  body: T;
  headers: Headers;
}

export async function call<T = any>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer<T>> {
  const h: Record<string, string> = { 'x-requested-with': 'edb-console', ...headers };
  if (body !== undefined) h['content-type'] = 'application/json';
  if (method !== 'GET' && csrf) h['x-edb-csrf'] = csrf;
  const res = await fetch(path, { method, headers: h, credentials: 'same-origin', ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }) });
  const text = await res.text();
  let parsed: any = text;
  try {
    parsed = text === '' ? null : JSON.parse(text);
  } catch {
    // not JSON
  }
  if (res.status === 401 && path !== '/api/session' && path !== '/api/login') window.dispatchEvent(new CustomEvent('edb-logged-out'));
  if (res.status >= 400) throw new ApiError(res.status, parsed);
  return { status: res.status, body: parsed as T, headers: res.headers };
}

export const get = <T = any>(path: string): Promise<T> => call<T>('GET', path).then((a) => a.body);
