// The devices table with the API's filters and keyset paging (the Link header's next page), and one device's page
// with its history as a timeline.
import { downloadCsv, get, withQuery } from './api.js';
import { el, fill, submitToAddress, count, downloadButton, heading, statusBadge, table, time } from './dom.js';

const pageSize = 50;
const statuses = ['downloading', 'downloaded', 'installing', 'installed', 'updated', 'failed', 'rolled_back'];

// The filters: the query parameter of GET /devices each sets, and how the form shows it.
const filters = [
  { name: 'firmware', label: 'Firmware (exact)', type: 'text', placeholder: '2.0.0' },
  { name: 'status_of_last_event', label: 'Last status', type: 'select', options: statuses },
  { name: 'silent_since', label: 'Silent since (UTC)', type: 'datetime-local' },
  { name: 'hardware', label: 'Hardware', type: 'text', placeholder: 'rev-B' },
  { name: 'tag', label: 'Tags (comma-separated, all must match)', type: 'text', placeholder: 'pilot, site:berlin' },
  { name: 'silent_after_update', label: 'Silent after an update', type: 'checkbox' },
  { name: 'unexplained_downgrade', label: 'Unexplained downgrade', type: 'checkbox' },
];

/** The API query from the page's own query (#/devices?...): datetime-local values become RFC 3339 UTC. */
function apiQuery(query) {
  const params = { limit: pageSize };
  for (const f of filters) {
    const value = query.get(f.name);
    if (!value) continue;
    if (f.type === 'checkbox') params[f.name] = value === 'true' ? 'true' : null;
    else if (f.type === 'datetime-local') params[f.name] = `${value.length === 16 ? `${value}:00` : value}Z`;
    else if (f.name === 'tag') params.tag = value.split(',').map(t => t.trim()).filter(Boolean);
    else params[f.name] = value;
  }
  return withQuery('/devices', params);
}

function filterForm(query, download) {
  const fields = filters.map(f => {
    const id = `filter-${f.name}`;
    const value = query.get(f.name) ?? '';
    if (f.type === 'checkbox') {
      return el('div', { class: 'field check' },
        el('input', { id, name: f.name, type: 'checkbox', value: 'true', checked: value === 'true' }),
        el('label', { for: id }, f.label));
    }
    const control = f.type === 'select'
      ? el('select', { id, name: f.name },
        el('option', { value: '' }, 'any'),
        f.options.map(o => el('option', { value: o, selected: o === value }, o.replace('_', ' '))))
      : el('input', { id, name: f.name, type: f.type, value, placeholder: f.placeholder, step: f.type === 'datetime-local' ? '1' : null, autocomplete: 'off' });
    return el('div', { class: 'field' }, el('label', { for: id }, f.label), control);
  });
  const form = el('form', { class: 'filters', 'aria-label': 'Filter devices' },
    fields,
    el('div', { class: 'actions' },
      el('button', { type: 'submit' }, 'Apply filters'),
      el('a', { href: '#/devices', class: 'button secondary' }, 'Clear'),
      download));
  return submitToAddress(form, '/devices');
}

function deviceRow(d) {
  return el('tr', {},
    el('th', { scope: 'row' }, el('a', { href: `#/devices/${d.id}` }, d.name ?? `device ${d.id}`)),
    el('td', { class: 'num' }, d.id),
    el('td', {}, d.current_firmware ?? el('span', { class: 'muted' }, 'none')),
    el('td', {}, statusBadge(d.last_event_status)),
    el('td', {}, time(d.last_event_at)),
    el('td', {}, time(d.last_reported_at)),
    el('td', {}, d.hardware ?? ''),
    el('td', {}, (d.tags ?? []).join(', ')));
}

export async function renderDevices({ view, query, signal, announce, reportError }) {
  const results = el('div', { class: 'results' }, el('p', { class: 'loading' }, 'Loading devices…'));
  // The export of every device these filters select (the form's applied filters, not a page).
  const download = downloadButton(() => downloadCsv(apiQuery(query), 'devices.csv', { signal }), { announce, reportError });
  fill(view, heading('Devices'), filterForm(query, download), results);

  // Keyset paging: each page's URL comes from the previous page's Link header; going back replays the ones seen.
  const pages = [apiQuery(query)];
  let next = null;

  async function show(index) {
    const { data: devices, next: following } = await get(pages[index], { signal });
    next = following;
    if (next && pages.length === index + 1) pages.push(next);
    const previousButton = el('button', { type: 'button', class: 'secondary', disabled: index === 0 }, 'Previous page');
    const nextButton = el('button', { type: 'button', disabled: !next }, 'Next page');
    previousButton.addEventListener('click', () => go(index - 1, previousButton));
    nextButton.addEventListener('click', () => go(index + 1, nextButton));
    const first = index * pageSize + 1;
    const range = devices.length ? `Devices ${count(first)} to ${count(first + devices.length - 1)}` : 'No device matches these filters.';
    fill(results,
      el('p', { class: 'range', id: 'devices-range' }, range),
      devices.length
        ? table('Devices in id order', ['Name', 'Id', 'Firmware', 'Last status', 'Last event (device clock)', 'Last report received', 'Hardware', 'Tags'],
          devices.map(deviceRow), { captionHidden: true })
        : null,
      el('nav', { class: 'pager', 'aria-label': 'Devices pages' }, previousButton, nextButton));
    return range;
  }

  async function go(index, button) {
    try {
      const range = await show(index);
      announce(`Page ${index + 1}: ${range}`);
      // The same button keeps focus, so that paging on is one key press after another.
      const same = [...results.querySelectorAll('.pager button')].find(b => b.textContent === button.textContent);
      (same && !same.disabled ? same : results.querySelector('#devices-range'))?.focus();
    } catch (error) {
      reportError(error);
    }
  }

  await show(0);
}

export async function renderDevice({ view, params, signal, announce, reportError }) {
  const id = params[0];
  fill(view, heading(`Device ${id}`), el('p', { class: 'loading' }, 'Loading the device…'));
  const [{ data: device }, history] = await Promise.all([
    get(`/devices/${id}`, { signal }),
    get(withQuery(`/firmware/${id}`, { limit: 100 }), { signal }),
  ]);
  const details = el('dl', { class: 'details' },
    item('Id', device.id),
    item('Serial', device.serial ?? '—'),
    item('Firmware', device.current_firmware ?? 'none'),
    item('Since', time(device.current_firmware_reported_at)),
    item('Last status', statusBadge(device.last_event_status)),
    item('Last report received', time(device.last_reported_at)),
    item('Hardware', device.hardware ?? '—'),
    item('Tags', (device.tags ?? []).join(', ') || '—'),
    device.unexplained_downgrade_from ? item('Unexplained downgrade from', device.unexplained_downgrade_from) : null,
    device.decommissioned_at ? item('Decommissioned', time(device.decommissioned_at)) : null,
    item('Enrolled', time(device.created_at)));

  const timeline = el('ol', { class: 'timeline', 'aria-label': 'History, newest first' });
  const more = el('button', { type: 'button', class: 'secondary' }, 'Older events');
  let next = history.next;
  const addEvents = events => timeline.append(...events.map(timelineItem));
  addEvents(history.data);
  more.hidden = !next;
  more.addEventListener('click', async () => {
    try {
      const shown = timeline.children.length;
      const page = await get(next, { signal });
      addEvents(page.data);
      next = page.next;
      more.hidden = !next;
      timeline.children[shown]?.querySelector('.event-title')?.focus();
    } catch (error) {
      reportError(error);
    }
  });

  fill(view,
    heading(device.name ?? `Device ${device.id}`),
    el('p', {}, el('a', { href: '#/devices' }, '← All devices')),
    details,
    el('section', { 'aria-labelledby': 'history-title' },
      el('h2', { id: 'history-title' }, 'History'),
      downloadButton(() => downloadCsv(`/firmware/${device.id}`, `device-${device.id}-history.csv`, { signal }), { announce, reportError }),
      history.data.length ? timeline : el('p', {}, 'This device has reported nothing yet.'),
      more));
}

function item(label, value) {
  return el('div', {}, el('dt', {}, label), el('dd', {}, value));
}

function timelineItem(e) {
  return el('li', { class: `event status-${e.status}`, 'data-event-id': e.id },
    el('p', { class: 'event-title', tabindex: '-1' }, statusBadge(e.status), ' ', el('strong', {}, e.firmware),
      e.from_firmware ? ` from ${e.from_firmware}` : ''),
    el('p', { class: 'event-meta' }, 'Device clock ', time(e.timestamp), ' · received ', time(e.received_at)),
    e.error_code ? el('p', {}, 'Error code ', el('code', {}, e.error_code)) : null,
    e.detail ? el('p', { class: 'event-detail' }, e.detail) : null);
}
