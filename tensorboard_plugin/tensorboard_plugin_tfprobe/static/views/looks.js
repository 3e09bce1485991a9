// Looks: where the model looks on the reference examples (tfprobe.looks.LooksAnalysis), per run:
// pick an example and a layer; the input, the Grad-CAM overlays (predicted / true class) and the
// layer's feature-map grid, with a step slider. Moving the slider swaps image URLs (no JSON refetch).

import {el, fmt} from '../charts.js';
import {getJSON, num, routeUrl} from '../model.js';
import {state} from '../state.js';
import {runHeading} from './common.js';

const HELP = 'Grad-CAM: where the class score is sensitive at the chosen layer (bright = more), overlaid on the input; CAM (heads of global average pooling + dense): the same map from the dense weights; feature maps: the most active channels of a layer, each normalised on its own. Written at each reference step by tfprobe.looks.LooksAnalysis.';

export async function load(runs) {
  return Promise.all(runs.map(async (run) => {
    try {
      return {run, looks: await getJSON('looks', {run})};
    } catch (e) {
      return {run, error: e.message};
    }
  }));
}

/** The per-run picks (example, layer, step), kept across redraws. */
function picks(run, looks) {
  state.looks = state.looks || {};
  const layers = [...new Set([...looks.gradcam_layers, ...looks.feature_layers])];
  const p = state.looks[run] || {};
  if (!looks.examples.includes(p.example)) p.example = looks.examples[0];
  if (!layers.includes(p.layer)) p.layer = looks.feature_layers[0] || layers[0];
  if (!looks.steps.includes(p.step)) p.step = looks.steps[looks.steps.length - 1];
  state.looks[run] = p;
  return {p, layers};
}

/** The image of `kind` (at `layer`) for the example, or null: {tag, steps}. */
function findImage(looks, example, kind, layer) {
  return looks.images.find((i) => i.example === example && i.kind === kind && (layer === null || i.layer === layer)) || null;
}

/** The newest value at or before `step` of [[step, value], ...], or undefined. */
function valueAt(points, step) {
  let found;
  for (const [s, v] of points || []) if (s <= step) found = v;
  return found;
}

function caption(looks, example, step) {
  const pred = looks.predictions[String(example)] || {};
  const cls = valueAt(pred.predicted_class, step);
  if (cls === undefined) return `step ${step}`;
  const truth = valueAt(pred.true_class, step);
  const parts = [`step ${step}: predicted class ${fmt(cls)} (p = ${fmt(num(valueAt(pred.probability, step)))})`];
  if (truth !== undefined) parts.push(`true class ${fmt(truth)}`);
  return parts.join(', ');
}

function figure(label, cls) {
  const img = el('img', {class: `looks-image ${cls}`, alt: label});
  const note = el('figcaption', {text: label});
  return {node: el('figure', {class: 'looks-figure'}, img, note), img, note};
}

function runBlock(run, looks) {
  const {p, layers} = picks(run, looks);
  const exampleSelect = el('select', {class: 'looks-example'});
  for (const e of looks.examples) exampleSelect.append(el('option', {value: e, text: `example ${e}`}));
  const layerSelect = el('select', {class: 'looks-layer'});
  for (const l of layers) layerSelect.append(el('option', {value: l, text: l}));
  const slider = el('input', {type: 'range', class: 'looks-step', min: 0, max: Math.max(0, looks.steps.length - 1), step: 1});
  const stepLabel = el('span', {class: 'looks-caption'});
  const figures = {
    input: figure('input', 'looks-input'),
    gradcam: figure('Grad-CAM, predicted class', 'looks-gradcam'),
    gradcam_true: figure('Grad-CAM, true class', 'looks-gradcam-true'),
    cam: figure('CAM, predicted class', 'looks-cam'),
    features: figure('feature maps', 'looks-features'),
  };
  const show = () => {
    const gradcamLayer = looks.gradcam_layers.includes(p.layer) ? p.layer : looks.gradcam_layers[0];
    const wanted = {input: null, gradcam: gradcamLayer, gradcam_true: gradcamLayer, cam: null, features: p.layer};
    for (const [kind, f] of Object.entries(figures)) {
      const image = findImage(looks, p.example, kind, wanted[kind] === undefined ? null : wanted[kind]);
      f.node.hidden = !image;
      if (!image) continue;
      f.img.src = routeUrl('looks_image', {run, tag: image.tag, step: kind === 'input' ? image.steps[0] : p.step});
      if (kind !== 'input') f.note.textContent = `${f.img.alt} · ${image.layer}`;
    }
    stepLabel.textContent = caption(looks, p.example, p.step);
  };
  exampleSelect.value = String(p.example);
  layerSelect.value = p.layer;
  slider.value = String(Math.max(0, looks.steps.indexOf(p.step)));
  exampleSelect.addEventListener('change', () => { p.example = Number(exampleSelect.value); show(); });
  layerSelect.addEventListener('change', () => { p.layer = layerSelect.value; show(); });
  slider.addEventListener('input', () => { p.step = looks.steps[Number(slider.value)]; show(); });
  show();
  const controls = el('div', {class: 'controls'},
    el('label', {}, 'example ', exampleSelect), el('label', {}, 'layer ', layerSelect),
    el('label', {}, 'step ', slider), stepLabel);
  return el('div', {class: 'looks-run', dataset: {run}}, controls,
    el('div', {class: 'looks-images'}, ...Object.values(figures).map((f) => f.node)));
}

export function draw(results) {
  const out = el('div', {id: 'looks'}, el('p', {class: 'hint', text: HELP}));
  for (const res of results) {
    out.append(runHeading(res.run));
    if (res.looks && !res.looks.images.length) {
      out.append(el('p', {class: 'hint', text: 'No looks images in this run: pass reference examples to LayerProbe (tfprobe.looks.LooksAnalysis) to see where the model looks.'}));
    } else if (res.error) {
      out.append(el('div', {class: 'error-box', text: res.error}));
    } else {
      out.append(runBlock(res.run, res.looks));
    }
  }
  return out;
}
