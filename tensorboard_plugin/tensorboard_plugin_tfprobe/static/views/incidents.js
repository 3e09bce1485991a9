// Incidents (/incidents, `tfprobe.incidents`): the findings grouped by root cause, each with its fix.
// The Health view opens with them, each expandable into the findings it explains; the Overview marks
// each incident's root layer (class root-cause, data-root on its heat-map label).

import {el} from '../charts.js';
import {runColor} from '../model.js';
import {app, state} from '../state.js';

/** Map of `${run}\n${layer}` -> the incidents rooted there (severity, kind, first step). */
export function rootLayers(incidents) {
  const roots = new Map();
  for (const inc of incidents || []) {
    const key = `${inc.run}\n${inc.root_layer}`;
    if (!roots.has(key)) roots.set(key, []);
    roots.get(key).push(inc);
  }
  return roots;
}

/** The severity of the most severe incident rooted at `name` in `run`, or null. */
export function rootOf(name, run) {
  const list = state.context.roots?.get(`${run}\n${name}`);
  if (!list) return null;
  return list.some((i) => i.severity === 'error') ? 'error' : list[0].severity;
}

/** Tooltip lines naming the incidents rooted at `name` in `run` ('' for none). */
export function rootTitle(name, run) {
  const list = state.context.roots?.get(`${run}\n${name}`) || [];
  return list.map((i) => `\nroot cause of incident #${i.incident} (${i.severity}): ${i.root_kind} from step ${i.first_step}`).join('');
}

function memberRow(f) {
  return el('tr', {class: `incident-finding sev-row-${f.severity}`, dataset: {kind: f.kind, layer: f.layer}},
    el('td', {}, el('span', {class: `sev sev-${f.severity}`, text: f.severity})),
    el('td', {text: f.kind}),
    el('td', {}, el('button', {class: 'link layer-name', text: f.layer, onclick: () => app.go('layer', f.layer)})),
    el('td', {text: String(f.first_step)}),
    el('td', {text: f.message}));
}

function incidentBlock(inc, members) {
  const mine = members.filter((f) => f.incident === inc.incident && f.run === inc.run)
    .sort((a, b) => a.first_step - b.first_step);
  const table = el('table', {class: 'incident-findings'});
  table.append(el('tr', {}, ['severity', 'kind', 'layer', 'first step', 'details'].map((x) => el('th', {text: x}))));
  for (const f of mine) table.append(memberRow(f));
  const count = `${inc.findings} finding${inc.findings === 1 ? '' : 's'} in ${inc.layers.length} layer${inc.layers.length === 1 ? '' : 's'}`;
  return el('div', {class: `incident sev-row-${inc.severity}`, dataset: {incident: inc.incident, run: inc.run, root: inc.root_layer, kind: inc.root_kind}},
    el('div', {class: 'incident-head'},
      el('span', {class: `sev sev-${inc.severity}`, text: inc.severity}), ' ',
      el('span', {class: 'swatch', style: `background:${runColor(inc.run)}`}), ' ',
      el('strong', {text: inc.root_kind.replace(/_/g, ' ')}), ' at ',
      el('button', {class: 'link layer-name root-layer', text: inc.root_layer, onclick: () => app.go('layer', inc.root_layer)}),
      el('span', {text: ` from step ${inc.first_step} (${inc.run})`})),
    el('p', {class: 'why', text: `Why: ${inc.reason}`}),
    el('p', {class: 'fix', text: `Fix: ${inc.fix}`}),
    el('details', {class: 'incident-members'},
      el('summary', {}, el('span', {class: 'hint count', text: `explains ${count}`})),
      table));
}

/** The incidents section of the Health view. */
export function incidentsSection(incidents, members) {
  const box = el('section', {id: 'incidents'});
  box.append(el('h3', {text: `Incidents (${incidents.length})`}));
  if (!incidents.length) {
    box.append(el('p', {id: 'no-incidents', class: 'hint', text: 'No incidents: no warning or error finding.'}));
    return box;
  }
  box.append(el('p', {class: 'hint', text: 'Findings grouped by root cause (the earliest finding; in one window the cause before its effects, the upstream layer first). Expand an incident for the findings it explains.'}));
  for (const inc of incidents) box.append(incidentBlock(inc, members || []));
  return box;
}
