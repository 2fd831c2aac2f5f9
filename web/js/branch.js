// branch.js - the conversation as a tree on the page: "‹ n/m ›" between
// the versions of a message, editing a question, a new answer (with the
// model chosen in the picker), a fork from any message. chatd keeps the
// active path in PostgreSQL: after each change the page reads it again,
// so a reload, another tab or another device shows the same versions.

import { CODE } from './wire.js';
import { $, S, el, errorText, iconButton, notice, req, toBottom } from './state.js';
import { openSession } from './conversation.js';
import { upsertSession } from './sidebar.js';
import { attachTurn, failTurn, newTurn, setBusy } from './turn.js';

// The controls under message m (drawn in d): the versions' switcher when
// there are several, edit (a question) or a new answer and a comparison of
// models (an answer), fork.
export function branchControls(m, d) {
  const bar = el('span', 'branch');
  if (m.siblings > 1) {
    const step = (seq, glyph, label) => {
      const b = el('button', 'sibling', glyph);
      b.type = 'button';
      b.setAttribute('aria-label', label);
      b.title = label;
      b.disabled = seq === undefined;
      b.addEventListener('click', () => switchTo(seq));
      return b;
    };
    bar.append(step(m.prev_sibling, '‹', 'Previous version'),
      el('span', 'versions', `${m.sibling_index + 1}/${m.siblings}`),
      step(m.next_sibling, '›', 'Next version'));
  }
  if (m.role === 'user') {
    const b = iconButton('rename', 'edit', 'Edit');
    b.addEventListener('click', () => startEdit(m, d));
    bar.append(b);
  } else {
    const b = iconButton('regenerate', 'regenerate', 'New answer');
    b.addEventListener('click', () => branchTurn(CODE.REGENERATE, m.seq, null));
    const c = iconButton('compare', 'compare', 'Compare models');
    c.addEventListener('click', () => startCompare(m, d));
    bar.append(b, c);
  }
  const f = iconButton('fork', 'fork', 'Fork from here');
  f.addEventListener('click', () => fork(m));
  bar.append(f);
  return bar;
}

async function switchTo(seq) {
  if (seq === undefined || S.turn || !S.open) return;
  try {
    await req(CODE.SWITCH, { session_id: S.open, seq });
  } catch (e) {
    notice(`Could not switch: ${errorText(e)}`);
    return;
  }
  await openSession(S.open, {});
}

// The question's text becomes a box; saving sends the new version.
function startEdit(m, d) {
  if (S.turn || d.querySelector('textarea')) return;
  const body = d.querySelector('.body');
  const box = el('textarea', 'edit-box');
  box.value = m.content;
  box.rows = Math.min(12, m.content.split('\n').length + 1);
  const save = el('button', 'edit-save', 'Send');
  save.type = 'button';
  const cancel = el('button', 'edit-cancel', 'Cancel');
  cancel.type = 'button';
  const form = el('div', 'edit-form');
  form.append(box, save, cancel);
  body.replaceWith(form);
  box.focus();
  cancel.addEventListener('click', () => form.replaceWith(body));
  const go = () => {
    const text = box.value;
    if (text.trim() === '') return;
    branchTurn(CODE.EDIT, m.seq, text);
  };
  save.addEventListener('click', go);
  box.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey) {
      ev.preventDefault();
      go();
    } else if (ev.key === 'Escape') {
      form.replaceWith(body);
    }
  });
}

// An edit (text: the new question) of message seq, or a new answer to
// the question of answer seq (text null), streamed where they go: what
// comes after them on screen is not on the new path.
async function branchTurn(type, seq, text, models) {
  if (S.turn || !S.wire || !S.wire.open || !S.open) return;
  const model = $('model').value;
  if (!model) {
    notice('You have no model to chat with. Ask an administrator for access.');
    return;
  }
  const i = S.msgs.findIndex((x) => x.seq === seq);
  for (const gone of S.msgs.slice(i < 0 ? S.msgs.length : i)) {
    const n = document.querySelector(`#messages .msg[data-seq="${gone.seq}"]`);
    if (n) n.remove();
  }
  if (i >= 0) S.msgs = S.msgs.slice(0, i);
  S.hasNewer = false;
  S.turn = newTurn(S.open, true, text, null, null, null);
  S.turn.models = models || null;
  attachTurn(S.turn);
  setBusy(true);
  toBottom();
  const data = { session_id: S.open, seq, stream: true };
  if (models) data.model_names = models;
  else data.model_name = model;
  if (text !== null) data.message = text;
  try {
    await req(type, data);
  } catch (e) {
    failTurn(e);
    await openSession(S.open, {});
  }
}

// A choice of 2 to 4 of the user's models (the picker's first), then
// their answers side by side.
function startCompare(m, d) {
  if (S.turn || d.querySelector('.compare-form')) return;
  const names = [...$('model').options].map((o) => o.value);
  if (names.length < 2) {
    notice('Comparing needs at least two models you may use.');
    return;
  }
  const form = el('div', 'compare-form');
  const current = $('model').value;
  const chosen = new Set([current, names.find((n) => n !== current)]);
  const picks = names.map((name) => {
    const label = el('label');
    const box = el('input');
    box.type = 'checkbox';
    box.value = name;
    box.checked = chosen.has(name);
    label.append(box, document.createTextNode(` ${name}`));
    form.append(label);
    return box;
  });
  const go = el('button', 'compare-go', 'Compare');
  go.type = 'button';
  const cancel = el('button', 'compare-cancel', 'Cancel');
  cancel.type = 'button';
  form.append(go, cancel);
  d.append(form);
  cancel.addEventListener('click', () => form.remove());
  go.addEventListener('click', () => {
    const models = picks.filter((p) => p.checked).map((p) => p.value);
    if (models.length < 2 || models.length > 4) {
      notice('Choose two to four models to compare.');
      return;
    }
    form.remove();
    branchTurn(CODE.REGENERATE, m.seq, null, models);
  });
}

async function fork(m) {
  if (!S.open) return;
  let r;
  try {
    r = await req(CODE.FORK, { session_id: S.open, seq: m.seq });
  } catch (e) {
    notice(`Could not fork: ${errorText(e)}`);
    return;
  }
  upsertSession(r.session_id, r.session_name, true);
  await openSession(r.session_id, {});
}
