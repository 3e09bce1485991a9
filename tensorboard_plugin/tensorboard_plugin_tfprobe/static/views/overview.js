// Overview: one heat map per selected run. Rows = the shown layers (model order, graph depth, or
// by the statistic), grouped into collapsible blocks (a block row summarises its layers);
// columns = steps; rows with findings are marked at the left edge by severity.

import {el, fmt, fmtInt, heatmap, legend, makeScale} from '../charts.js';
import {getJSON, num} from '../model.js';
import {app, layerMatches, layerSeverity, mainWidth, setShared, SEVERITY_RANK, state} from '../state.js';
import {rootOf, rootTitle} from './incidents.js';
import {filterNote, runHeading, statSelect} from './common.js';

const READABLE_ROW = 14; // px: default row height, labels readable at any depth (the map scrolls)
const FIT_HEIGHT = 560; // px: the height "fit" squeezes every row into
const SORTS = [['model', 'model order'], ['depth', 'graph depth'], ['stat', 'statistic (mean, highest first)']];

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

function select(id, options, value, onchange) {
  const s = el('select', {id});
  for (const [v, text] of options) {
    const o = el('option', {value: v, text});
    o.selected = v === value;
    s.append(o);
  }
  s.addEventListener('change', () => onchange(s.value));
  return s;
}

function controls(rowH, fitH, blockNames) {
  const agg = select('agg-select', ['last', 'max', 'min'].map((a) => [a, a]), state.agg, (v) => { state.agg = v; app.showView(); });
  const sort = select('sort-select', SORTS, state.sort, (v) => { setShared('sort', v); app.redraw(); });
  const blockAgg = select('block-agg', [['max', 'max'], ['mean', 'mean']], state.blockAgg, (v) => { setShared('blockAgg', v); app.redraw(); });
  const zoom = el('input', {type: 'range', min: 1, max: 24, step: 1, id: 'row-height'});
  zoom.value = String(rowH);
  zoom.addEventListener('change', () => { state.rowHeight = Number(zoom.value); app.redraw(); });
  const button = (id, text, title, onclick) => el('button', {id, type: 'button', text, title, onclick});
  const setCollapsed = (names) => () => { setShared('collapsed', new Set(names)); app.redraw(); };
  return el(
    'div',
    {class: 'controls'},
    el('label', {}, 'Colour by ', statSelect(state.stat, (s) => { state.stat = s; app.showView(); })),
    el('label', {title: 'value shown when several logged windows share one column'}, 'per column ', agg),
    logColour(),
    el('label', {title: 'row order inside and between blocks'}, 'sort by ', sort),
    el('label', {title: 'value of a block row in each column, over the block\'s shown layers'}, 'block rows ', blockAgg),
    blockNames.length ? button('collapse-all', 'collapse blocks', 'one row per block', setCollapsed(blockNames)) : null,
    blockNames.length ? button('expand-all', 'expand blocks', 'every layer', setCollapsed([])) : null,
    el('label', {title: 'row height (zoom); labels are shown from 9 px, hover a row for its full name'}, 'row height ', zoom),
    button('fit-rows', 'fit', `every row in ${FIT_HEIGHT} px (labels hidden under 9 px)`, () => { state.rowHeight = fitH; app.redraw(); }),
    button('readable-rows', 'readable', 'readable labels; the map scrolls', () => { state.rowHeight = null; app.redraw(); }),
  );
}

function logColour() {
  const box = el('input', {type: 'checkbox', id: 'overview-log'});
  box.checked = state.logScale;
  box.addEventListener('change', () => { state.logScale = box.checked; app.redraw(); });
  return el('label', {title: 'log colour scale from the smallest positive value (statistics that are never negative, e.g. grad_rms, update_ratio)'}, box, 'log colour');
}

/** The colour scale of one run's map: [0, 1] for fractions; log from the smallest positive value
 * when asked and no value is negative; otherwise linear over the finite range. */
export function colourScale(res) {
  if (state.logScale && num(res.min) >= 0) {
    let lo = Infinity;
    for (const l of res.layers) for (const v of l.values) { const x = num(v); if (x > 0 && x < lo) lo = x; }
    if (Number.isFinite(lo) && num(res.max) > lo) return makeScale(lo, res.max, true);
  }
  const fraction = /fraction|retention|size_ratio|hoyer/.test(res.stat);
  return fraction && res.min >= 0 && res.max <= 1 ? makeScale(0, 1) : makeScale(res.min, res.max);
}

/** The mean of the finite values of a row (NaN if none): the "statistic" sort key. */
function meanFinite(values) {
  let sum = 0;
  let n = 0;
  for (const v of values) {
    const x = num(v);
    if (Number.isFinite(x)) { sum += x; n++; }
  }
  return n ? sum / n : NaN;
}

/** Per column, `agg` (max or mean) of the rows' values; "NaN" if one is non-finite; null if none logged. */
export function summarise(rows, columns, agg) {
  const out = [];
  for (let j = 0; j < columns; j++) {
    let acc = agg === 'max' ? -Infinity : 0;
    let n = 0;
    let bad = false;
    for (const row of rows) {
      const v = row.values[j];
      if (v === null || v === undefined) continue;
      const x = num(v);
      if (!Number.isFinite(x)) bad = true;
      else if (agg === 'max') acc = Math.max(acc, x);
      else acc += x;
      n++;
    }
    out.push(bad ? 'NaN' : n === 0 ? null : agg === 'max' ? acc : acc / n);
  }
  return out;
}

function sortKey(row) {
  if (state.sort === 'depth') return row.depth ?? row.order; // logs without `inputs`: model order
  if (state.sort === 'stat') return Number.isNaN(row.score) ? Infinity : -row.score;
  return row.order;
}

function worst(rows) {
  return rows.reduce((w, r) => (r.severity && (w === null || SEVERITY_RANK[r.severity] < SEVERITY_RANK[w]) ? r.severity : w), null);
}

/** The heat-map rows of one run: shown layers, sorted, in blocks (a block row, then its layers unless collapsed). */
function arrange(res) {
  const info = state.context.layers.get(res.run) || new Map();
  const rows = [];
  res.layers.forEach((l, order) => {
    if (!layerMatches(l.name, res.run)) return;
    const meta = info.get(l.name) || {};
    rows.push({...l, order, depth: meta.depth ?? null, score: meanFinite(l.values), severity: layerSeverity(l.name, res.run),
      root: rootOf(l.name, res.run),
      title: `${l.name}\n${l.class} · ${l.category} · block ${l.block}${rootTitle(l.name, res.run)}`});
  });
  const byKey = (a, b) => sortKey(a) - sortKey(b) || a.order - b.order;
  // blocks are runs of consecutive layers (model order) with the same block name, so top-level
  // layers before and after a nested model stay where they are
  const groups = [];
  for (const r of rows) {
    if (!groups.length || groups[groups.length - 1][0] !== r.block) groups.push([r.block, []]);
    groups[groups.length - 1][1].push(r);
  }
  if (groups.length <= 1) return {rows: rows.sort(byKey), blocks: []};
  const blocks = groups.map(([name, members]) => {
    members.sort(byKey);
    const values = summarise(members, res.steps.length, state.blockAgg);
    const collapsed = state.collapsed.has(name);
    const head = {name, values, isBlock: true, members, severity: worst(members), className: 'block-row',
      label: `${collapsed ? '▸' : '▾'} ${name} (${members.length})`,
      title: `block ${name}: ${members.length} layers; click to ${collapsed ? 'expand' : 'collapse'}`,
      order: members[0].order, depth: Math.min(...members.map((m) => m.depth ?? m.order)), score: meanFinite(values)};
    return {head, members, collapsed};
  });
  blocks.sort((a, b) => byKey(a.head, b.head));
  const out = [];
  for (const b of blocks) {
    out.push(b.head);
    if (!b.collapsed) for (const m of b.members) out.push({...m, className: 'in-block'});
  }
  return {rows: out, blocks: blocks.map((b) => b.head.name)};
}

let measure = null;
/** Pixels the widest label needs at the labels' font (12 px; bold block rows), with its padding,
 * mark and indent, and some slack for how the text is rasterised. */
function labelWidth(rows) {
  measure = measure || document.createElement('canvas').getContext('2d');
  let widest = 0;
  for (const r of rows) {
    measure.font = `${r.isBlock ? '600 ' : ''}12px "Roboto Mono", Menlo, monospace`;
    widest = Math.max(widest, measure.measureText(r.label ?? r.name).width);
  }
  return Math.ceil(widest) + 16 + 6 + 4 + 12;
}

function toggleBlock(name) {
  const next = new Set(state.collapsed);
  if (next.has(name)) next.delete(name);
  else next.add(name);
  setShared('collapsed', next);
  app.redraw();
}

function runBlock(res, arranged, width, rowHeight) {
  const nodes = [runHeading(res.run)];
  if (res.error) return [...nodes, el('div', {class: 'error-box', text: res.error})];
  const {rows, blocks} = arranged;
  const layerRows = rows.filter((r) => !r.isBlock).length + rows.filter((r) => r.isBlock && state.collapsed.has(r.name)).reduce((n, r) => n + r.members.length, 0);
  const scale = colourScale(res);
  nodes.push(
    el('div', {class: 'hint', text: `${res.layers.length} layers${blocks.length ? ` in ${blocks.length} blocks` : ''} × ${res.steps.length} columns (${fmtInt(res.windows_read)} logged windows read; ${res.agg} value per column)`}),
    filterNote(layerRows, res.layers.length),
  );
  if (!rows.length) return [...nodes, el('p', {class: 'hint no-match', text: 'No layer of this run matches the filter.'})];
  nodes.push(
    legend(scale, res.stat),
    blocks.length ? el('div', {class: 'hint block-legend', text: `Block rows (▸/▾, bold): ${state.blockAgg} of ${res.stat} over the block's shown layers per column (NaN/Inf if one is). Left edge: most severe Health finding (red error, orange warning, blue info).`})
      : el('div', {class: 'hint block-legend', text: 'Left edge: most severe Health finding (red error, orange warning, blue info).'}),
    heatmap({
      rows,
      columns: res.steps,
      scale,
      width,
      rowHeight,
      labelWidth: Math.min(Math.floor(width * 0.4), Math.max(160, labelWidth(rows))),
      cellTitle: (row, step, v) => row.isBlock
        ? [`block: ${row.name} (${row.members.length} layers)`, `step: ${step}`, `${state.blockAgg} ${res.stat}: ${fmt(v)}`]
        : [`layer: ${row.name}`, `step: ${step}`, `${res.stat}: ${fmt(v)}`, `${row.class} (${row.category}), block ${row.block}`,
          ...(row.severity ? [`finding: ${row.severity}`] : [])],
      onRowClick: (row) => (row.isBlock ? toggleBlock(row.name) : app.go('layer', row.name)),
    }),
  );
  return nodes;
}

export function draw(results) {
  const width = mainWidth();
  const arranged = results.map((r) => (r.layers ? arrange(r) : {rows: [], blocks: []}));
  const maxRows = Math.max(1, ...arranged.map((a) => a.rows.length));
  const fitH = Math.max(1, Math.min(24, Math.floor(FIT_HEIGHT / maxRows)));
  const rowH = state.rowHeight ?? Math.max(READABLE_ROW, Math.min(18, fitH));
  const blockNames = [...new Set(arranged.flatMap((a) => a.blocks))];
  const sortNote = state.sort === 'depth' && results.some((r) => r.layers && r.layers.length && (state.context.layers.get(r.run)?.values().next().value?.depth ?? null) === null)
    ? el('p', {class: 'hint', id: 'depth-fallback', text: 'These logs do not record the graph (`inputs`): rows stay in model order.'}) : null;
  const out = el('div', {id: 'overview'}, controls(rowH, fitH, blockNames), sortNote);
  results.forEach((res, i) => out.append(el('section', {class: 'run-block', dataset: {run: res.run}}, ...runBlock(res, arranged[i], width, rowH))));
  return out;
}
