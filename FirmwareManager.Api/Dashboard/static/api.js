// The service's public API, as any client calls it: the member key in X-Api-Key, RFC 9457 problems read into
// errors, and the next page's URL taken from the Link header.

const keyItem = 'firmwaremanager.dashboard.key';
const positionItem = 'firmwaremanager.dashboard.position';

/** The key typed at sign-in, kept in this tab's session storage only (never a cookie, a URL or the console). */
export const session = {
  get key() { return sessionStorage.getItem(keyItem); },
  set key(value) {
    sessionStorage.setItem(keyItem, value);
    sessionStorage.removeItem(positionItem);
  },
  forget() {
    sessionStorage.removeItem(keyItem);
    sessionStorage.removeItem(positionItem);
  },
};

// The views built from projected state: their answers carry X-Projected-Position (how far the project's feed is
// applied) and take min_position. The tab keeps the highest position it has shown and asks every later view for at
// least that much, so what it shows never goes back (a read served by a standby that lags, or by an instance whose
// projection is behind, waits for it: README, "Projected state").
const projected = /^\/(devices|firmware-versions|firmware-transitions|rollouts)(\/|\?|$)/;

function atLeastShown(path) {
  const shown = Number(sessionStorage.getItem(positionItem) ?? 0);
  if (!(shown > 0) || !projected.test(path)) return path;
  const url = new URL(path, location.origin);
  url.searchParams.set('min_position', String(shown));
  return url.pathname + url.search;
}

function remember(header) {
  const position = Number(header);
  if (Number.isSafeInteger(position) && position > Number(sessionStorage.getItem(positionItem) ?? 0)) {
    sessionStorage.setItem(positionItem, String(position));
  }
}

export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem?.detail || problem?.title || `The service answered ${status}.`);
    this.status = status;
    this.problem = problem;
    this.retryAfter = retryAfter;
  }

  /** What to tell the operator, in words. */
  explain() {
    switch (this.status) {
      case 401:
        return 'This key is unknown or has been revoked. Sign in with a current member key.';
      case 403:
        // Every call the dashboard makes is open to any member: a 403 is a device's key.
        return 'This key may not read the fleet: the dashboard needs a project member\'s key, not a device key.';
      case 429:
        return `Too many requests with this key. Try again in ${this.retryAfter ?? 'a few'} seconds.`;
      case 503:
        if (this.problem?.position_reached !== undefined) {
          // What the tab has shown is newer than what this view could read: not shown, so nothing goes back.
          return `This view is not yet up to date with what you have seen (${this.problem.position_reached} of `
            + `${this.problem.min_position} reports applied). Try again in ${this.retryAfter ?? 'a few'} seconds.`;
        }
        return 'The service is unavailable for a moment. Try again shortly.';
      default: {
        const fields = this.problem?.errors ? Object.values(this.problem.errors).flat().join(' ') : '';
        return [this.message, fields].filter(Boolean).join(' ');
      }
    }
  }
}

/** The rel="next" URL of a Link header, or null. */
export function nextLink(header) {
  if (!header) return null;
  for (const part of header.split(',')) {
    const match = /<([^>]*)>\s*;\s*rel="?next"?/.exec(part);
    if (match) return match[1];
  }
  return null;
}

/**
 * fetch() of a path of the API with at least the position the tab has shown. A position past the end of the project's
 * feed (the database was restored to an earlier point) is one no wait can reach, and the service says so with a 400
 * naming min_position: the tab forgets it and asks once more without it.
 */
async function fetchAtLeastShown(path, init) {
  const asked = atLeastShown(path);
  const response = await fetch(asked, init);
  if (response.status !== 400 || asked === path) return response;
  const problem = await response.clone().json().catch(() => null);
  if (!problem?.errors?.min_position) return response;
  sessionStorage.removeItem(positionItem);
  return fetch(path, init);
}

/** The ApiError of an answer that is not 2xx: its problem document, when it has one. */
async function failure(response) {
  let problem = null;
  try { problem = await response.json(); } catch { /* not a problem document */ }
  return new ApiError(response.status, problem, response.headers.get('Retry-After'));
}

/** GET a path of the API (with its query): { data, next } or an ApiError. */
export async function get(path, { key = session.key, signal } = {}) {
  const response = await fetchAtLeastShown(path, {
    headers: { 'X-Api-Key': key, Accept: 'application/json' },
    cache: 'no-store',
    credentials: 'omit',
    signal,
  });
  if (!response.ok) throw await failure(response);
  const data = await response.json();
  remember(response.headers.get('X-Projected-Position'));
  return { data, next: nextLink(response.headers.get('Link')) };
}

/**
 * Downloads what a list view's filters select as CSV (the API's export: Accept: text/csv, every row, one snapshot)
 * and saves it as filename. The key travels in a header, so this is a fetch saved through an object URL rather than a
 * link; the file is whole only if the stream ended properly (fetch rejects one that was cut off, and nothing is saved).
 */
export async function downloadCsv(path, filename, { key = session.key, signal } = {}) {
  const url = new URL(path, location.origin);
  url.searchParams.delete('limit');
  const response = await fetchAtLeastShown(url.pathname + url.search, {
    headers: { 'X-Api-Key': key, Accept: 'text/csv' },
    cache: 'no-store',
    credentials: 'omit',
    signal,
  });
  if (!response.ok) throw await failure(response);
  const blob = await response.blob();
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = filename;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  return blob.size;
}

/** A path with its query, from a plain object (arrays repeat the parameter; empty values are left out). */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const one of [].concat(value)) {
      if (one !== undefined && one !== null && one !== '' && one !== false) query.append(name, String(one));
    }
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}
