// SemVer 2.0.0 precedence (semver.org, item 11), for lists the service orders otherwise: the overview's chart
// comes in this order from the service, and every other list of versions is shown in it too.
const pattern = /^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$/;
const numeric = /^\d+$/;

function parse(version) {
  const m = pattern.exec(version ?? '');
  return m ? { core: [m[1], m[2], m[3]].map(BigInt), pre: m[4] ? m[4].split('.') : [] } : null;
}

const byText = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

function compareIdentifiers(a, b) {
  const an = numeric.test(a);
  const bn = numeric.test(b);
  if (an && bn) return byText(BigInt(a), BigInt(b));
  if (an !== bn) return an ? -1 : 1;
  return byText(a, b);
}

/** Negative when a comes first: by precedence; a missing or unparsable version first; equal precedence by text. */
export function compareVersions(a, b) {
  const x = parse(a);
  const y = parse(b);
  if (!x || !y) return (x ? 1 : y ? -1 : 0) || byText(String(a ?? ''), String(b ?? ''));
  for (let i = 0; i < 3; i++) {
    if (x.core[i] !== y.core[i]) return x.core[i] < y.core[i] ? -1 : 1;
  }
  if (x.pre.length === 0 || y.pre.length === 0) {
    if (x.pre.length !== y.pre.length) return x.pre.length === 0 ? 1 : -1;
  } else {
    for (let i = 0; i < Math.max(x.pre.length, y.pre.length); i++) {
      if (i >= x.pre.length) return -1;
      if (i >= y.pre.length) return 1;
      const c = compareIdentifiers(x.pre[i], y.pre[i]);
      if (c) return c;
    }
  }
  return byText(a, b);
}
