// Representations: what the layers represent on the reference set (LayerProbe(reference_data=...)).
// Per run: the layers x layers linear CKA heat map at a reference step chosen with a slider (no
// refetch), effective rank, probe accuracy and label information against depth (one line per
// reference step, darker = later), and each layer's cka_drift over training; with several runs,
// their latest reference steps against depth overlaid first.

import {el, fmt, fmtInt, heatmap, legend, lineChart, makeScale, seriesLegend, viridis} from '../charts.js';
import {getJSON, runColor} from '../model.js';
import {app, layerMatches, mainWidth} from '../state.js';
import {chartGrid, filterNote, runHeading} from './common.js';

const DEPTH_STATS = ['effective_rank', 'probe_accuracy', 'label_information', 'stable_rank'];
const EXPLAIN = 'Measured at each reference step on a fixed reference set, in inference mode. CKA: linear centred kernel alignment between two layers (1 = the same representation up to rotation and scale; biased above 0 on finite sets). Against depth: the x axis is the layer\'s position in the model (0 = nearest the input), one line per reference step, darker = later. cka_drift: CKA of a layer with itself at the previous reference step (1 = it stopped changing).';
const chosen = {}; // run -> index into that run's CKA steps (default: the last)

export async function load(runs) {
  return getJSON('representations', {run: runs});
}

const valueAt = (points, step) => ((points || []).find((p) => p[0] === step) || [step, null])[1];
const rgb = (t) => `rgb(${viridis(t).map((c) => c | 0).join(',')})`;

function ckaBlock(run, cka) {
  const block = el('div', {class: 'cka-block', dataset: {run}});
  if (!cka.steps.length) return block;
  const keep = cka.layers.map((name, i) => [name, i]).filter(([name]) => layerMatches(name));
  const index = Math.min(chosen[run] ?? cka.steps.length - 1, cka.steps.length - 1);
  const slider = el('input', {type: 'range', min: 0, max: cka.steps.length - 1, step: 1, class: 'cka-step'});
  slider.value = String(index);
  const label = el('span', {class: 'cka-step-label', text: `step ${cka.steps[index]}`});
  const scale = makeScale(0, 1);
  const map = (i) => {
    const step = cka.steps[i];
    const rows = keep.map(([name, r]) => ({name, values: keep.map(([, c]) => cka.matrices[i][r][c])}));
    const rowHeight = Math.max(12, Math.min(28, Math.floor(360 / Math.max(1, rows.length))));
    return heatmap({
      rows, columns: keep.map(([name]) => name), scale, rowHeight,
      width: Math.min(mainWidth(), 200 + 24 + Math.max(240, rows.length * rowHeight)),
      cellTitle: (row, col, v) => [`${row.name} × ${col}`, `CKA ${fmt(v)} at step ${step}`],
      onRowClick: (row) => app.go('layer', row.name),
    });
  };
  let shownMap = map(index);
  slider.addEventListener('input', () => {
    const i = Number(slider.value);
    chosen[run] = i;
    label.textContent = `step ${cka.steps[i]}`;
    const next = map(i);
    shownMap.replaceWith(next);
    shownMap = next;
  });
  block.append(el('div', {class: 'controls'}, el('strong', {text: 'Layer similarity (linear CKA)'}),
    el('label', {}, ' at ', slider, label)), legend(scale, 'CKA'), shownMap);
  return block;
}

function depthCharts(res, descriptions) {
  const [grid, width] = chartGrid(420);
  const layers = res.layers.filter((name) => layerMatches(name));
  const steps = res.steps;
  const color = (k) => rgb(steps.length > 1 ? 0.85 - (0.8 * k) / (steps.length - 1) : 0.4); // later = darker
  for (const stat of DEPTH_STATS) {
    const byLayer = res.measures[stat] || {};
    if (!layers.some((name) => byLayer[name])) continue;
    const series = steps.map((step, k) => ({
      name: `step ${step}`,
      color: color(k),
      // x: the layer's position among all recorded layers (the filter hides points, not positions)
      points: res.layers.map((name, i) => [i, layerMatches(name) ? valueAt(byLayer[name], step) : null])
        .filter((p) => p[1] !== null),
    }));
    const ends = series.length > 1 ? [series[0], series[series.length - 1]] : series;
    grid.append(el('div', {class: 'chart-card depth-card', dataset: {stat}},
      el('h3', {text: `${stat} against depth`, title: descriptions[stat] || ''}),
      seriesLegend(ends),
      lineChart(series, {title: stat, width, height: 170, xName: 'layer', integerX: true}),
      el('div', {class: 'hint depth-axis', text: res.layers.map((name, i) => [i, name]).filter(([, name]) => layerMatches(name))
        .map(([i, name]) => `${i}: ${name} (${fmtInt(res.elements[name])} values/example)`).join(' · ')})));
  }
  return grid;
}

function driftChart(res, descriptions) {
  const [grid, width] = chartGrid(860);
  const drift = res.measures.cka_drift || {};
  const layers = res.layers.filter((name) => layerMatches(name) && drift[name]);
  if (!layers.length) return grid;
  const series = layers.map((name, i) => ({name, color: rgb(layers.length > 1 ? i / (layers.length - 1) : 0.5), points: drift[name]}));
  grid.append(el('div', {class: 'chart-card drift-card', dataset: {stat: 'cka_drift'}},
    el('h3', {text: 'cka_drift over training', title: descriptions.cka_drift || ''}),
    seriesLegend(series),
    lineChart(series, {title: 'cka_drift', width, height: 190})));
  return grid;
}

/** With two runs or more: each run's latest reference step against depth, one line per run. */
function runsOverlay(runs, descriptions) {
  const withSteps = runs.filter((res) => res.steps.length);
  const block = el('div', {class: 'runs-overlay'});
  if (withSteps.length < 2) return block;
  const [grid, width] = chartGrid(420);
  for (const stat of DEPTH_STATS.slice(0, 3)) {
    const series = withSteps.map((res) => {
      const last = res.steps[res.steps.length - 1];
      const byLayer = res.measures[stat] || {};
      return {name: `${res.run} (step ${last})`, color: runColor(res.run),
        points: res.layers.map((name, i) => [i, layerMatches(name) ? valueAt(byLayer[name], last) : null])
          .filter((p) => p[1] !== null)};
    });
    grid.append(el('div', {class: 'chart-card overlay-card', dataset: {stat}},
      el('h3', {text: `${stat} against depth, latest reference step`, title: descriptions[stat] || ''}),
      seriesLegend(series), lineChart(series, {title: stat, width, height: 170, xName: 'layer', integerX: true})));
  }
  block.append(el('h2', {text: 'All selected runs'}), grid);
  return block;
}

export function draw(data) {
  const out = el('div', {id: 'representations'}, el('p', {class: 'hint', text: EXPLAIN}));
  out.append(runsOverlay(data.runs, data.descriptions));
  for (const res of data.runs) {
    out.append(runHeading(res.run));
    if (!res.steps.length) {
      out.append(el('p', {class: 'hint no-reference', text: 'No reference steps in this run: pass reference_data=(x, y) to tfprobe.LayerProbe (README, "Representations").'}));
      continue;
    }
    const note = filterNote(res.layers.filter((name) => layerMatches(name)).length, res.layers.length);
    if (note) out.append(note);
    out.append(ckaBlock(res.run, res.cka), depthCharts(res, data.descriptions), driftChart(res, data.descriptions));
  }
  return out;
}
