// Health: tfprobe.diagnose findings over the selected runs, grouped by finding kind and then by
// block, with counts; each group collapsible; filtered by severity; rows sorted by first step.

import {el, fmt} from '../charts.js';
import {runColor} from '../model.js';
import {app, layerInfo, layerMatches, setShared, SEVERITY_RANK, state} from '../state.js';
import {filterNote} from './common.js';
import {incidentsSection} from './incidents.js';

export async function load(runs) {
  // fetched with the run context (index.js), shared with the map marks
  const [res, inc] = await Promise.all([state.context.health, state.context.incidents]);
  return {...res, incidents: inc.incidents, members: inc.findings};
}

function findingRow(f) {
  return el('tr', {class: `finding sev-row-${f.severity}`, dataset: {severity: f.severity}},
    el('td', {}, el('span', {class: `sev sev-${f.severity}`, text: f.severity})),
    el('td', {}, el('span', {class: 'swatch', style: `background:${runColor(f.run)}`}), ' ', el('span', {text: f.run})),
    el('td', {}, el('button', {class: 'link layer-name', text: f.layer, onclick: () => app.go('layer', f.layer)})),
    el('td', {text: f.stat}),
    el('td', {text: String(f.first_step)}),
    el('td', {text: String(f.last_step)}),
    el('td', {text: f.message}));
}

/** [[key, [items]]] grouped by `keyOf`, groups ordered by their earliest first step (items are sorted). */
function groupBy(items, keyOf) {
  const groups = new Map();
  for (const f of items) {
    const k = keyOf(f);
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(f);
  }
  return [...groups.entries()];
}

function severityFilter(findings) {
  const box = el('div', {class: 'controls', id: 'severity-filter'}, el('span', {text: 'Severity:'}));
  for (const sev of Object.keys(SEVERITY_RANK)) {
    const n = findings.filter((f) => f.severity === sev).length;
    const input = el('input', {type: 'checkbox', value: sev});
    input.checked = state.severities.has(sev);
    input.addEventListener('change', () => {
      const next = new Set(state.severities);
      if (input.checked) next.add(sev);
      else next.delete(sev);
      setShared('severities', next);
      app.redraw();
    });
    box.append(el('label', {}, input, el('span', {class: `sev sev-${sev}`, text: sev}), ` ${n}`));
  }
  return box;
}

function blockGroup(block, items) {
  const table = el('table', {class: 'findings'});
  table.append(el('tr', {}, ['severity', 'run', 'layer', 'statistic', 'first step', 'last step', 'details'].map((x) => el('th', {text: x}))));
  for (const f of items) table.append(findingRow(f));
  const layers = new Set(items.map((f) => f.layer)).size;
  return el('details', {class: 'finding-block', open: true, dataset: {block}},
    el('summary', {}, el('span', {class: 'layer-name', text: block}), el('span', {class: 'hint', text: ` ${items.length} finding${items.length === 1 ? '' : 's'}, ${layers} layer${layers === 1 ? '' : 's'}`})),
    table);
}

export function draw(res) {
  const t = res.thresholds;
  const out = el('div', {id: 'health'});
  out.append(incidentsSection(res.incidents, res.members));
  out.append(el('p', {class: 'hint', text: `Thresholds: dead layer ≥ ${fmt(100 * t.dead_layer_fraction)}% zeros; dead units > ${fmt(100 * t.dead_units_fraction)}%; saturation > ${fmt(100 * t.saturation_fraction)}%; exploding/vanishing: std changes > ${fmt(t.std_ratio)}× between consecutive layers or since the first window. Based on up to ${res.points} points per series.`}));
  if (!res.findings.length) {
    out.append(el('p', {id: 'no-findings', text: 'No findings: no NaN/Inf, dead layers, dead units, saturation or exploding/vanishing activations above the thresholds.'}));
    return out;
  }
  const matching = res.findings.filter((f) => layerMatches(f.layer, f.run));
  const note = filterNote(new Set(matching.map((f) => f.layer)).size, new Set(res.findings.map((f) => f.layer)).size);
  out.append(severityFilter(matching), ...[note].filter(Boolean));
  const findings = matching.filter((f) => state.severities.has(f.severity))
    .sort((a, b) => a.first_step - b.first_step || SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity]);
  const groups = el('div', {class: 'findings-groups', id: 'findings-groups'});
  for (const [kind, items] of groupBy(findings, (f) => f.kind)) {
    const blocks = groupBy(items, (f) => layerInfo(f.layer, f.run)?.block ?? '–');
    const worst = items.reduce((a, f) => (SEVERITY_RANK[f.severity] < SEVERITY_RANK[a] ? f.severity : a), 'info');
    groups.append(el('details', {class: 'finding-group', open: true, dataset: {kind}},
      el('summary', {}, el('span', {class: `sev sev-${worst}`, text: worst}), ' ', el('strong', {text: kind.replace(/_/g, ' ')}),
        el('span', {class: 'hint count', text: ` ${items.length} finding${items.length === 1 ? '' : 's'} in ${blocks.length} block${blocks.length === 1 ? '' : 's'}`})),
      ...blocks.map(([block, list]) => blockGroup(block, list))));
  }
  if (!findings.length) groups.append(el('p', {class: 'hint no-match', text: 'No finding matches the filters.'}));
  out.append(groups);
  return out;
}
