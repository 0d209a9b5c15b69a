// Fleet health: rollouts with their progress and state, and the from -> to transitions with why they fail.
import { get, withQuery } from './api.js';
import { el, fill, submitToAddress, count, heading, table, time } from './dom.js';
import { compareVersions } from './semver.js';

const percent = new Intl.NumberFormat(undefined, { style: 'percent', maximumFractionDigits: 1 });

function audience(r) {
  const parts = [];
  if (r.from_firmware) parts.push(`from ${r.from_firmware}`);
  if (r.hardware) parts.push(`hardware ${r.hardware}`);
  if (r.tags?.length) parts.push(`tags ${r.tags.join(', ')}`);
  return parts.length ? parts.join('; ') : 'every device';
}

function rolloutCard(r) {
  const done = r.updated ?? 0;
  const eligible = Math.max(r.eligible ?? 0, done);
  const progressId = `rollout-${r.id}-progress`;
  return el('article', { class: `rollout rollout-${r.state}`, 'aria-labelledby': `rollout-${r.id}-title` },
    el('h2', { id: `rollout-${r.id}-title` }, `Rollout ${r.id}: ${r.firmware} `, el('span', { class: `badge state-${r.state}` }, r.state)),
    el('p', { class: 'muted' }, `Audience: ${audience(r)}. Halts above ${percent.format(r.max_failure_rate)} failed once ${count(r.min_devices)} attempted. Declared `, time(r.created_at),
      r.halted_at ? [', halted ', time(r.halted_at)] : null, r.ended_at ? [', ended ', time(r.ended_at)] : null, '.'),
    el('label', { for: progressId }, `Updated ${count(done)} of ${count(eligible)} eligible`),
    el('progress', { id: progressId, max: Math.max(1, eligible), value: done }, `${count(done)} of ${count(eligible)}`),
    el('dl', { class: 'summary compact' },
      ['attempted', 'updated', 'failed', 'rolled_back', 'in_progress', 'pending', 'silent'].map(k =>
        el('div', { class: `figure figure-${k}` }, el('dt', {}, k.replace('_', ' ')), el('dd', {}, count(r[k])))),
      el('div', { class: 'figure' }, el('dt', {}, 'failure rate'), el('dd', {}, percent.format(r.failure_rate ?? 0)))));
}

export async function renderRollouts({ view, signal }) {
  fill(view, heading('Rollouts'), el('p', { class: 'loading' }, 'Loading rollouts…'));
  const { data: rollouts, next } = await get(withQuery('/rollouts', { limit: 100 }), { signal });
  fill(view,
    heading('Rollouts'),
    rollouts.length
      ? el('div', { class: 'rollouts' }, rollouts.map(rolloutCard))
      : el('p', {}, 'No rollout has been declared in this project. An admin declares one with POST /rollouts.'),
    next ? el('p', { class: 'note' }, 'Only the newest 100 rollouts are shown.') : null);
}

export async function renderTransitions({ view, query, signal }) {
  const to = query.get('to') ?? '';
  const from = query.get('from') ?? '';
  const form = el('form', { class: 'filters', 'aria-label': 'Filter transitions' },
    el('div', { class: 'field' }, el('label', { for: 'transition-to' }, 'To version'),
      el('input', { id: 'transition-to', name: 'to', value: to, autocomplete: 'off' })),
    el('div', { class: 'field' }, el('label', { for: 'transition-from' }, 'From version'),
      el('input', { id: 'transition-from', name: 'from', value: from, autocomplete: 'off' })),
    el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Apply filters'),
      el('a', { href: '#/transitions', class: 'button secondary' }, 'Clear')));
  submitToAddress(form, '/transitions');
  fill(view, heading('Firmware transitions'), form, el('p', { class: 'loading' }, 'Loading transitions…'));
  const { data: transitions, next } = await get(withQuery('/firmware-transitions', { to, from, limit: 200 }), { signal });
  // The service pages transitions by text; shown by SemVer precedence of the target, then of the source.
  transitions.sort((a, b) => compareVersions(a.to_firmware, b.to_firmware) || compareVersions(a.from_firmware, b.from_firmware));
  const rows = transitions.map(t => {
    const failures = (t.failed ?? 0) + (t.rolled_back ?? 0);
    return el('tr', { class: failures ? 'has-failures' : null },
      el('th', { scope: 'row' }, `${t.from_firmware ?? 'unknown'} → `,
        el('a', { href: `#/devices?firmware=${encodeURIComponent(t.to_firmware)}` }, t.to_firmware)),
      el('td', { class: 'num' }, count(t.attempted)),
      el('td', { class: 'num' }, count(t.succeeded)),
      el('td', { class: 'num' }, count(t.failed)),
      el('td', { class: 'num' }, count(t.rolled_back)),
      el('td', { class: 'num' }, count(t.in_progress)),
      el('td', { class: 'num' }, t.attempted ? percent.format(failures / t.attempted) : '—'),
      el('td', {}, t.top_error_codes?.length
        ? el('ul', { class: 'codes' }, t.top_error_codes.map(c => el('li', {}, el('code', {}, c.error_code), ` ${count(c.devices)}`)))
        : ''));
  });
  fill(view,
    heading('Firmware transitions'),
    el('p', {}, 'Each device counts once per target version, by its newest report on it.'),
    form,
    transitions.length
      ? table('From -> to transitions', ['From → to', 'Attempted', 'Succeeded', 'Failed', 'Rolled back', 'In progress', 'Failure rate', 'Top error codes'], rows, { captionHidden: true })
      : el('p', {}, 'No transition matches.'),
    next ? el('p', { class: 'note' }, 'Only 200 transitions are shown, in SemVer order; filter by version to see others.') : null);
}
