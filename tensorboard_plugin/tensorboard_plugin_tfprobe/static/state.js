// Shared dashboard state, the layer-name filter and its place in the URL hash, and the
// hooks views use to navigate (set by index.js, so views never import the entry module).

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
  filter: '', // layer-name regex as typed
  filterRegex: null, // compiled; null = no filtering (empty or invalid)
  filterError: null,
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

export function layerMatches(name) {
  return state.filterRegex === null || state.filterRegex.test(name);
}

// ------------------------------------------------------------------ URL hash
// TensorBoard's hash looks like `#tfprobe&key=value`; plugin keys are `p.<plugin>.<key>` (what
// its experimental.GetURLPluginData returns). The iframe is same-origin, so the plugin reads
// and writes the top page's hash directly (replaceState: no navigation, no history entry).

const FILTER_KEY = 'p.tfprobe.filter';

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

export function loadFilterFromHash() {
  const text = readHashParam(FILTER_KEY) || '';
  const {regex, error} = compileFilter(text);
  Object.assign(state, {filter: text, filterRegex: regex, filterError: error});
}
