// Hand-written canvas charts: heat maps, line charts, colour legend. No fetch here.
// User-supplied strings (run and layer names) only ever reach the DOM through
// textContent, or canvas fillText.

import {num} from './model.js';

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') node.textContent = v;
    else if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// ------------------------------------------------------------------ formatting

export function fmt(v) {
  if (v === null || v === undefined) return '–';
  const x = num(v);
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? '+Inf' : '-Inf';
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1e5 || a < 1e-3) return x.toExponential(2);
  return String(Number(x.toPrecision(4)));
}

export function fmtInt(n) {
  if (n === null || n === undefined) return '?';
  return Number(n).toLocaleString('en-US');
}

// ------------------------------------------------------------------ tooltip

let tooltip = null;
export function showTooltip(event, lines) {
  if (!tooltip) {
    tooltip = el('div', {class: 'tooltip', role: 'tooltip'});
    document.body.append(tooltip);
  }
  tooltip.replaceChildren(...lines.map((line) => el('div', {text: line})));
  tooltip.style.display = 'block';
  const pad = 14;
  const w = tooltip.offsetWidth;
  const h = tooltip.offsetHeight;
  let x = event.clientX + pad;
  let y = event.clientY + pad;
  if (x + w > window.innerWidth) x = Math.max(0, event.clientX - w - pad);
  if (y + h > window.innerHeight) y = Math.max(0, event.clientY - h - pad);
  tooltip.style.left = `${x}px`;
  tooltip.style.top = `${y}px`;
}
export function hideTooltip() {
  if (tooltip) tooltip.style.display = 'none';
}

// ------------------------------------------------------------------ colour scale

const VIRIDIS = [
  [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37],
];
export const NAN_COLOR = [255, 0, 200];
export const EMPTY_COLOR = [235, 235, 235];

/** RGB of t in [0, 1] on the viridis scale. */
export function viridis(t) {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const a = VIRIDIS[i];
  const b = VIRIDIS[i + 1];
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
}

/** A scale {lo, hi, log, t(v)} for the finite range [lo, hi]. */
export function makeScale(lo, hi, log = false) {
  lo = num(lo);
  hi = num(hi);
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) {
    lo = 0;
    hi = 1;
  }
  if (log && !(lo > 0)) log = false;
  const f = log ? Math.log10 : (x) => x;
  const a = f(lo);
  const b = f(hi);
  const span = b - a || 1;
  return {lo, hi, log, t: (v) => (f(v) - a) / span};
}

export function legend(scale, label) {
  const width = 220;
  const bar = el('canvas', {width, height: 12, class: 'legend-bar'});
  const ctx = bar.getContext('2d');
  for (let x = 0; x < width; x++) {
    const [r, g, b] = viridis(x / (width - 1));
    ctx.fillStyle = `rgb(${r | 0},${g | 0},${b | 0})`;
    ctx.fillRect(x, 0, 1, 12);
  }
  const swatch = (rgb) => el('span', {class: 'swatch', style: `background: rgb(${rgb.join(',')})`});
  return el(
    'div',
    {class: 'legend'},
    el('span', {class: 'legend-label', text: label}),
    el('span', {class: 'legend-tick', text: fmt(scale.lo)}),
    bar,
    el('span', {class: 'legend-tick', text: fmt(scale.hi) + (scale.log ? ' (log)' : '')}),
    swatch(NAN_COLOR),
    el('span', {text: 'NaN/Inf'}),
    swatch(EMPTY_COLOR),
    el('span', {text: 'not logged'}),
  );
}

// ------------------------------------------------------------------ heat map

/**
 * A heat map of rows x columns on one canvas, with DOM row labels.
 *
 * opts: {rows: [{name, values, label?, title?, className?, severity?}], columns: [label], scale,
 *        width, rowHeight, cellTitle(row, col, value) -> [lines], onRowClick(row), labelWidth}
 * A row's label shows `label` (default `name`), hovering it `title` (default `name`); a row with
 * a `severity` is marked at the left edge of its label (class mark-<severity>, data-severity).
 */
export function heatmap(opts) {
  const {rows, columns, scale} = opts;
  const labelWidth = opts.labelWidth ?? 200;
  const rowH = opts.rowHeight;
  const plotW = Math.max(120, Math.floor(opts.width - labelWidth - 24));
  const plotH = Math.max(1, rows.length * rowH);
  const showLabels = rowH >= 9;

  // One pixel per cell, scaled up without smoothing.
  const img = document.createElement('canvas');
  img.width = Math.max(1, columns.length);
  img.height = Math.max(1, rows.length);
  const ictx = img.getContext('2d');
  const data = ictx.createImageData(img.width, img.height);
  rows.forEach((row, i) => {
    for (let j = 0; j < columns.length; j++) {
      const v = row.values[j];
      let rgb;
      if (v === null || v === undefined) rgb = EMPTY_COLOR;
      else {
        const x = num(v);
        rgb = Number.isFinite(x) ? viridis(scale.t(x)) : NAN_COLOR;
      }
      const o = 4 * (i * img.width + j);
      data.data[o] = rgb[0];
      data.data[o + 1] = rgb[1];
      data.data[o + 2] = rgb[2];
      data.data[o + 3] = 255;
    }
  });
  ictx.putImageData(data, 0, 0);

  const {canvas, ctx, dpr} = hidpiCanvas('heatmap-canvas', plotW, plotH);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  if (rowH >= 6) {
    ctx.strokeStyle = 'rgba(255,255,255,0.6)';
    ctx.lineWidth = 1;
    for (let i = 1; i < rows.length; i++) {
      const y = Math.round(i * rowH * dpr) + 0.5;
      ctx.beginPath();
      ctx.moveTo(0, y);
      ctx.lineTo(canvas.width, y);
      ctx.stroke();
    }
  }

  const labels = el('div', {class: 'heatmap-labels' + (showLabels ? '' : ' hidden-labels'), style: `width:${labelWidth}px`});
  rows.forEach((row, i) => {
    const dataset = {row: i, name: row.name};
    if (row.severity) dataset.severity = row.severity;
    if (row.root) dataset.root = row.root; // the root cause of an incident (views/incidents.js)
    labels.append(
      el('div', {
        class: ['heatmap-label', row.className, row.severity ? `mark-${row.severity}` : 'mark-none',
          row.root ? 'root-cause' : ''].filter(Boolean).join(' '),
        title: row.title ?? row.name,
        style: `height:${rowH}px;line-height:${rowH}px;font-size:${Math.min(12, Math.max(8, rowH - 2))}px`,
        text: row.label ?? row.name,
        dataset,
        onclick: () => opts.onRowClick && opts.onRowClick(row, i),
      }),
    );
  });

  const cell = (event) => {
    const r = canvas.getBoundingClientRect();
    const i = Math.floor((event.clientY - r.top) / rowH);
    const j = Math.floor(((event.clientX - r.left) / r.width) * columns.length);
    if (i < 0 || i >= rows.length || j < 0 || j >= columns.length) return null;
    return [i, j];
  };
  canvas.addEventListener('mousemove', (event) => {
    const c = cell(event);
    if (!c) return hideTooltip();
    const [i, j] = c;
    showTooltip(event, opts.cellTitle(rows[i], columns[j], rows[i].values[j]));
    canvas.style.cursor = opts.onRowClick ? 'pointer' : 'crosshair';
  });
  canvas.addEventListener('mouseleave', hideTooltip);
  canvas.addEventListener('click', (event) => {
    const c = cell(event);
    if (c && opts.onRowClick) {
      hideTooltip();
      opts.onRowClick(rows[c[0]], c[0]);
    }
  });

  const xAxis = el('div', {class: 'heatmap-xaxis', style: `margin-left:${labelWidth}px;width:${plotW}px`});
  if (columns.length) {
    const ticks = Math.min(6, columns.length);
    for (let k = 0; k < ticks; k++) {
      const j = ticks === 1 ? 0 : Math.round((k * (columns.length - 1)) / (ticks - 1));
      const left = ((j + 0.5) / columns.length) * plotW;
      xAxis.append(el('span', {class: 'xtick', style: `left:${left}px`, text: String(columns[j])}));
    }
  }
  const body = el('div', {class: 'heatmap-body'}, labels, canvas);
  const scroller = el('div', {class: 'heatmap-scroll'}, body);
  return el('div', {class: 'heatmap'}, scroller, xAxis);
}

// ------------------------------------------------------------------ line chart

function niceTicks(lo, hi, n = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/**
 * A line chart. series: [{name, color, points: [[step, value], ...], raw?: [[step, value]]}].
 * opts: {title, width, height, logScale, yRange?: [lo, hi], xName?: what x is (default 'step'),
 *        integerX?: only whole-number x ticks, xLabels?: names of x = 0, 1, ... (ticks and tooltip
 *        show them, rotated), markers?: a dot at each point, guides?: [y] dashed horizontal lines}
 */
/** A canvas of `width` x `height` CSS pixels backed by device pixels; returns {canvas, ctx, dpr}. */
function hidpiCanvas(cls, width, height) {
  const dpr = window.devicePixelRatio || 1;
  const canvas = el('canvas', {class: cls});
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  return {canvas, ctx: canvas.getContext('2d'), dpr};
}

export function lineChart(series, opts) {
  const width = Math.max(200, Math.floor(opts.width));
  const height = opts.height ?? 180;
  const labels = opts.xLabels || null;
  const m = {l: 56, r: 12, t: 8, b: labels ? 56 : 22};
  const {canvas, ctx, dpr} = hidpiCanvas('line-canvas', width, height);
  ctx.scale(dpr, dpr);

  const log = !!opts.logScale;
  const ok = (v) => Number.isFinite(v) && (!log || v > 0);
  let xs = [];
  let ys = [];
  for (const s of series) {
    for (const [step, v] of [...s.points, ...(s.raw || [])]) {
      const y = num(v);
      xs.push(step);
      if (ok(y)) ys.push(log ? Math.log10(y) : y);
    }
  }
  for (const g of opts.guides || []) if (ok(g)) ys.push(log ? Math.log10(g) : g);
  let x0 = Math.min(...xs);
  let x1 = Math.max(...xs);
  if (!Number.isFinite(x0)) [x0, x1] = [0, 1];
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  let y0 = Math.min(...ys);
  let y1 = Math.max(...ys);
  if (!Number.isFinite(y0)) [y0, y1] = [0, 1];
  if (y0 === y1) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;
  const X = (s) => m.l + ((s - x0) / (x1 - x0)) * (width - m.l - m.r);
  const Y = (v) => m.t + (1 - ((log ? Math.log10(v) : v) - y0) / (y1 - y0)) * (height - m.t - m.b);

  ctx.font = '10px sans-serif';
  ctx.fillStyle = '#555';
  ctx.strokeStyle = '#e4e4e4';
  ctx.lineWidth = 1;
  const yTicks = log
    ? niceTicks(Math.ceil(y0), Math.floor(y1), 4).filter(Number.isInteger).map((e) => Math.pow(10, e))
    : niceTicks(y0, y1, 4);
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (const v of yTicks) {
    const y = Y(v);
    if (y < m.t - 1 || y > height - m.b + 1) continue;
    ctx.beginPath();
    ctx.moveTo(m.l, y);
    ctx.lineTo(width - m.r, y);
    ctx.stroke();
    ctx.fillText(fmt(v), m.l - 4, y);
  }
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  if (labels) xLabelTicks(ctx, labels, X, height - m.b + 4, (width - m.l - m.r) / Math.max(1, x1 - x0));
  else {
    for (const s of niceTicks(x0, x1, 6)) {
      if (s < x0 || s > x1 || (opts.integerX && !Number.isInteger(s))) continue;
      ctx.fillText(String(s), X(s), height - m.b + 4);
    }
  }
  ctx.strokeStyle = '#999';
  ctx.strokeRect(m.l, m.t, width - m.l - m.r, height - m.t - m.b);
  ctx.setLineDash([5, 4]);
  ctx.strokeStyle = '#c62828';
  for (const g of opts.guides || []) {
    if (!ok(g)) continue;
    ctx.beginPath();
    ctx.moveTo(m.l, Y(g));
    ctx.lineTo(width - m.r, Y(g));
    ctx.stroke();
  }
  ctx.setLineDash([]);

  const draw = (points, color, alpha, lw) => {
    ctx.globalAlpha = alpha;
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = lw;
    ctx.beginPath();
    let open = false;
    for (const [step, v] of points) {
      const y = num(v);
      if (!ok(y)) {
        open = false;
        continue;
      }
      if (open) ctx.lineTo(X(step), Y(y));
      else ctx.moveTo(X(step), Y(y));
      open = true;
    }
    ctx.stroke();
    for (const [step, v] of opts.markers || points.length === 1 ? points : []) {
      if (ok(num(v))) ctx.fillRect(X(step) - 2, Y(num(v)) - 2, 4, 4);
    }
    ctx.globalAlpha = 1;
  };
  for (const s of series) {
    if (s.raw) draw(s.raw, s.color, 0.25, 1);
    draw(s.points, s.color, 1, 1.6);
    // mark non-finite points along the bottom edge
    ctx.fillStyle = '#ff00c8';
    for (const [step, v] of s.points) if (!Number.isFinite(num(v))) ctx.fillRect(X(step) - 1, height - m.b - 3, 2, 3);
  }

  canvas.addEventListener('mousemove', (event) => {
    const r = canvas.getBoundingClientRect();
    const step = x0 + ((event.clientX - r.left - m.l) / (width - m.l - m.r)) * (x1 - x0);
    const lines = [];
    for (const s of series) {
      let best = null;
      for (const p of s.points) if (best === null || Math.abs(p[0] - step) < Math.abs(best[0] - step)) best = p;
      if (best) lines.push(`${s.name}: ${fmt(best[1])} @ ${opts.xName ?? 'step'} ${labels ? labels[best[0]] : best[0]}`);
    }
    if (lines.length) showTooltip(event, [opts.title, ...lines]);
  });
  canvas.addEventListener('mouseleave', hideTooltip);
  return canvas;
}

/** Category names under the x axis, rotated; every k-th when they would overlap. */
function xLabelTicks(ctx, labels, X, y, spacing) {
  const every = Math.max(1, Math.ceil(12 / Math.max(spacing, 1e-9)));
  ctx.save();
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (let i = 0; i < labels.length; i += every) {
    const text = labels[i].length > 14 ? `${labels[i].slice(0, 13)}…` : labels[i];
    ctx.save();
    ctx.translate(X(i), y);
    ctx.rotate(-Math.PI / 4);
    ctx.fillText(text, 0, 0);
    ctx.restore();
  }
  ctx.restore();
}

/** A legend of coloured swatches with names (textContent). */
export function seriesLegend(items) {
  return el(
    'div',
    {class: 'series-legend'},
    items.map(({name, color}) => el('span', {class: 'legend-item'}, el('span', {class: 'swatch', style: `background:${color}`}), el('span', {text: name}))),
  );
}
