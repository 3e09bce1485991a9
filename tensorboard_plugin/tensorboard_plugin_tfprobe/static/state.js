// Shared dashboard state, which layers are shown (name filter, hidden categories, findings
// only), the run context every view shares (layer arrangement from /layers, findings from
// /health), the state kept in the URL hash, and the hooks views use to navigate (set by
// index.js, so views never import the entry module).

export const state = {
  runs: [], // [{name, layers, max_step}]
  stats: [],
  descriptions: {},
  selected: new Set(),
  view: 'overview',
  stat: 'zero_fraction',
  agg: 'last',
  rowHeight: null, // null = automatic
  layer: null,
  detailStats: null, // null = defaults for the layer
  smoothing: 0,
  logScale: false,
  funnelStep: {},
  gradStep: null, // the Gradient flow view's step (null = the newest)
  filter: '', // layer-name regex as typed
  filterRegex: null, // compiled; null = no filtering (empty or invalid)
  filterError: null,
  categories: [], // [{name, description, classes}] from /runs: the server's class -> category table
  hidden: new Set(), // hidden categories
  findingsOnly: false,
  collapsed: new Set(), // collapsed block names (overview)
  sort: 'model', // model | depth | stat
  blockAgg: 'max', // summary of a block row: max | mean over its layers
  severities: new Set(['error', 'warning', 'info']), // shown in the Health view
  context: {key: null, layers: new Map(), findings: null, findingsError: null, health: null},
  refreshes: 0,
  token: 0,
};

/** Filled in by index.js: showView() refetches the current view, redraw() re-renders it from
 * the data already fetched, go(view, layer) switches view. */
export const app = {showView: async () => {}, redraw: () => {}, go: () => {}};

let mainEl = null;
export function setMain(node) {
  mainEl = node;
}
export function mainWidth() {
  return Math.max(400, ((mainEl && mainEl.clientWidth) || document.documentElement.clientWidth || 1000) - 28);
}

export function selectedRuns() {
  return state.runs.map((r) => r.name).filter((n) => state.selected.has(n));
}

// ------------------------------------------------------------------ layer filter

/**
 * TensorBoard tag-filter behaviour: a case-insensitive regex searched anywhere in the name;
 * empty = everything; an invalid regex is reported and filters nothing.
 */
export function compileFilter(text) {
  if (!text) return {regex: null, error: null};
  try {
    return {regex: new RegExp(text, 'i'), error: null};
  } catch (e) {
    return {regex: null, error: e.message};
  }
}

export function setFilter(text) {
  const {regex, error} = compileFilter(text);
  state.filter = text;
  state.filterRegex = regex;
  state.filterError = error;
  writeHashParam(FILTER_KEY, text);
}

/** The /layers info of `name` in `run` (any selected run when run is omitted), or undefined. */
export function layerInfo(name, run = undefined) {
  const runs = run === undefined ? [...state.context.layers.keys()] : [run];
  for (const r of runs) {
    const info = state.context.layers.get(r)?.get(name);
    if (info) return info;
  }
  return undefined;
}

/** The most severe finding of `name` in `run` (any run when omitted): 'error' | 'warning' | 'info' | null. */
export function layerSeverity(name, run = undefined) {
  let best = null;
  for (const f of state.context.findings || []) {
    if (f.layer !== name || (run !== undefined && f.run !== run)) continue;
    if (best === null || SEVERITY_RANK[f.severity] < SEVERITY_RANK[best]) best = f.severity;
  }
  return best;
}
export const SEVERITY_RANK = {error: 0, warning: 1, info: 2};

/** Whether a layer is shown: its name matches the filter, its category is not hidden and, with
 * "findings only", it has a finding. Every view uses this one test. */
export function layerMatches(name, run = undefined) {
  if (state.filterRegex !== null && !state.filterRegex.test(name)) return false;
  if (state.hidden.size) {
    const info = layerInfo(name, run);
    if (info && state.hidden.has(info.category)) return false;
  }
  return !state.findingsOnly || layerSeverity(name, run) !== null;
}

/** Why some layers may be hidden, for the views' notes ("match the filter /x/, normalization hidden"). */
export function filterDescription() {
  const parts = [];
  if (state.filter) parts.push(`match the filter /${state.filter}/`);
  if (state.hidden.size) parts.push(`are not ${[...state.hidden].join(', ')}`);
  if (state.findingsOnly) parts.push('have findings');
  return parts.join(', ');
}

// ------------------------------------------------------------------ URL hash
// TensorBoard's hash looks like `#tfprobe&key=value`; plugin keys are `p.<plugin>.<key>` (what
// its experimental.GetURLPluginData returns). The iframe is same-origin, so the plugin reads
// and writes the top page's hash directly (replaceState: no navigation, no history entry).

const FILTER_KEY = 'p.tfprobe.filter';
const setParam = (set) => (set.size ? JSON.stringify([...set]) : '');
const readSet = (text) => {
  try {
    const list = JSON.parse(text);
    return new Set(Array.isArray(list) ? list.map(String) : []);
  } catch (e) {
    return new Set();
  }
};
// state key -> [hash key, to hash text ('' = default, left out), from hash text]
const HASH_STATE = {
  hidden: ['p.tfprobe.hide', setParam, readSet],
  collapsed: ['p.tfprobe.collapsed', setParam, readSet],
  findingsOnly: ['p.tfprobe.findings', (v) => (v ? '1' : ''), (t) => t === '1'],
  sort: ['p.tfprobe.sort', (v) => (v === 'model' ? '' : v), (t) => (['depth', 'stat'].includes(t) ? t : 'model')],
  blockAgg: ['p.tfprobe.summary', (v) => (v === 'max' ? '' : v), (t) => (t === 'mean' ? 'mean' : 'max')],
  severities: ['p.tfprobe.severity', (v) => (v.size === 3 ? '' : JSON.stringify([...v])), readSet],
};

/** Sets `state[key]` and keeps it in the URL hash (see HASH_STATE). */
export function setShared(key, value) {
  state[key] = value;
  const [hashKey, write] = HASH_STATE[key];
  writeHashParam(hashKey, write(value));
}

function hashWindow() {
  try {
    if (window.parent !== window && window.parent.location.hash !== undefined) return window.parent;
  } catch (e) {
    // not same-origin: keep the state in the iframe's own hash
  }
  return window;
}

function hashParts(win) {
  return win.location.hash.replace(/^#/, '').split('&').filter((p) => p !== '');
}

export function readHashParam(key) {
  for (const part of hashParts(hashWindow())) {
    const eq = part.indexOf('=');
    if (eq > 0 && decodeURIComponent(part.slice(0, eq)) === key) return decodeURIComponent(part.slice(eq + 1));
  }
  return null;
}

export function writeHashParam(key, value) {
  const win = hashWindow();
  const parts = hashParts(win).filter((p) => decodeURIComponent(p.split('=')[0]) !== key);
  if (value) parts.push(`${encodeURIComponent(key)}=${encodeURIComponent(value)}`);
  const url = new URL(win.location.href);
  url.hash = parts.join('&');
  win.history.replaceState(win.history.state, '', url.toString());
}

/** Restores the filter and every HASH_STATE key from the URL hash (a shared or reloaded view). */
export function loadStateFromHash() {
  const text = readHashParam(FILTER_KEY) || '';
  const {regex, error} = compileFilter(text);
  Object.assign(state, {filter: text, filterRegex: regex, filterError: error});
  for (const [key, [hashKey, , read]] of Object.entries(HASH_STATE)) {
    const value = readHashParam(hashKey);
    if (value !== null) state[key] = read(value);
  }
}
