// Fetching and decoding only (no DOM). Relative URLs: the iframe's base URL is
// <origin><path_prefix>/data/plugin/tfprobe/, so './runs' reaches the /runs route.

/** Builds './route?k=v&k=v2' from an object whose values may be arrays (repeated keys). */
export function routeUrl(route, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null) continue;
    for (const v of Array.isArray(value) ? value : [value]) query.append(key, String(v));
  }
  const qs = query.toString();
  return `./${route}${qs ? '?' + qs : ''}`;
}

/** GETs a JSON route; throws an Error carrying the server's message on a non-2xx answer. */
export async function getJSON(route, params = {}, signal = undefined) {
  const response = await fetch(routeUrl(route, params), {signal});
  if (!response.ok) {
    const text = (await response.text()).trim();
    const error = new Error(text || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

/** JSON numbers, null, and TensorBoard's "NaN"/"Infinity"/"-Infinity" strings to numbers (null -> NaN). */
export function num(v) {
  return v === null || v === undefined ? NaN : Number(v);
}

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];
const assigned = new Map();

/**
 * Stable colour per run: runs keep the colour they were first given in this page
 * (assignRunColors is called with the sorted run list on every refresh); unknown
 * names fall back to an FNV-1a hash into the same palette.
 */
export function assignRunColors(names) {
  for (const name of names) {
    if (!assigned.has(name)) assigned.set(name, PALETTE[assigned.size % PALETTE.length]);
  }
}
export function runColor(run) {
  const known = assigned.get(run);
  if (known) return known;
  let h = 0x811c9dc5;
  for (let i = 0; i < run.length; i++) {
    h ^= run.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return PALETTE[h % PALETTE.length];
}

/** TensorBoard-style debiased exponential moving average of [[step, value], ...]. */
export function smooth(points, weight) {
  if (!(weight > 0)) return points;
  let last = 0;
  let n = 0;
  return points.map(([step, value]) => {
    const v = num(value);
    if (!Number.isFinite(v)) return [step, v];
    last = last * weight + (1 - weight) * v;
    n++;
    const debias = 1 - Math.pow(weight, n);
    return [step, last / debias];
  });
}
