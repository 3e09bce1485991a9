// Entry point of the tfprobe dashboard: `render()` is called once by TensorBoard's
// plugin_entry.html inside a same-origin iframe. Owns the state (selected runs,
// view, layer, statistic) and drops stale responses. Every run and layer name is
// rendered with textContent (see charts.el), never as HTML.

import {el, fmt, fmtInt, heatmap, hideTooltip, legend, lineChart, makeScale, seriesLegend} from './charts.js';
import {listen, sendMessage} from './ipc.js';
import {assignRunColors, getJSON, num, runColor, smooth} from './model.js';

const VIEWS = [
  ['overview', 'Overview'],
  ['layer', 'Layer detail'],
  ['pooling', 'Pooling'],
  ['health', 'Health'],
];
const DETAIL_DEFAULT = ['mean', 'std', 'zero_fraction', 'dead_unit_fraction'];
const MAX_DEFAULT_RUNS = 4;

const state = {
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
  refreshes: 0,
  token: 0,
};

let root;
let statusEl;
let pickerEl;
let tabsEl;
let mainEl;

function setStatus(text) {
  statusEl.textContent = text;
  document.body.dataset.status = text;
}

function selectedRuns() {
  return state.runs.map((r) => r.name).filter((n) => state.selected.has(n));
}

function mainWidth() {
  return Math.max(400, (mainEl.clientWidth || document.documentElement.clientWidth || 1000) - 28);
}

// ------------------------------------------------------------------ header

function renderPicker() {
  const list = el('div', {class: 'run-list', id: 'run-list'});
  for (const run of state.runs) {
    const box = el('input', {type: 'checkbox', value: run.name});
    box.checked = state.selected.has(run.name);
    box.addEventListener('change', () => {
      if (box.checked) state.selected.add(run.name);
      else state.selected.delete(run.name);
      showView();
    });
    list.append(
      el('label', {title: `${run.name}: ${run.layers} layers, last step ${run.max_step}`}, box,
        el('span', {class: 'swatch', style: `background:${runColor(run.name)}`}), el('span', {class: 'run-name-label', text: run.name})),
    );
  }
  const all = el('button', {text: 'all', onclick: () => { state.runs.forEach((r) => state.selected.add(r.name)); renderPicker(); showView(); }});
  const none = el('button', {text: 'none', onclick: () => { state.selected.clear(); renderPicker(); showView(); }});
  pickerEl.replaceChildren(el('div', {class: 'picker-title'}, el('span', {text: 'Runs'}), all, none), list);
}

function renderTabs() {
  tabsEl.replaceChildren(
    ...VIEWS.map(([id, label]) =>
      el('button', {role: 'tab', 'aria-selected': String(state.view === id), dataset: {view: id}, text: label, onclick: () => go(id)}),
    ),
  );
}

function go(view, layer = undefined) {
  state.view = view;
  if (layer !== undefined) {
    state.layer = layer;
    state.detailStats = null;
  }
  renderTabs();
  showView();
}

// ------------------------------------------------------------------ data loading

async function loadRuns() {
  const data = await getJSON('runs');
  const first = state.runs.length === 0;
  state.runs = data.runs;
  assignRunColors(state.runs.map((r) => r.name));
  state.stats = data.stats;
  state.descriptions = data.stat_descriptions || {};
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
  renderPicker();
  await showView();
}

async function showView() {
  const token = ++state.token;
  hideTooltip();
  document.body.dataset.view = state.view;
  setStatus('loading');
  if (state.runs.length === 0) {
    mainEl.replaceChildren(emptyState());
    setStatus('ready');
    return;
  }
  const runs = selectedRuns();
  if (runs.length === 0) {
    mainEl.replaceChildren(el('p', {class: 'hint', text: 'Select at least one run in the run picker.'}));
    setStatus('ready');
    return;
  }
  const stale = () => token !== state.token;
  try {
    const view = {overview: overviewView, layer: layerView, pooling: poolingView, health: healthView}[state.view];
    const node = await view(runs, stale);
    if (stale()) return;
    mainEl.replaceChildren(node);
    setStatus('ready');
  } catch (e) {
    if (stale()) return;
    mainEl.replaceChildren(el('div', {class: 'error-box', text: e.message}));
    setStatus('error');
  }
}

// ------------------------------------------------------------------ views

function emptyState() {
  return el(
    'div',
    {class: 'empty-state', id: 'empty-state'},
    el('h2', {text: 'No tfprobe data yet'}),
    el('p', {text: 'None of the runs under --logdir holds tfprobe statistics. Attach the LayerProbe callback to model.fit and point TensorBoard at the same directory:'}),
    el('pre', {text: [
      'import tfprobe',
      '',
      'model.fit(x, y, epochs=5,',
      '          callbacks=[tfprobe.LayerProbe(log_dir="logs/run1")])',
      '',
      '# then: tensorboard --logdir logs',
    ].join('\n')}),
    el('p', {class: 'hint', text: 'Data written while TensorBoard runs shows up after the reload button (top right) is pressed.'}),
  );
}

function statSelect(value, onchange, only = null) {
  const select = el('select', {id: 'stat-select'});
  for (const s of only || state.stats) {
    const option = el('option', {value: s, text: s, title: state.descriptions[s] || ''});
    option.selected = s === value;
    select.append(option);
  }
  select.addEventListener('change', () => onchange(select.value));
  return select;
}

async function overviewView(runs, stale) {
  const width = mainWidth();
  const columns = Math.max(20, Math.min(600, Math.floor(width - 230))); // server cost grows with columns
  const results = await Promise.all(
    runs.map((run) =>
      getJSON('overview', {run, stat: state.stat, columns, agg: state.agg}).catch((e) => ({run, error: e.message})),
    ),
  );
  if (stale()) return null;
  const agg = el('select', {id: 'agg-select'});
  for (const a of ['last', 'max', 'min']) {
    const o = el('option', {value: a, text: a});
    o.selected = a === state.agg;
    agg.append(o);
  }
  agg.addEventListener('change', () => { state.agg = agg.value; showView(); });
  const zoom = el('input', {type: 'range', min: 2, max: 24, step: 1, id: 'row-height'});
  const maxRows = Math.max(1, ...results.map((r) => (r.layers ? r.layers.length : 1)));
  const autoRow = Math.max(2, Math.min(18, Math.floor(560 / maxRows)));
  zoom.value = String(state.rowHeight ?? autoRow);
  zoom.addEventListener('change', () => { state.rowHeight = Number(zoom.value); showView(); });
  const controls = el(
    'div',
    {class: 'controls'},
    el('label', {}, 'Colour by ', statSelect(state.stat, (s) => { state.stat = s; showView(); })),
    el('label', {title: 'value shown when several logged windows share one column'}, 'per column ', agg),
    el('label', {title: 'row height; labels are shown from 9 px'}, 'row height ', zoom),
    el('span', {class: 'hint', text: 'Rows: layers in model order (input at the top). Click a row to open the layer.'}),
  );
  const out = el('div', {id: 'overview'}, controls);
  for (const res of results) {
    out.append(el('h2', {}, el('span', {class: 'swatch', style: `background:${runColor(res.run)}`}), ' ', el('span', {class: 'run-name', text: res.run})));
    if (res.error) {
      out.append(el('div', {class: 'error-box', text: res.error}));
      continue;
    }
    const fraction = /fraction|retention|size_ratio|hoyer/.test(res.stat);
    const scale = fraction && res.min >= 0 && res.max <= 1 ? makeScale(0, 1) : makeScale(res.min, res.max);
    out.append(
      el('div', {class: 'hint', text: `${res.layers.length} layers × ${res.steps.length} columns (${fmtInt(res.windows_read)} logged windows read; ${res.agg} value per column)`}),
      legend(scale, res.stat),
      heatmap({
        rows: res.layers,
        columns: res.steps,
        scale,
        width,
        rowHeight: state.rowHeight ?? autoRow,
        cellTitle: (row, step, v) => [`layer: ${row.name}`, `step: ${step}`, `${res.stat}: ${fmt(v)}`, `${row.class} (${row.kind})`],
        onRowClick: (row) => go('layer', row.name),
      }),
    );
  }
  return out;
}

async function layerView(runs, stale) {
  const layerData = await getJSON('layers', {run: runs});
  if (stale()) return null;
  // union of the selected runs' layers, in the first run's model order
  const layers = [];
  const seen = new Set();
  for (const run of runs) for (const l of layerData.runs[run].layers) if (!seen.has(l.name)) { seen.add(l.name); layers.push(l); }
  if (!state.layer || !seen.has(state.layer)) state.layer = layers.length ? layers[0].name : null;
  const info = layers.find((l) => l.name === state.layer);
  const available = state.stats.filter((s) => layers.some((l) => l.name === state.layer && l.stats.includes(s)));
  if (!state.detailStats) {
    state.detailStats = DETAIL_DEFAULT.filter((s) => available.includes(s));
    if (info && info.bounds) state.detailStats.push('saturation_fraction');
    if (info && info.kind === 'pooling') state.detailStats.push('mass_retention');
  }
  const stats = state.detailStats.filter((s) => available.includes(s));
  const [scalars, hists] = await Promise.all([
    stats.length ? getJSON('scalars', {run: runs, layer: state.layer, stat: stats, points: 1000}) : null,
    Promise.all(runs.filter((r) => layerData.runs[r].layers.some((l) => l.name === state.layer && l.histogram))
      .map((run) => getJSON('histogram', {run, layer: state.layer, columns: 400}).catch((e) => ({run, error: e.message})))),
  ]);
  if (stale()) return null;

  const layerSelect = el('select', {id: 'layer-select'});
  for (const l of layers) {
    const o = el('option', {value: l.name, text: l.name});
    o.selected = l.name === state.layer;
    layerSelect.append(o);
  }
  layerSelect.addEventListener('change', () => go('layer', layerSelect.value));
  const picker = el('div', {class: 'stat-picker', id: 'stat-picker'});
  for (const s of available) {
    const box = el('input', {type: 'checkbox', value: s});
    box.checked = stats.includes(s);
    box.addEventListener('change', () => {
      state.detailStats = available.filter((x) => (x === s ? box.checked : state.detailStats.includes(x)));
      showView();
    });
    picker.append(el('label', {title: state.descriptions[s] || ''}, box, s));
  }
  const smoothing = el('input', {type: 'range', min: 0, max: 0.99, step: 0.01, id: 'smoothing'});
  smoothing.value = String(state.smoothing);
  const smoothingText = el('span', {text: state.smoothing.toFixed(2)});
  smoothing.addEventListener('input', () => { smoothingText.textContent = Number(smoothing.value).toFixed(2); });
  smoothing.addEventListener('change', () => { state.smoothing = Number(smoothing.value); showView(); });
  const logBox = el('input', {type: 'checkbox', id: 'log-scale'});
  logBox.checked = state.logScale;
  logBox.addEventListener('change', () => { state.logScale = logBox.checked; showView(); });

  const out = el('div', {id: 'layer-detail'});
  out.append(
    el('h2', {}, 'Layer ', el('span', {class: 'layer-name', id: 'layer-title', text: state.layer || '–'})),
    info ? el('div', {class: 'hint', text: `${info.class || '?'} · ${info.kind} · output shape ${JSON.stringify(info.shape)} · ${info.elements === null ? '?' : fmtInt(info.elements)} elements per example${info.bounds ? ` · bounded ${JSON.stringify(info.bounds)}` : ''}`}) : null,
    el('div', {class: 'controls'}, el('label', {}, 'Layer ', layerSelect), el('label', {}, 'Smoothing ', smoothing, smoothingText), el('label', {}, logBox, 'log scale')),
    el('div', {class: 'controls'}, el('span', {text: 'Statistics:'}), picker),
  );
  out.append(seriesLegend(runs.filter((r) => scalars && scalars.runs.includes(r)).map((r) => ({name: r, color: runColor(r)}))));
  const [charts, cardWidth] = chartGrid(440);
  for (const s of stats) {
    const series = Object.entries(scalars.series[s] || {}).map(([run, pts]) => ({
      name: run,
      color: runColor(run),
      points: smooth(pts, state.smoothing),
      raw: state.smoothing > 0 ? pts : null,
    }));
    const last = series.map((x) => `${x.name}: ${fmt(x.raw ? x.raw[x.raw.length - 1]?.[1] : x.points[x.points.length - 1]?.[1])}`).join(' · ');
    charts.append(el('div', {class: 'chart-card', dataset: {stat: s}},
      el('h3', {text: s, title: state.descriptions[s] || ''}),
      el('div', {class: 'hint', text: `latest: ${last}`}),
      lineChart(series, {title: s, width: cardWidth, height: 170, logScale: state.logScale})));
  }
  out.append(charts);

  out.append(el('h2', {text: 'Histogram over time'}));
  if (!hists.length) out.append(el('p', {class: 'hint', text: 'No histograms were logged for this layer (LayerProbe histogram_freq).'}));
  for (const h of hists) out.append(histogramBlock(h));
  return out;
}

/** A grid of equal chart cards about `target` px wide; returns [grid, canvas width]. */
function chartGrid(target) {
  const gap = 16;
  const width = mainWidth();
  const cols = Math.max(1, Math.floor((width + gap) / (target + gap)));
  const card = Math.floor((width - gap * (cols - 1)) / cols);
  const grid = el('div', {class: 'charts', style: `grid-template-columns: repeat(${cols}, ${card}px)`});
  return [grid, card - 20];
}

function bucketLabel([lo, hi]) {
  const a = num(lo);
  const b = num(hi);
  if (a === 0 && b === 0) return '0';
  return `[${fmt(a)}, ${fmt(b)})`;
}

function histogramBlock(h) {
  const block = el('div', {class: 'hist-block'}, el('h3', {}, el('span', {class: 'swatch', style: `background:${runColor(h.run)}`}), ' ', el('span', {class: 'run-name', text: h.run})));
  if (h.error) return block.appendChild(el('div', {class: 'error-box', text: h.error})), block;
  if (!h.steps.length) return block.appendChild(el('p', {class: 'hint', text: 'no histogram points'})), block;
  // rows: buckets, largest values at the top; colour: share of the column's values (sqrt scale)
  const nb = h.buckets.length;
  const totals = h.counts.map((c) => c.reduce((a, b) => a + b, 0) || 1);
  const rows = [];
  for (let b = nb - 1; b >= 0; b--) {
    rows.push({name: bucketLabel(h.buckets[b]), values: h.counts.map((c, j) => Math.sqrt(c[b] / totals[j])), counts: h.counts.map((c) => c[b])});
  }
  const scale = makeScale(0, 1);
  block.append(
    el('div', {class: 'hint', text: 'Rows: value buckets (powers of two of |x|, positive at the top; "0" = exact zeros). Colour: sqrt of the share of values in the bucket.'}),
    heatmap({
      rows,
      columns: h.steps,
      scale,
      width: mainWidth(),
      labelWidth: 170,
      rowHeight: Math.max(4, Math.min(12, Math.floor(320 / rows.length))),
      cellTitle: (row, step, v) => {
        const j = h.steps.indexOf(step);
        return [`step: ${step}`, `bucket: ${row.name}`, `count: ${fmtInt(row.counts[j])} (${fmt(100 * v * v)}%)`];
      },
    }),
  );
  return block;
}

async function poolingView(runs, stale) {
  const results = await Promise.all(
    runs.map(async (run) => {
      try {
        const pool = await getJSON('pooling', {run, points: 500});
        const funnel = await getJSON('funnel', {run, step: state.funnelStep[run]});
        return {run, pool, funnel};
      } catch (e) {
        return {run, error: e.message};
      }
    }),
  );
  if (stale()) return null;
  const out = el('div', {id: 'pooling'});
  out.append(el('p', {class: 'hint', text: 'size_ratio = elements out / in; mass_retention = Σ|out| / Σ|in|; energy_retention = Σout² / Σin². The funnel shows elements per example per layer (bar, log scale) and, at pooling layers, the share of activation mass that survives; cumulative mass multiplies the pooling layers so far.'}));
  const colors = {size_ratio: '#607d8b', mass_retention: '#43a047', energy_retention: '#f57c00', zero_fraction_in: '#8e24aa'};
  for (const res of results) {
    out.append(el('h2', {}, el('span', {class: 'swatch', style: `background:${runColor(res.run)}`}), ' ', el('span', {class: 'run-name', text: res.run})));
    if (res.error) {
      out.append(el('div', {class: 'error-box', text: res.error}));
      continue;
    }
    if (!res.pool.layers.length) out.append(el('p', {class: 'hint', text: 'No pooling layers were recorded in this run.'}));
    const [charts, cardWidth] = chartGrid(400);
    for (const layer of res.pool.layers) {
      const stats = ['size_ratio', 'mass_retention', 'energy_retention'].filter((s) => layer.stats[s]);
      const series = stats.map((s) => ({name: s, color: colors[s], points: layer.stats[s]}));
      charts.append(el('div', {class: 'chart-card pool-card', dataset: {layer: layer.name}},
        el('h3', {}, el('button', {class: 'link layer-name', text: layer.name, onclick: () => go('layer', layer.name)})),
        seriesLegend(series),
        lineChart(series, {title: layer.name, width: cardWidth, height: 150, logScale: state.logScale})));
    }
    out.append(charts, funnelBlock(res.run, res.funnel));
  }
  return out;
}

function funnelBlock(run, f) {
  const block = el('div', {class: 'funnel-block'});
  const controls = el('div', {class: 'controls'}, el('strong', {text: 'Depth funnel'}));
  if (f.steps.length) {
    const slider = el('input', {type: 'range', min: 0, max: f.steps.length - 1, step: 1, class: 'funnel-step'});
    slider.value = String(Math.max(0, f.steps.indexOf(f.step)));
    const label = el('span', {text: `step ${f.step}`});
    slider.addEventListener('input', () => { label.textContent = `step ${f.steps[Number(slider.value)]}`; });
    slider.addEventListener('change', () => { state.funnelStep[run] = f.steps[Number(slider.value)]; showView(); });
    controls.append(el('label', {}, 'at ', slider, label));
  } else {
    controls.append(el('span', {class: 'hint', text: 'latest window (no pooling statistics logged)'}));
  }
  block.append(controls);
  const maxLog = Math.max(1, ...f.layers.map((l) => (l.elements ? Math.log10(l.elements + 1) : 0)));
  const table = el('table', {class: 'funnel'});
  table.append(el('tr', {}, ['layer', 'elements / example', '', 'mass kept', 'energy kept', 'cumulative mass'].map((t) => el('th', {text: t}))));
  for (const l of f.layers) {
    const w = l.elements ? (100 * Math.log10(l.elements + 1)) / maxLog : 0;
    const pool = l.kind === 'pooling';
    table.append(
      el('tr', {class: pool ? 'pooling' : ''},
        el('td', {}, el('button', {class: 'link layer-name', text: l.name, onclick: () => go('layer', l.name)})),
        el('td', {text: l.elements === null ? '?' : fmtInt(l.elements)}),
        el('td', {class: 'bar-cell'}, el('div', {class: 'bar' + (pool ? ' pool' : ''), style: `width:${w}%`})),
        el('td', {text: pool ? `${fmt(100 * num(l.mass_retention))}%` : ''}),
        el('td', {text: pool ? `${fmt(100 * num(l.energy_retention))}%` : ''}),
        el('td', {class: 'mass-cell'},
          el('div', {class: 'bar mass', style: `width:${Math.max(0, Math.min(100, 100 * num(l.cumulative_mass)))}%`}),
          el('span', {class: 'hint', text: `${fmt(100 * num(l.cumulative_mass))}%`}))),
    );
  }
  block.append(table);
  return block;
}

async function healthView(runs, stale) {
  const res = await getJSON('health', {run: runs});
  if (stale()) return null;
  const t = res.thresholds;
  const out = el('div', {id: 'health'});
  out.append(el('p', {class: 'hint', text: `Thresholds: dead layer ≥ ${fmt(100 * t.dead_layer_fraction)}% zeros; dead units > ${fmt(100 * t.dead_units_fraction)}%; saturation > ${fmt(100 * t.saturation_fraction)}%; exploding/vanishing: std changes > ${fmt(t.std_ratio)}× between consecutive layers or since the first window. Based on up to ${res.points} points per series.`}));
  if (!res.findings.length) {
    out.append(el('p', {id: 'no-findings', text: 'No findings: no NaN/Inf, dead layers, dead units, saturation or exploding/vanishing activations above the thresholds.'}));
    return out;
  }
  const table = el('table', {class: 'findings'});
  table.append(el('tr', {}, ['severity', 'run', 'layer', 'finding', 'statistic', 'first step', 'last step', 'details'].map((x) => el('th', {text: x}))));
  for (const f of res.findings) {
    table.append(
      el('tr', {class: `finding sev-row-${f.severity}`},
        el('td', {}, el('span', {class: `sev sev-${f.severity}`, text: f.severity})),
        el('td', {}, el('span', {class: 'swatch', style: `background:${runColor(f.run)}`}), ' ', el('span', {text: f.run})),
        el('td', {}, el('button', {class: 'link layer-name', text: f.layer, onclick: () => go('layer', f.layer)})),
        el('td', {text: f.kind.replace(/_/g, ' ')}),
        el('td', {text: f.stat}),
        el('td', {text: String(f.first_step)}),
        el('td', {text: String(f.last_step)}),
        el('td', {text: f.message})),
    );
  }
  out.append(table);
  return out;
}

// ------------------------------------------------------------------ entry

export async function render() {
  const css = el('link', {rel: 'stylesheet', href: './static/style.css'});
  document.head.append(css);
  root = el('div', {id: 'tfprobe'});
  statusEl = el('span', {class: 'status', id: 'status', text: 'loading'});
  pickerEl = el('div', {class: 'run-picker', id: 'run-picker'});
  tabsEl = el('nav', {class: 'tabs', role: 'tablist'});
  mainEl = el('main', {id: 'view'});
  root.append(el('header', {class: 'tp-header'}, pickerEl, tabsEl, statusEl), mainEl);
  document.body.append(root);
  renderTabs();
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
