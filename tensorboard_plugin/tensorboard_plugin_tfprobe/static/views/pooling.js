// Pooling: each pooling layer's retention statistics over steps, and the depth funnel.

import {el, fmt, fmtInt, lineChart, seriesLegend} from '../charts.js';
import {getJSON, num} from '../model.js';
import {app, layerMatches, state} from '../state.js';
import {chartGrid, filterNote, runHeading} from './common.js';

const COLORS = {size_ratio: '#607d8b', mass_retention: '#43a047', energy_retention: '#f57c00', zero_fraction_in: '#8e24aa'};
const EXPLAIN = 'size_ratio = elements out / in; mass_retention = Σ|out| / Σ|in|; energy_retention = Σout² / Σin². The funnel shows elements per example per layer (bar, log scale) and, at pooling layers, the share of activation mass that survives; cumulative mass multiplies the pooling layers so far.';

export async function load(runs) {
  return Promise.all(
    runs.map(async (run) => {
      try {
        const [pool, funnel] = await Promise.all([
          getJSON('pooling', {run, points: 500}),
          getJSON('funnel', {run, step: state.funnelStep[run]}),
        ]);
        return {run, pool, funnel};
      } catch (e) {
        return {run, error: e.message};
      }
    }),
  );
}

function poolCharts(layers) {
  const [charts, cardWidth] = chartGrid(400);
  for (const layer of layers) {
    const stats = ['size_ratio', 'mass_retention', 'energy_retention'].filter((s) => layer.stats[s]);
    const series = stats.map((s) => ({name: s, color: COLORS[s], points: layer.stats[s]}));
    charts.append(el('div', {class: 'chart-card pool-card', dataset: {layer: layer.name}},
      el('h3', {}, el('button', {class: 'link layer-name', text: layer.name, onclick: () => app.go('layer', layer.name)})),
      seriesLegend(series),
      lineChart(series, {title: layer.name, width: cardWidth, height: 150, logScale: state.logScale})));
  }
  return charts;
}

export function draw(results) {
  const out = el('div', {id: 'pooling'}, el('p', {class: 'hint', text: EXPLAIN}));
  for (const res of results) {
    out.append(runHeading(res.run));
    if (res.error) {
      out.append(el('div', {class: 'error-box', text: res.error}));
      continue;
    }
    if (!res.pool.layers.length) out.append(el('p', {class: 'hint', text: 'No pooling layers were recorded in this run.'}));
    const pools = res.pool.layers.filter((l) => layerMatches(l.name, res.run));
    const note = filterNote(pools.length, res.pool.layers.length);
    if (note) out.append(note);
    out.append(poolCharts(pools), funnelBlock(res.run, res.funnel));
  }
  return out;
}

function funnelControls(run, f) {
  const controls = el('div', {class: 'controls'}, el('strong', {text: 'Depth funnel'}));
  if (!f.steps.length) {
    controls.append(el('span', {class: 'hint', text: 'latest window (no pooling statistics logged)'}));
    return controls;
  }
  const slider = el('input', {type: 'range', min: 0, max: f.steps.length - 1, step: 1, class: 'funnel-step'});
  slider.value = String(Math.max(0, f.steps.indexOf(f.step)));
  const label = el('span', {text: `step ${f.step}`});
  slider.addEventListener('input', () => { label.textContent = `step ${f.steps[Number(slider.value)]}`; });
  slider.addEventListener('change', () => { state.funnelStep[run] = f.steps[Number(slider.value)]; app.showView(); });
  controls.append(el('label', {}, 'at ', slider, label));
  return controls;
}

function funnelRow(l, maxLog) {
  const w = l.elements ? (100 * Math.log10(l.elements + 1)) / maxLog : 0;
  const pool = l.kind === 'pooling';
  const pct = (v) => `${fmt(100 * num(v))}%`;
  return el('tr', {class: pool ? 'pooling' : ''},
    el('td', {}, el('button', {class: 'link layer-name', text: l.name, onclick: () => app.go('layer', l.name)})),
    el('td', {text: l.elements === null ? '?' : fmtInt(l.elements)}),
    el('td', {class: 'bar-cell'}, el('div', {class: 'bar' + (pool ? ' pool' : ''), style: `width:${w}%`})),
    el('td', {text: pool ? pct(l.mass_retention) : ''}),
    el('td', {text: pool ? pct(l.energy_retention) : ''}),
    el('td', {class: 'mass-cell'},
      el('div', {class: 'bar mass', style: `width:${Math.max(0, Math.min(100, 100 * num(l.cumulative_mass)))}%`}),
      el('span', {class: 'hint', text: pct(l.cumulative_mass)})));
}

function funnelBlock(run, f) {
  const block = el('div', {class: 'funnel-block'}, funnelControls(run, f));
  // the bar scale and cumulative mass use every layer; the filter only hides rows
  const maxLog = Math.max(1, ...f.layers.map((l) => (l.elements ? Math.log10(l.elements + 1) : 0)));
  const rows = f.layers.filter((l) => layerMatches(l.name, run));
  const note = filterNote(rows.length, f.layers.length);
  if (note) block.append(note);
  const table = el('table', {class: 'funnel'});
  table.append(el('tr', {}, ['layer', 'elements / example', '', 'mass kept', 'energy kept', 'cumulative mass'].map((t) => el('th', {text: t}))));
  for (const l of rows) table.append(funnelRow(l, maxLog));
  block.append(table);
  return block;
}
