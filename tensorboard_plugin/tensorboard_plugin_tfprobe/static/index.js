// Entry point of the tfprobe dashboard: `render()` is called once by TensorBoard's
// plugin_entry.html inside a same-origin iframe. Builds the shell (header, main), loads the
// runs, and shows the current view: `load(runs)` fetches (stale responses are dropped),
// `draw(data)` builds the DOM; the filter, category toggles, findings-only, blocks, sort and
// row height redraw without fetching. Before a view loads, the run context is fetched once
// per run selection and reload: /layers (category, block, depth of every layer) and, in the
// background, /health (the findings marked on the map; the Health view reuses them). Every
// run and layer name reaches the DOM through textContent (see charts.el), never as HTML.

import {el, hideTooltip} from './charts.js';
import {listen, sendMessage} from './ipc.js';
import {assignRunColors, getJSON} from './model.js';
import {filterBox, renderCategoryBar, renderPicker, renderTabs} from './picker.js';
import {app, loadStateFromHash, selectedRuns, setMain, state} from './state.js';
import {emptyState} from './views/common.js';
import * as gradients from './views/gradients.js';
import * as health from './views/health.js';
import {rootLayers} from './views/incidents.js';
import * as layer from './views/layer.js';
import * as looks from './views/looks.js';
import * as overview from './views/overview.js';
import * as pooling from './views/pooling.js';
import * as representations from './views/representations.js';

const VIEW_MODULES = {overview, layer, gradients, pooling, health, representations, looks};
const MAX_DEFAULT_RUNS = 4;

let statusEl;
let pickerEl;
let tabsEl;
let mainEl;
let categoryEl;
let shown = null; // {view, data} of what mainEl shows, for redraw()

function setStatus(text) {
  statusEl.textContent = text;
  document.body.dataset.status = text;
}

function go(view, layerName = undefined) {
  state.view = view;
  if (layerName !== undefined) {
    state.layer = layerName;
    state.detailStats = null;
  }
  renderTabs(tabsEl);
  showView();
}

async function loadRuns() {
  const data = await getJSON('runs');
  const first = state.runs.length === 0;
  state.runs = data.runs;
  assignRunColors(state.runs.map((r) => r.name));
  state.stats = data.stats;
  state.descriptions = data.stat_descriptions || {};
  state.categories = data.categories || [];
  const names = new Set(state.runs.map((r) => r.name));
  for (const n of [...state.selected]) if (!names.has(n)) state.selected.delete(n);
  if (first || state.selected.size === 0) {
    if (first) state.stat = data.default_stat || state.stat;
    state.runs.slice(0, MAX_DEFAULT_RUNS).forEach((r) => state.selected.add(r.name));
  }
}

async function refresh() {
  state.refreshes += 1;
  document.body.dataset.refreshes = String(state.refreshes);
  try {
    await loadRuns();
  } catch (e) {
    setStatus('error');
    mainEl.replaceChildren(el('div', {class: 'error-box', text: `Could not load runs: ${e.message}`}));
    return;
  }
  renderPicker(pickerEl);
  await showView();
}

/** A placeholder instead of the view (no data, no run selected), or null. */
function placeholder(runs) {
  if (state.runs.length === 0) return emptyState();
  if (runs.length === 0) return el('p', {class: 'hint', text: 'Select at least one run in the run picker.'});
  return null;
}

/** Fetches the layers of `runs` (awaited) and their findings (in the background, then redraws),
 * once per run selection and reload. */
async function loadContext(runs) {
  const key = `${state.refreshes}|${runs.join('\n')}`;
  if (state.context.key === key) return;
  const layerData = await getJSON('layers', {run: runs});
  const layers = new Map(runs.map((run) => [run, new Map(layerData.runs[run].layers.map((l) => [l.name, l]))]));
  const health = getJSON('health', {run: runs});
  const incidents = getJSON('incidents', {run: runs}); // the Health view's incidents, the Overview's root marks
  state.context = {key, layers, findings: null, findingsError: null, health, incidents, roots: null};
  incidents.then(
    (res) => { if (state.context.key === key) { state.context.roots = rootLayers(res.incidents); if (shown) redraw(); } },
    () => {},
  );
  document.body.dataset.findings = 'loading';
  health.then(
    (res) => { if (state.context.key === key) { state.context.findings = res.findings; findingsSettled('ready'); } },
    (e) => { if (state.context.key === key) { state.context.findingsError = e.message; findingsSettled('error'); } },
  );
  renderCategoryBar(categoryEl);
}

function findingsSettled(status) {
  renderCategoryBar(categoryEl);
  if (shown) redraw();
  document.body.dataset.findings = status;
}

async function showView() {
  const token = ++state.token;
  const stale = () => token !== state.token;
  hideTooltip();
  document.body.dataset.view = state.view;
  setStatus('loading');
  shown = null;
  const runs = selectedRuns();
  const other = placeholder(runs);
  if (other) {
    state.context = {key: null, layers: new Map(), findings: null, findingsError: null, health: null};
    renderCategoryBar(categoryEl); // no run: no counts
    mainEl.replaceChildren(other);
    setStatus('ready');
    return;
  }
  const view = VIEW_MODULES[state.view];
  try {
    await loadContext(runs);
    if (stale()) return;
    const data = await view.load(runs);
    if (stale()) return;
    shown = {view: state.view, data};
    mainEl.replaceChildren(view.draw(data));
    setStatus('ready');
  } catch (e) {
    if (stale()) return;
    mainEl.replaceChildren(el('div', {class: 'error-box', text: e.message}));
    setStatus('error');
  }
}

/** Re-renders the current view from the data it already has (no request); refetches if none. */
function redraw() {
  if (!shown || shown.view !== state.view) return void showView();
  hideTooltip();
  mainEl.replaceChildren(VIEW_MODULES[shown.view].draw(shown.data));
}

export async function render() {
  document.head.append(el('link', {rel: 'stylesheet', href: './static/style.css'}));
  Object.assign(app, {showView, redraw, go});
  loadStateFromHash();
  statusEl = el('span', {class: 'status', id: 'status', text: 'loading'});
  pickerEl = el('div', {class: 'run-picker', id: 'run-picker'});
  tabsEl = el('nav', {class: 'tabs', role: 'tablist'});
  mainEl = el('main', {id: 'view'});
  categoryEl = el('div', {class: 'category-bar', id: 'category-bar'});
  setMain(mainEl);
  const header = el('header', {class: 'tp-header'}, pickerEl, el('div', {class: 'header-middle'}, tabsEl, filterBox(), categoryEl), statusEl);
  document.body.append(el('div', {id: 'tfprobe'}, header, mainEl));
  renderTabs(tabsEl);
  listen('experimental.DataReloaded', () => { refresh(); });
  // TensorBoard's run list only feeds a check that the picker is current; our /runs
  // route lists exactly the runs that hold tfprobe data.
  listen('experimental.RunsChanged', () => { refresh(); });
  sendMessage('experimental.GetRuns').catch(() => null);
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (document.visibilityState !== 'hidden') showView(); }, 300);
  });
  await refresh();
}
