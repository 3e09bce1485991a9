// The header controls: run picker, view tabs, layer-name filter, category toggles, findings only.

import {el} from './charts.js';
import {runColor} from './model.js';
import {app, setFilter, setShared, state} from './state.js';

export const VIEWS = [
  ['overview', 'Overview'],
  ['layer', 'Layer detail'],
  ['gradients', 'Gradient flow'],
  ['pooling', 'Pooling'],
  ['health', 'Health'],
  ['representations', 'Representations'],
  ['looks', 'Looks'],
];

export function renderPicker(pickerEl) {
  const list = el('div', {class: 'run-list', id: 'run-list'});
  for (const run of state.runs) {
    const box = el('input', {type: 'checkbox', value: run.name});
    box.checked = state.selected.has(run.name);
    box.addEventListener('change', () => {
      if (box.checked) state.selected.add(run.name);
      else state.selected.delete(run.name);
      app.showView();
    });
    list.append(
      el('label', {title: `${run.name}: ${run.layers} layers, last step ${run.max_step}`}, box,
        el('span', {class: 'swatch', style: `background:${runColor(run.name)}`}), el('span', {class: 'run-name-label', text: run.name}),
        // the plugin's own scan of the run's files: checksums that fail, concurrent writers (TensorBoard shows neither)
        ...((run.warnings || []).length ? [el('span', {class: 'run-warning', text: '⚠', title: run.warnings.join('\n')})] : [])),
    );
  }
  const pick = (fn) => () => { fn(); renderPicker(pickerEl); app.showView(); };
  const all = el('button', {text: 'all', onclick: pick(() => state.runs.forEach((r) => state.selected.add(r.name)))});
  const none = el('button', {text: 'none', onclick: pick(() => state.selected.clear())});
  pickerEl.replaceChildren(el('div', {class: 'picker-title'}, el('span', {text: 'Runs'}), all, none), list);
}

export function renderTabs(tabsEl) {
  tabsEl.replaceChildren(
    ...VIEWS.map(([id, label]) =>
      el('button', {role: 'tab', 'aria-selected': String(state.view === id), dataset: {view: id}, text: label, onclick: () => app.go(id)}),
    ),
  );
}

/** The layer-name regex box: filters every view as you type (no refetch); invalid = error state. */
export function filterBox() {
  const input = el('input', {type: 'search', id: 'layer-filter', placeholder: 'Filter layers (regex)', spellcheck: 'false', autocomplete: 'off'});
  input.value = state.filter;
  const message = el('span', {class: 'filter-error', id: 'layer-filter-error', role: 'alert'});
  const show = () => {
    input.classList.toggle('invalid', state.filterError !== null);
    input.setAttribute('aria-invalid', String(state.filterError !== null));
    message.textContent = state.filterError ? `invalid regex: ${state.filterError}` : '';
  };
  input.addEventListener('input', () => {
    setFilter(input.value);
    show();
    app.redraw();
  });
  show();
  return el('div', {class: 'layer-filter'}, input, message);
}

/** Per category of the selected runs' layers (names counted once): a toggle showing or hiding
 * it in every view, with its count; then "findings only". Categories without layers are left out. */
export function renderCategoryBar(barEl) {
  const counts = new Map();
  const seen = new Set();
  for (const layers of state.context.layers.values()) {
    for (const [name, info] of layers) {
      if (seen.has(name)) continue;
      seen.add(name);
      counts.set(info.category, (counts.get(info.category) || 0) + 1);
    }
  }
  const toggles = state.categories.filter((c) => counts.has(c.name)).map((c) => {
    const shown = !state.hidden.has(c.name);
    return el('button', {
      class: 'category-toggle', type: 'button', 'aria-pressed': String(shown), dataset: {category: c.name},
      title: `${shown ? 'Hide' : 'Show'} ${c.description}${c.classes.length ? ': ' + c.classes.join(', ') : ''}`,
      onclick: () => {
        const hidden = new Set(state.hidden);
        if (shown) hidden.add(c.name);
        else hidden.delete(c.name);
        setShared('hidden', hidden);
        renderCategoryBar(barEl);
        app.redraw();
      },
    }, el('span', {text: c.name}), el('span', {class: 'count', text: String(counts.get(c.name))}));
  });
  const box = el('input', {type: 'checkbox', id: 'findings-only'});
  box.checked = state.findingsOnly;
  box.addEventListener('change', () => { setShared('findingsOnly', box.checked); app.redraw(); });
  const flagged = new Set((state.context.findings || []).map((f) => f.layer)).size;
  const label = state.context.findingsError ? 'findings only (unavailable)'
    : state.context.findings ? `findings only (${flagged})` : 'findings only (…)';
  barEl.replaceChildren(el('span', {class: 'hint', text: 'Layers:'}), ...toggles,
    el('label', {class: 'findings-only', title: 'show only layers with a Health finding'}, box, label));
}
