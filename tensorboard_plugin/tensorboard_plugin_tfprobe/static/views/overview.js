// Overview: one heat map per selected run, rows = layers in model order, columns = steps.

import {el, fmt, fmtInt, heatmap, legend, makeScale} from '../charts.js';
import {getJSON} from '../model.js';
import {app, layerMatches, mainWidth, state} from '../state.js';
import {filterNote, runHeading, statSelect} from './common.js';

function columnsFor(width) {
  return Math.max(20, Math.min(600, Math.floor(width - 230))); // server cost grows with columns
}

export async function load(runs) {
  const columns = columnsFor(mainWidth());
  return Promise.all(
    runs.map((run) =>
      getJSON('overview', {run, stat: state.stat, columns, agg: state.agg}).catch((e) => ({run, error: e.message})),
    ),
  );
}

function controls(autoRow) {
  const agg = el('select', {id: 'agg-select'});
  for (const a of ['last', 'max', 'min']) {
    const o = el('option', {value: a, text: a});
    o.selected = a === state.agg;
    agg.append(o);
  }
  agg.addEventListener('change', () => { state.agg = agg.value; app.showView(); });
  const zoom = el('input', {type: 'range', min: 2, max: 24, step: 1, id: 'row-height'});
  zoom.value = String(state.rowHeight ?? autoRow);
  zoom.addEventListener('change', () => { state.rowHeight = Number(zoom.value); app.redraw(); });
  return el(
    'div',
    {class: 'controls'},
    el('label', {}, 'Colour by ', statSelect(state.stat, (s) => { state.stat = s; app.showView(); })),
    el('label', {title: 'value shown when several logged windows share one column'}, 'per column ', agg),
    el('label', {title: 'row height; labels are shown from 9 px'}, 'row height ', zoom),
    el('span', {class: 'hint', text: 'Rows: layers in model order (input at the top). Click a row to open the layer.'}),
  );
}

function runBlock(res, width, rowHeight) {
  const nodes = [runHeading(res.run)];
  if (res.error) return [...nodes, el('div', {class: 'error-box', text: res.error})];
  const rows = res.layers.filter((row) => layerMatches(row.name));
  const fraction = /fraction|retention|size_ratio|hoyer/.test(res.stat);
  const scale = fraction && res.min >= 0 && res.max <= 1 ? makeScale(0, 1) : makeScale(res.min, res.max);
  nodes.push(
    el('div', {class: 'hint', text: `${res.layers.length} layers × ${res.steps.length} columns (${fmtInt(res.windows_read)} logged windows read; ${res.agg} value per column)`}),
    filterNote(rows.length, res.layers.length),
  );
  if (!rows.length) return [...nodes, el('p', {class: 'hint no-match', text: 'No layer of this run matches the filter.'})];
  nodes.push(
    legend(scale, res.stat),
    heatmap({
      rows,
      columns: res.steps,
      scale,
      width,
      rowHeight,
      cellTitle: (row, step, v) => [`layer: ${row.name}`, `step: ${step}`, `${res.stat}: ${fmt(v)}`, `${row.class} (${row.kind})`],
      onRowClick: (row) => app.go('layer', row.name),
    }),
  );
  return nodes;
}

export function draw(results) {
  const width = mainWidth();
  const maxRows = Math.max(1, ...results.map((r) => (r.layers ? r.layers.filter((l) => layerMatches(l.name)).length : 1)));
  const autoRow = Math.max(2, Math.min(18, Math.floor(560 / maxRows)));
  const out = el('div', {id: 'overview'}, controls(autoRow));
  for (const res of results) out.append(...runBlock(res, width, state.rowHeight ?? autoRow).filter(Boolean));
  return out;
}
