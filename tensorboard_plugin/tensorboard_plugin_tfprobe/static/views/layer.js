// Layer detail: statistics of one layer over steps (all selected runs overlaid) and its
// histogram over time, with its activation gradient's next to it when recorded (LayerProbe
// gradients=True). Smoothing and log scale only redraw the charts (no request).

import {el, fmt, fmtInt, heatmap, lineChart, makeScale, seriesLegend} from '../charts.js';
import {getJSON, num, runColor, smooth} from '../model.js';
import {app, filterDescription, layerMatches, mainWidth, state} from '../state.js';
import {chartGrid, runHeading} from './common.js';

const DETAIL_DEFAULT = ['mean', 'std', 'zero_fraction', 'dead_unit_fraction'];
// `quantity` of /histogram and the flag of /layers saying it was recorded
const HIST_QUANTITIES = [['activation', 'histogram'], ['gradient', 'grad_histogram']];
const HIST_TITLES = {activation: 'activation a', gradient: 'activation gradient dL/da (unscaled)'};

export async function load(runs) {
  const layerData = await getJSON('layers', {run: runs});
  // union of the selected runs' layers, in the first run's model order
  const layers = [];
  const seen = new Set();
  for (const run of runs) for (const l of layerData.runs[run].layers) if (!seen.has(l.name)) { seen.add(l.name); layers.push(l); }
  if (!state.layer || !seen.has(state.layer)) {
    const first = layers.find((l) => layerMatches(l.name)) || layers[0];
    state.layer = first ? first.name : null;
  }
  const info = layers.find((l) => l.name === state.layer);
  const available = state.stats.filter((s) => info && info.stats.includes(s));
  if (!state.detailStats) {
    state.detailStats = DETAIL_DEFAULT.filter((s) => available.includes(s));
    if (info && info.bounds) state.detailStats.push('saturation_fraction');
    if (info && info.kind === 'pooling') state.detailStats.push('mass_retention');
    // with LayerProbe(gradients=True): the error signal reaching the layer and its weights' update
    for (const s of ['grad_rms', 'update_ratio']) if (available.includes(s)) state.detailStats.push(s);
  }
  const stats = state.detailStats.filter((s) => available.includes(s));
  // per run: the histogram of the layer's values and of its activation gradient, each if recorded
  const has = (run, key) => layerData.runs[run].layers.some((l) => l.name === state.layer && l[key]);
  const fetchHist = (run, quantity) => getJSON('histogram', {run, layer: state.layer, columns: 400, quantity})
    .catch((e) => ({run, quantity, error: e.message}));
  const histsOf = async (run) => {
    const [activation, gradient] = await Promise.all(HIST_QUANTITIES.map(([q, key]) => (has(run, key) ? fetchHist(run, q) : null)));
    return {run, activation, gradient};
  };
  const withHist = runs.filter((r) => HIST_QUANTITIES.some(([, key]) => has(r, key)));
  const [scalars, hists] = await Promise.all([
    stats.length ? getJSON('scalars', {run: runs, layer: state.layer, stat: stats, points: 1000}) : null,
    Promise.all(withHist.map(histsOf)),
  ]);
  return {runs, layers, info, available, stats, scalars, hists};
}

function layerSelect(layers) {
  const select = el('select', {id: 'layer-select'});
  for (const l of layers.filter((x) => x.name === state.layer || layerMatches(x.name))) {
    const o = el('option', {value: l.name, text: l.name});
    o.selected = l.name === state.layer;
    select.append(o);
  }
  select.addEventListener('change', () => app.go('layer', select.value));
  return select;
}

function statPicker(available, stats) {
  const picker = el('div', {class: 'stat-picker', id: 'stat-picker'});
  for (const s of available) {
    const box = el('input', {type: 'checkbox', value: s});
    box.checked = stats.includes(s);
    box.addEventListener('change', () => {
      state.detailStats = available.filter((x) => (x === s ? box.checked : state.detailStats.includes(x)));
      app.showView();
    });
    picker.append(el('label', {title: state.descriptions[s] || ''}, box, s));
  }
  return picker;
}

/** Fills `grid` with one chart per statistic, applying smoothing and log scale client-side. */
function drawCharts(grid, data, cardWidth) {
  grid.dataset.smoothing = state.smoothing.toFixed(2);
  grid.dataset.logScale = String(state.logScale);
  grid.replaceChildren();
  for (const s of data.stats) {
    const series = Object.entries(data.scalars.series[s] || {}).map(([run, pts]) => ({
      name: run,
      color: runColor(run),
      points: smooth(pts, state.smoothing),
      raw: state.smoothing > 0 ? pts : null,
    }));
    const latest = (x) => (x.raw || x.points)[(x.raw || x.points).length - 1]?.[1];
    const last = series.map((x) => `${x.name}: ${fmt(latest(x))}`).join(' · ');
    grid.append(el('div', {class: 'chart-card', dataset: {stat: s}},
      el('h3', {text: s, title: state.descriptions[s] || ''}),
      el('div', {class: 'hint', text: `latest: ${last}`}),
      lineChart(series, {title: s, width: cardWidth, height: 170, logScale: state.logScale})));
  }
}

function transformControls(redrawCharts) {
  const smoothing = el('input', {type: 'range', min: 0, max: 0.99, step: 0.01, id: 'smoothing'});
  smoothing.value = String(state.smoothing);
  const smoothingText = el('span', {text: state.smoothing.toFixed(2)});
  smoothing.addEventListener('input', () => {
    state.smoothing = Number(smoothing.value);
    smoothingText.textContent = state.smoothing.toFixed(2);
    redrawCharts();
  });
  const logBox = el('input', {type: 'checkbox', id: 'log-scale'});
  logBox.checked = state.logScale;
  logBox.addEventListener('change', () => { state.logScale = logBox.checked; redrawCharts(); });
  return [el('label', {}, 'Smoothing ', smoothing, smoothingText), el('label', {}, logBox, 'log scale')];
}

function infoLine(info) {
  if (!info) return null;
  const elements = info.elements === null ? '?' : fmtInt(info.elements);
  const bounds = info.bounds ? ` · bounded ${JSON.stringify(info.bounds)}` : '';
  return el('div', {class: 'hint', text: `${info.class || '?'} · ${info.kind} · output shape ${JSON.stringify(info.shape)} · ${elements} elements per example${bounds}`});
}

export function draw(data) {
  const [charts, cardWidth] = chartGrid(440);
  charts.id = 'layer-charts';
  const redrawCharts = () => drawCharts(charts, data, cardWidth);
  const out = el('div', {id: 'layer-detail'});
  out.append(
    el('h2', {}, 'Layer ', el('span', {class: 'layer-name', id: 'layer-title', text: state.layer || '–'})),
    ...[infoLine(data.info)].filter(Boolean),
    el('div', {class: 'controls'}, el('label', {}, 'Layer ', layerSelect(data.layers)), ...transformControls(redrawCharts)),
    el('div', {class: 'controls'}, el('span', {text: 'Statistics:'}), statPicker(data.available, data.stats)),
  );
  if (state.layer && !layerMatches(state.layer)) {
    out.append(el('p', {class: 'hint filter-note', text: `This layer is hidden elsewhere: shown layers ${filterDescription()}.`}));
  }
  const shown = data.runs.filter((r) => data.scalars && data.scalars.runs.includes(r));
  out.append(seriesLegend(shown.map((r) => ({name: r, color: runColor(r)}))));
  if (data.scalars) redrawCharts();
  out.append(charts, el('h2', {text: 'Histogram over time'}));
  if (!data.hists.length) out.append(el('p', {class: 'hint', text: 'No histograms were logged for this layer (LayerProbe histogram_freq).'}));
  for (const h of data.hists) out.append(histogramBlock(h));
  return out;
}

function bucketLabel([lo, hi]) {
  const a = num(lo);
  const b = num(hi);
  if (a === 0 && b === 0) return '0';
  return `[${fmt(a)}, ${fmt(b)})`;
}

/** One run's histograms: the activation's and, when recorded, its gradient's side by side. */
function histogramBlock(h) {
  const block = el('div', {class: 'hist-block'}, runHeading(h.run, 'h3'));
  const shown = HIST_QUANTITIES.map(([q]) => h[q]).filter(Boolean);
  const width = shown.length > 1 ? Math.floor((mainWidth() - 12) / 2) : mainWidth();
  block.append(
    el('div', {class: 'hint', text: 'Rows: value buckets (powers of two of |x|, positive at the top; "0" = exact zeros). Colour: sqrt of the share of values in the bucket.'}),
    el('div', {class: 'hist-pair'}, ...shown.map((one) => histogramPanel(one, width, Boolean(h.gradient)))),
  );
  return block;
}

function histogramPanel(h, width, titled) {
  const panel = el('div', {class: 'hist-panel', dataset: {quantity: h.quantity}});
  if (titled) panel.append(el('h4', {text: HIST_TITLES[h.quantity] || h.quantity}));
  if (h.error) return panel.appendChild(el('div', {class: 'error-box', text: h.error})), panel;
  if (!h.steps.length) return panel.appendChild(el('p', {class: 'hint', text: 'no histogram points'})), panel;
  // rows: buckets, largest values at the top; colour: share of the column's values (sqrt scale)
  const nb = h.buckets.length;
  const totals = h.counts.map((c) => c.reduce((a, b) => a + b, 0) || 1);
  const rows = [];
  for (let b = nb - 1; b >= 0; b--) {
    rows.push({name: bucketLabel(h.buckets[b]), values: h.counts.map((c, j) => Math.sqrt(c[b] / totals[j])), counts: h.counts.map((c) => c[b])});
  }
  panel.append(
    heatmap({
      rows,
      columns: h.steps,
      scale: makeScale(0, 1),
      width,
      labelWidth: 170,
      rowHeight: Math.max(4, Math.min(12, Math.floor(320 / rows.length))),
      cellTitle: (row, step, v) => {
        const j = h.steps.indexOf(step);
        return [`step: ${step}`, `bucket: ${row.name}`, `count: ${fmtInt(row.counts[j])} (${fmt(100 * v * v)}%)`];
      },
    }),
  );
  return panel;
}
