// The version distribution as a horizontal bar chart, drawn as SVG: a row per version in the order the service
// gives (SemVer precedence), its devices as a long bar, the devices that failed on it and rolled back from it as
// two short ones. Attributes only, no inline style, so it draws under the page's Content-Security-Policy.
import { svg, count } from './dom.js';

// Wide: a label column, the bars, a value column, in a 900-unit viewBox. Narrow (a phone): label and value on a line
// of their own above the bars, in a 360-unit viewBox, so that the text is drawn at about its own size (14 px)
// rather than shrunk with a 900-unit drawing to a phone's width.
const wide = { width: 900, rowHeight: 34, labelWidth: 150, valueWidth: 260, barTop: 0 };
const narrow = { width: 360, rowHeight: 52, labelWidth: 0, valueWidth: 0, barTop: 20 };

/** Whether the chart is drawn for a narrow screen (the stylesheet's phone breakpoint). */
export const narrowScreen = window.matchMedia('(max-width: 40rem)');

export const series = [
  { key: 'devices', label: 'Devices running it', className: 'bar-devices', height: 14, offset: 4 },
  { key: 'failed', label: 'Failed on it', className: 'bar-failed', height: 6, offset: 20 },
  { key: 'rolled_back', label: 'Rolled back', className: 'bar-rolled-back', height: 6, offset: 27 },
];

function truncate(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** The chart; its data is also in the table beside it, which screen readers use (the SVG is one image to them). */
export function versionChart(versions, describedBy, layout = narrowScreen.matches ? narrow : wide) {
  const { width, rowHeight, labelWidth, valueWidth, barTop } = layout;
  const max = Math.max(1, ...versions.flatMap(v => series.map(s => v[s.key] ?? 0)));
  const barArea = width - labelWidth - valueWidth;
  const height = Math.max(1, versions.length) * rowHeight + 8;
  const total = versions.reduce((sum, v) => sum + (v.devices ?? 0), 0);
  const chart = svg('svg', {
    class: `chart ${layout === narrow ? 'chart-narrow' : 'chart-wide'}`,
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'aria-label': `Bar chart: ${versions.length} firmware versions, ${count(total)} devices. The table below has the figures.`,
    'aria-describedby': describedBy,
    preserveAspectRatio: 'xMinYMin meet',
  });
  versions.forEach((v, i) => {
    const y = i * rowHeight + 4;
    const row = svg('g', { class: 'chart-row', 'data-firmware': v.firmware });
    const label = layout === narrow
      ? svg('text', { x: 0, y: y + 14, class: 'chart-label' }, svg('title', {}, v.firmware), truncate(v.firmware, 20))
      : svg('text', { x: labelWidth - 8, y: y + 16, 'text-anchor': 'end', class: 'chart-label' }, svg('title', {}, v.firmware), truncate(v.firmware, 18));
    row.append(label);
    for (const s of series) {
      const value = v[s.key] ?? 0;
      const w = value === 0 ? 0 : Math.max(2, (value / max) * barArea);
      row.append(svg('rect', { x: labelWidth, y: y + barTop + s.offset, width: w.toFixed(1), height: s.height, class: s.className, rx: 2 },
        svg('title', {}, `${v.firmware}: ${s.label.toLowerCase()} ${count(value)}`)));
    }
    const figures = [count(v.devices), v.failed ? `${count(v.failed)} failed` : null, v.rolled_back ? `${count(v.rolled_back)} rolled back` : null]
      .filter(Boolean).join(' · ');
    row.append(layout === narrow
      ? svg('text', { x: width, y: y + 14, 'text-anchor': 'end', class: 'chart-value' }, figures)
      : svg('text', { x: width - valueWidth + 8, y: y + 16, class: 'chart-value' }, figures));
    chart.append(row);
  });
  return chart;
}
