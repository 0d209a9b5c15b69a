// Building the page from data without HTML strings: every value the service returns (names, error details) is
// set as text, never parsed as markup.

/** el('a', { href: '#/' }, 'text', child...): an element with attributes (false/null left out) and children. */
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  setAttributes(element, attributes);
  append(element, children);
  return element;
}

const svgNs = 'http://www.w3.org/2000/svg';

export function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(svgNs, tag);
  setAttributes(element, attributes);
  append(element, children);
  return element;
}

function setAttributes(element, attributes) {
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    element.setAttribute(name, value === true ? '' : String(value));
  }
}

function append(element, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium', timeZone: 'UTC' });
const number = new Intl.NumberFormat();

/** An RFC 3339 time as a <time> element, shown in UTC. */
export function time(value) {
  if (!value) return el('span', { class: 'muted' }, 'never');
  const date = new Date(value);
  return el('time', { datetime: value }, Number.isNaN(date.getTime()) ? value : `${dateTime.format(date)} UTC`);
}

export function count(value) {
  return number.format(value ?? 0);
}

/** A status as a labelled badge (colour is never the only cue: the word is there). */
export function statusBadge(status) {
  if (!status) return el('span', { class: 'muted' }, 'none');
  return el('span', { class: `badge status-${status.replace(/[^a-z_]/g, '')}` }, status.replace('_', ' '));
}

export function table(caption, headings, rows, { captionHidden = false } = {}) {
  return el('div', { class: 'table-scroll', tabindex: '0', role: 'region', 'aria-label': caption },
    el('table', {},
      el('caption', { class: captionHidden ? 'visually-hidden' : null }, caption),
      el('thead', {}, el('tr', {}, headings.map(h => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows)));
}

/** On submit, a filter form's non-empty fields become the view's address (#/path?name=value...), which renders it. */
export function submitToAddress(form, path) {
  form.addEventListener('submit', event => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value.trim()) params.append(name, value.trim());
    const text = params.toString();
    location.hash = text ? `#${path}?${text}` : `#${path}`;
  });
  return form;
}

/** Replaces an element's children, leaving out the null and false a conditional child gives. */
export function fill(parent, ...children) {
  parent.replaceChildren(...children.flat().filter(c => c !== null && c !== undefined && c !== false));
}

export function heading(text) {
  return el('h1', { tabindex: '-1' }, text);
}

/**
 * A "Download CSV" button: runs download() (which saves the file), one at a time, saying what it is doing in its own
 * label and in the live region; a failure goes to the page's error message.
 */
export function downloadButton(download, { announce, reportError }) {
  const button = el('button', { type: 'button', class: 'secondary download' }, 'Download CSV');
  button.addEventListener('click', async () => {
    button.disabled = true;
    button.textContent = 'Preparing CSV…';
    try {
      const bytes = await download();
      announce?.(`CSV downloaded (${count(bytes)} bytes).`);
    } catch (error) {
      reportError(error);
    } finally {
      button.disabled = false;
      button.textContent = 'Download CSV';
    }
  });
  return button;
}
