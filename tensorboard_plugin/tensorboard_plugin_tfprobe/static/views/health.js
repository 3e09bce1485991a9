// Health: tfprobe.diagnose findings over the selected runs, most severe first.

import {el, fmt} from '../charts.js';
import {getJSON, runColor} from '../model.js';
import {app, layerMatches} from '../state.js';
import {filterNote} from './common.js';

export async function load(runs) {
  return getJSON('health', {run: runs});
}

function findingRow(f) {
  return el('tr', {class: `finding sev-row-${f.severity}`},
    el('td', {}, el('span', {class: `sev sev-${f.severity}`, text: f.severity})),
    el('td', {}, el('span', {class: 'swatch', style: `background:${runColor(f.run)}`}), ' ', el('span', {text: f.run})),
    el('td', {}, el('button', {class: 'link layer-name', text: f.layer, onclick: () => app.go('layer', f.layer)})),
    el('td', {text: f.kind.replace(/_/g, ' ')}),
    el('td', {text: f.stat}),
    el('td', {text: String(f.first_step)}),
    el('td', {text: String(f.last_step)}),
    el('td', {text: f.message}));
}

export function draw(res) {
  const t = res.thresholds;
  const out = el('div', {id: 'health'});
  out.append(el('p', {class: 'hint', text: `Thresholds: dead layer ≥ ${fmt(100 * t.dead_layer_fraction)}% zeros; dead units > ${fmt(100 * t.dead_units_fraction)}%; saturation > ${fmt(100 * t.saturation_fraction)}%; exploding/vanishing: std changes > ${fmt(t.std_ratio)}× between consecutive layers or since the first window. Based on up to ${res.points} points per series.`}));
  if (!res.findings.length) {
    out.append(el('p', {id: 'no-findings', text: 'No findings: no NaN/Inf, dead layers, dead units, saturation or exploding/vanishing activations above the thresholds.'}));
    return out;
  }
  const findings = res.findings.filter((f) => layerMatches(f.layer));
  const note = filterNote(new Set(findings.map((f) => f.layer)).size, new Set(res.findings.map((f) => f.layer)).size);
  if (note) out.append(note);
  const table = el('table', {class: 'findings'});
  table.append(el('tr', {}, ['severity', 'run', 'layer', 'finding', 'statistic', 'first step', 'last step', 'details'].map((x) => el('th', {text: x}))));
  for (const f of findings) table.append(findingRow(f));
  out.append(table);
  return out;
}
