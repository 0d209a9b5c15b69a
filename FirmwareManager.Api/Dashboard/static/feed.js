// The live feed: the project's newest events, then every event that arrives, polled with after= (the position
// the service hands back in Link), so that nothing arriving is missed and nothing is shown twice.
import { downloadCsv, get, withQuery } from './api.js';
import { downloadButton, el, fill, heading, statusBadge, time } from './dom.js';

const pollMs = 2000;
const shownAtMost = 200;
const statuses = ['failed', 'rolled_back', 'installed', 'updated', 'downloading', 'downloaded', 'installing'];

function eventRow(e, fresh) {
  return el('tr', { class: fresh ? 'fresh' : null, 'data-event-id': e.id },
    el('td', {}, time(e.received_at)),
    el('th', { scope: 'row' }, el('a', { href: `#/devices/${e.device_id}` }, `device ${e.device_id}`)),
    el('td', {}, e.firmware),
    el('td', {}, statusBadge(e.status)),
    el('td', {}, e.from_firmware ?? ''),
    el('td', {}, e.error_code ? el('code', {}, e.error_code) : ''));
}

export async function renderFeed({ view, query, signal, announce, reportError }) {
  const status = query.get('status') ?? '';
  const filter = el('select', { id: 'feed-status' },
    el('option', { value: '' }, 'every status'),
    statuses.map(s => el('option', { value: s, selected: s === status }, s.replace('_', ' '))));
  filter.addEventListener('change', () => {
    location.hash = filter.value ? `#/feed?status=${encodeURIComponent(filter.value)}` : '#/feed';
  });
  const pause = el('button', { type: 'button', class: 'secondary' }, 'Pause');
  const state = el('p', { class: 'range', id: 'feed-state' }, 'Connecting…');
  const rows = el('tbody', { id: 'feed-rows' });
  const tableBox = el('div', { class: 'table-scroll', tabindex: '0', role: 'region', 'aria-label': 'Events, newest first' },
    el('table', {},
      el('caption', { class: 'visually-hidden' }, 'Events of the project, newest arrival first'),
      el('thead', {}, el('tr', {}, ['Received', 'Device', 'Firmware', 'Status', 'From', 'Error code'].map(h => el('th', { scope: 'col' }, h)))),
      rows));
  fill(view,
    heading('Live feed'),
    el('div', { class: 'toolbar' },
      el('label', { for: 'feed-status' }, 'Show'), filter, pause,
      // Every event of the project with this status, as of now (the live table shows only the newest).
      downloadButton(() => downloadCsv(withQuery('/events', { status: status || null }), 'events.csv', { signal }), { announce, reportError })),
    state,
    tableBox);

  const base = { status: status || null };
  // The position first, then the newest page: an event arriving in between is in both, and shown once.
  const { next: start } = await get(withQuery('/events', { ...base, after: 'latest', limit: 200 }), { signal });
  const { data: newest } = await get(withQuery('/events', { ...base, limit: 50 }), { signal });
  const seen = new Set(newest.map(e => e.id));
  fill(rows, ...newest.map(e => eventRow(e, false)));

  let next = start;
  let paused = false;
  let timer = null;
  let polls = 0;
  let inFlight = false;

  const show = () => {
    state.textContent = paused
      ? 'Paused: new events are not being fetched.'
      : `Live: checking for new events every ${pollMs / 1000} seconds.`;
  };

  async function poll() {
    timer = null;
    if (paused || signal.aborted || inFlight) return;
    inFlight = true;
    let fetchedAll = true;
    try {
      const page = await get(next, { signal });
      next = page.next ?? next;
      polls += 1;
      const arrived = page.data.filter(e => !seen.has(e.id));
      for (const e of arrived) {
        seen.add(e.id);
        rows.prepend(eventRow(e, true));
      }
      while (rows.children.length > shownAtMost) rows.lastElementChild.remove();
      if (arrived.length) announce(`${arrived.length} new ${arrived.length === 1 ? 'event' : 'events'}`);
      fetchedAll = page.data.length < 200;
      view.dataset.polls = String(polls);
    } catch (error) {
      if (error.name === 'AbortError') return;
      reportError(error);
      if (error.status === 401) return;
    } finally {
      inFlight = false;
    }
    if (!signal.aborted && !paused) timer = setTimeout(poll, fetchedAll ? pollMs : 0);
  }

  pause.addEventListener('click', () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    show();
    if (!paused && timer === null) poll();
  });

  show();
  timer = setTimeout(poll, pollMs);
  return () => { if (timer !== null) clearTimeout(timer); };
}
