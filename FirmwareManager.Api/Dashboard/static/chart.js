// The version distribution as a horizontal bar chart, drawn as SVG: a row per version in the order the service
// gives (SemVer precedence), its devices as a long bar, the devices that failed on it and rolled back from it as
// two short ones. Attributes only, no inline style, so it draws under the page's Content-Security-Policy.
import { svg, count } from './dom.js';

const rowHeight = 34;
const labelWidth = 150;
const valueWidth = 260;
const width = 900;

export const series = [
  { key: 'devices', label: 'Devices running it', className: 'bar-devices', height: 14, offset: 4 },
  { key: 'failed', label: 'Failed on it', className: 'bar-failed', height: 6, offset: 20 },
  { key: 'rolled_back', label: 'Rolled back', className: 'bar-rolled-back', height: 6, offset: 27 },
];

function truncate(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** The chart; its data is also in the table beside it, which screen readers use (the SVG is one image to them). */
export function versionChart(versions, describedBy) {
  const max = Math.max(1, ...versions.flatMap(v => series.map(s => v[s.key] ?? 0)));
  const barArea = width - labelWidth - valueWidth;
  const height = Math.max(1, versions.length) * rowHeight + 8;
  const total = versions.reduce((sum, v) => sum + (v.devices ?? 0), 0);
  const chart = svg('svg', {
    class: 'chart',
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'aria-label': `Bar chart: ${versions.length} firmware versions, ${count(total)} devices. The table below has the figures.`,
    'aria-describedby': describedBy,
    preserveAspectRatio: 'xMinYMin meet',
  });
  versions.forEach((v, i) => {
    const y = i * rowHeight + 4;
    const row = svg('g', { class: 'chart-row', 'data-firmware': v.firmware });
    row.append(svg('text', { x: labelWidth - 8, y: y + 16, 'text-anchor': 'end', class: 'chart-label' },
      svg('title', {}, v.firmware), truncate(v.firmware, 18)));
    for (const s of series) {
      const value = v[s.key] ?? 0;
      const w = value === 0 ? 0 : Math.max(2, (value / max) * barArea);
      row.append(svg('rect', { x: labelWidth, y: y + s.offset, width: w.toFixed(1), height: s.height, class: s.className, rx: 2 },
        svg('title', {}, `${v.firmware}: ${s.label.toLowerCase()} ${count(value)}`)));
    }
    row.append(svg('text', { x: width - valueWidth + 8, y: y + 16, class: 'chart-value' },
      [count(v.devices), v.failed ? `${count(v.failed)} failed` : null, v.rolled_back ? `${count(v.rolled_back)} rolled back` : null]
        .filter(Boolean).join(' · ')));
    chart.append(row);
  });
  return chart;
}
