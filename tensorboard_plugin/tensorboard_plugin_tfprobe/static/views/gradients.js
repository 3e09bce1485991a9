// Gradient flow: at one step (slider, play), every shown layer in model order with its
// activation-gradient rms and its update ratio (both log scale), the selected runs overlaid.
// Every window is fetched once (/overview of grad_rms and update_ratio per run); the slider and
// play only redraw.

import {el, fmt, lineChart, seriesLegend} from '../charts.js';
import {getJSON, num, runColor} from '../model.js';
import {filterNote, runHeading} from './common.js';
import {layerMatches, mainWidth, state} from '../state.js';

const STATS = ['grad_rms', 'update_ratio'];
const GUIDE = 1e-3; // update ratio rule of thumb: much lower learns slowly, much higher is unstable
const PLAY_MS = 400;
const EXPLAIN = 'grad_rms: rms of dL/da, the error signal reaching each layer\'s output (a slope toward the input = vanishing gradients). update_ratio: ||w_after - w_before|| / ||w_before|| of the update the optimizer applied (layers with weights; the dashed line is the 1e-3 rule of thumb; a gap = no update). Both log scale, input side on the left.';

const hasGradients = (run) => [...(state.context.layers.get(run)?.values() || [])].some((l) => l.stats.includes('grad_rms'));

export async function load(runs) {
  const columns = 500;
  return Promise.all(runs.map(async (run) => {
    if (!hasGradients(run)) return {run, missing: true};
    try {
      const [rms, ratio] = await Promise.all(STATS.map((stat) => getJSON('overview', {run, stat, columns}).catch((e) => {
        if (stat === 'update_ratio') return null; // no layer with weights: gradients only
        throw e;
      })));
      return {run, stats: {grad_rms: rms, update_ratio: ratio}};
    } catch (e) {
      return {run, error: e.message};
    }
  }));
}

/** `{layer: value}` of one /overview response at the newest column at or before `step`. */
export function valuesAt(res, step) {
  if (!res) return {};
  let j = -1;
  for (let i = 0; i < res.steps.length && res.steps[i] <= step; i++) j = i;
  const out = {};
  if (j < 0) return out;
  for (const l of res.layers) out[l.name] = l.values[j];
  return out;
}

/** The runs' layer sequences merged: each run's model order kept, a layer new in a later run placed
 * right after the layer before it in that run (a deeper stack's extra layers stay before the head).
 *
 *   mergeOrders([['a', 'b', 'z'], ['a', 'b', 'c', 'd', 'z']]) -> ['a', 'b', 'c', 'd', 'z']
 */
export function mergeOrders(sequences) {
  const names = [];
  for (const seq of sequences) {
    let at = 0; // insertion point: after the last layer of this run already placed
    for (const name of seq) {
      const found = names.indexOf(name);
      if (found >= 0) at = found + 1;
      else names.splice(at++, 0, name);
    }
  }
  return names;
}

/** The runs' layers with gradient statistics in model order (`mergeOrders`): all, and those shown. */
function layerOrder(results) {
  const sequences = results.filter((r) => r.stats).map((r) =>
    [...(state.context.layers.get(r.run)?.values() || [])].filter((l) => l.stats.includes('grad_rms')).map((l) => l.name));
  const names = mergeOrders(sequences);
  return {all: names, shown: names.filter((n) => layerMatches(n))};
}

function allSteps(results) {
  const steps = new Set();
  for (const res of results) if (res.stats) for (const s of res.stats.grad_rms.steps) steps.add(s);
  return [...steps].sort((a, b) => a - b);
}

function charts(results, layers, step, width) {
  const index = new Map(layers.map((n, i) => [n, i]));
  const cards = STATS.map((stat) => {
    const series = results.filter((r) => r.stats && r.stats[stat]).map((r) => {
      const values = valuesAt(r.stats[stat], step);
      // only the layers that recorded `stat`: update_ratio's line joins the layers with weights
      const points = layers.filter((n) => n in values).map((n) => [index.get(n), num(values[n])]);
      return {name: r.run, color: runColor(r.run), points};
    });
    const chart = lineChart(series, {title: stat, width, height: 260, logScale: true, xLabels: layers, xName: 'layer',
      markers: true, guides: stat === 'update_ratio' ? [GUIDE] : []});
    chart.dataset.stat = stat;
    chart.dataset.points = JSON.stringify(series.map((s) => s.points.map(([, v]) => fmt(v))));
    return el('div', {class: 'chart-card', dataset: {stat}},
      el('h3', {text: stat === 'grad_rms' ? 'grad_rms (activation gradient)' : 'update_ratio (guide: 1e-3)', title: state.descriptions[stat] || ''}),
      chart);
  });
  return cards;
}

function stepControls(steps, onStep) {
  const slider = el('input', {type: 'range', min: 0, max: steps.length - 1, step: 1, id: 'grad-step'});
  const label = el('span', {id: 'grad-step-label'});
  const play = el('button', {type: 'button', id: 'grad-play', text: '▶ play', title: 'animate over the logged steps'});
  let timer = null;
  const stop = () => { clearInterval(timer); timer = null; play.textContent = '▶ play'; };
  const set = (i) => {
    slider.value = String(i);
    state.gradStep = steps[i];
    label.textContent = `step ${steps[i]}`;
    onStep(steps[i]);
  };
  slider.addEventListener('input', () => { stop(); set(Number(slider.value)); });
  play.addEventListener('click', () => {
    if (timer !== null) return stop();
    if (Number(slider.value) >= steps.length - 1) set(0);
    play.textContent = '❚❚ pause';
    timer = setInterval(() => {
      const next = Number(slider.value) + 1;
      if (!slider.isConnected || next >= steps.length) return stop();
      set(next);
      if (next === steps.length - 1) stop();
    }, PLAY_MS);
  });
  const start = steps.indexOf(state.gradStep);
  return {node: el('div', {class: 'controls'}, el('label', {}, 'at ', slider, label), play), start: start < 0 ? steps.length - 1 : start, set};
}

export function draw(results) {
  const out = el('div', {id: 'gradients'}, el('p', {class: 'hint', text: EXPLAIN}));
  for (const res of results) {
    if (res.missing) out.append(runHeading(res.run, 'h3'), el('p', {class: 'hint no-gradients', text: 'This run has no gradient statistics: record them with LayerProbe(..., gradients=True).'}));
    else if (res.error) out.append(runHeading(res.run, 'h3'), el('div', {class: 'error-box', text: res.error}));
  }
  const steps = allSteps(results);
  if (!steps.length) return out;
  const {all, shown} = layerOrder(results);
  const note = filterNote(shown.length, all.length);
  if (note) out.append(note);
  if (!shown.length) return out.appendChild(el('p', {class: 'hint no-match', text: 'No layer matches the filter.'})), out;
  const withData = results.filter((r) => r.stats);
  const width = Math.max(400, mainWidth() - 20);
  const area = el('div', {class: 'grad-charts', id: 'grad-charts'});
  const controls = stepControls(steps, (step) => {
    area.dataset.step = String(step);
    area.replaceChildren(...charts(withData, shown, step, width));
  });
  out.append(controls.node, seriesLegend(withData.map((r) => ({name: r.run, color: runColor(r.run)}))), area);
  controls.set(controls.start);
  return out;
}
