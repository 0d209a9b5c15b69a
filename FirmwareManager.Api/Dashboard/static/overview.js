// The first view: how the fleet is spread over firmware versions (SemVer order), with failures and rollbacks.
import { get, withQuery } from './api.js';
import { el, fill, count, heading, table } from './dom.js';
import { versionChart, series, narrowScreen } from './chart.js';

const pageSize = 1000;

export async function renderOverview({ view, signal }) {
  fill(view, heading('Fleet overview'), el('p', { class: 'loading' }, 'Loading the version distribution…'));
  const { data: versions, next } = await get(withQuery('/firmware-versions', { limit: pageSize }), { signal });
  const total = versions.reduce((sum, v) => sum + v.devices, 0);
  const failed = versions.reduce((sum, v) => sum + v.failed, 0);
  const rolledBack = versions.reduce((sum, v) => sum + v.rolled_back, 0);
  const silent = versions.reduce((sum, v) => sum + (v.silent_after_update ?? 0), 0);
  const downgrades = versions.reduce((sum, v) => sum + (v.unexplained_downgrades ?? 0), 0);

  const summary = el('dl', { class: 'summary' },
    figure('Devices', count(total), '#/devices'),
    figure('Versions', count(versions.length) + (next ? '+' : '')),
    figure('Failed on their version', count(failed), '#/devices?status_of_last_event=failed'),
    figure('Rolled back', count(rolledBack), '#/devices?status_of_last_event=rolled_back'),
    figure('Silent after an update', count(silent), '#/devices?silent_after_update=true'),
    figure('Unexplained downgrades', count(downgrades), '#/devices?unexplained_downgrade=true'));

  const content = [heading('Fleet overview'), summary];
  if (versions.length === 0) {
    content.push(el('p', {}, 'No device of this project has reported a firmware version yet.'));
  } else {
    content.push(
      el('section', { 'aria-labelledby': 'distribution-title' },
        el('h2', { id: 'distribution-title' }, 'Version distribution'),
        el('ul', { class: 'legend', id: 'chart-legend' },
          series.map(s => el('li', {}, el('span', { class: `swatch ${s.className}`, 'aria-hidden': 'true' }), s.label))),
        versionChart(versions, 'chart-legend'),
        next ? el('p', { class: 'note' }, `The project has more than ${count(pageSize)} versions; these are the first ${count(pageSize)} in SemVer order.`) : null),
      el('section', { 'aria-labelledby': 'versions-title' },
        el('h2', { id: 'versions-title' }, 'Versions'),
        table('Devices by firmware version, in SemVer order',
          ['Firmware', 'Devices', 'Failed', 'Rolled back', 'Silent after update', 'Unexplained downgrades'],
          versions.map(v => el('tr', {},
            el('th', { scope: 'row' }, el('a', { href: `#/devices?firmware=${encodeURIComponent(v.firmware)}` }, v.firmware)),
            el('td', { class: 'num' }, count(v.devices)),
            el('td', { class: 'num' }, count(v.failed)),
            el('td', { class: 'num' }, count(v.rolled_back)),
            el('td', { class: 'num' }, count(v.silent_after_update)),
            el('td', { class: 'num' }, count(v.unexplained_downgrades)))),
          { captionHidden: true })));
  }
  fill(view, ...content);
  // Turning a phone or resizing a window across the breakpoint draws the chart again for the new width.
  const redraw = () => {
    const chart = view.querySelector('svg.chart');
    if (!chart || !chart.isConnected) {
      narrowScreen.removeEventListener('change', redraw);
      return;
    }
    chart.replaceWith(versionChart(versions, 'chart-legend'));
  };
  if (versions.length) narrowScreen.addEventListener('change', redraw);
}

function figure(label, value, href) {
  return el('div', { class: 'figure' },
    el('dt', {}, label),
    el('dd', {}, href ? el('a', { href }, value) : value));
}
