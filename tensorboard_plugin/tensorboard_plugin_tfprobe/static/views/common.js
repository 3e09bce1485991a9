// Building blocks shared by the views.

import {el} from '../charts.js';
import {runColor} from '../model.js';
import {filterDescription, mainWidth, state} from '../state.js';

/** A run heading (colour swatch and name), as `tag` (h2 or h3). */
export function runHeading(run, tag = 'h2') {
  return el(tag, {}, el('span', {class: 'swatch', style: `background:${runColor(run)}`}), ' ', el('span', {class: 'run-name', text: run}));
}

/** A grid of equal chart cards about `target` px wide; returns [grid, canvas width]. */
export function chartGrid(target) {
  const gap = 16;
  const width = mainWidth();
  const cols = Math.max(1, Math.floor((width + gap) / (target + gap)));
  const card = Math.floor((width - gap * (cols - 1)) / cols);
  const grid = el('div', {class: 'charts', style: `grid-template-columns: repeat(${cols}, ${card}px)`});
  return [grid, card - 20];
}

export function statSelect(value, onchange, only = null) {
  const select = el('select', {id: 'stat-select'});
  for (const s of only || state.stats) {
    const option = el('option', {value: s, text: s, title: state.descriptions[s] || ''});
    option.selected = s === value;
    select.append(option);
  }
  select.addEventListener('change', () => onchange(select.value));
  return select;
}

/** "n of m layers match the filter /x/, are not normalization" when some are hidden, else null. */
export function filterNote(shown, total) {
  if (shown === total) return null;
  return el('p', {class: 'hint filter-note', text: `${shown} of ${total} layers ${filterDescription()}.`});
}

export function emptyState() {
  return el(
    'div',
    {class: 'empty-state', id: 'empty-state'},
    el('h2', {text: 'No tfprobe data yet'}),
    el('p', {text: 'None of the runs under --logdir holds tfprobe statistics. Attach the LayerProbe callback to model.fit and point TensorBoard at the same directory:'}),
    el('pre', {text: [
      'import tfprobe',
      '',
      'model.fit(x, y, epochs=5,',
      '          callbacks=[tfprobe.LayerProbe(log_dir="logs/run1")])',
      '',
      '# then: tensorboard --logdir logs',
    ].join('\n')}),
    el('p', {class: 'hint', text: 'Data written while TensorBoard runs shows up after the reload button (top right) is pressed.'}),
  );
}
