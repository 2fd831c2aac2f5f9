// turn.js - a reply being written: its stream of deltas, its end or
// failure, resuming it after a lost connection or a reload, and the live
// events of the user's other tabs and instances.

import { showTemporary } from './temporary.js';
import { CODE, ERR, NEW_SESSION, isTurn } from './wire.js';
import { renderInto } from './render.js';
import { $, S, el, errorText, nearBottom, notice, pendingTurn, req, setOpen, setPendingTurn, showMoney, toBottom } from './state.js';
import { loadModels, refreshMoney, refreshSpent } from './session.js';
import { dropSession, upsertSession } from './sidebar.js';
import { fileBody, loadNewer, openSession } from './conversation.js';
import { onSessionChanged } from './organize.js';
import { onImportEvent } from './importing.js';

// A turn of code 17 or 18 (own or resumed) hangs beside other messages:
// when it ends the active path is read again.
export function newTurn(session, own, userText, fileRef, fileName, previewURL) {
  return { session, own, index: -1, text: '', userText, fileRef, fileName, previewURL, nodes: [], body: null, frame: 0,
    columns: null, finals: 0 };
}

export function attachTurn(t) {
  const box = $('messages');
  t.nodes = [];
  if (t.userText !== null && t.userText !== undefined) {
    const u = el('div', 'msg user pending');
    u.append(el('div', 'body', t.userText));
    t.nodes.push(u);
  }
  if (t.fileRef || t.previewURL) {
    const f = el('div', 'msg file pending');
    if (t.previewURL) {
      const body = el('div', 'body');
      const img = el('img');
      img.src = t.previewURL;
      img.alt = t.fileName || 'attached image';
      body.append(img);
      f.append(body);
    } else {
      f.append(fileBody(t.fileRef, t.fileName));
    }
    t.nodes.push(f);
  }
  const a = el('div', 'msg assistant streaming pending');
  t.body = el('div', 'body');
  a.append(t.body);
  t.nodes.push(a);
  box.append(...t.nodes);
  $('empty').hidden = true;
  paintTurn(t);
}

export function dropPending() {
  for (const n of document.querySelectorAll('#messages .pending')) n.remove();
}

function paintTurn(t) {
  if (!t.body || t.frame) return;
  t.frame = requestAnimationFrame(() => {
    t.frame = 0;
    if (!t.body || !t.body.isConnected) return;
    const bottom = nearBottom();
    renderInto(t.body, t.text);
    if (bottom) toBottom();
  });
}

export function setBusy(busy) {
  $('send').hidden = busy;
  $('stop').hidden = !busy;
  $('send').disabled = busy || !(S.wire && S.wire.open);
}

export function endTurn() {
  const t = S.turn;
  S.turn = null;
  if (t && t.frame) cancelAnimationFrame(t.frame);
  sessionStorage.removeItem('chatd.pending');
  setBusy(false);
  return t;
}

export async function resume(session, after) {
  const data = { session_id: session };
  if (after >= 0) data.after = after;
  let r;
  try {
    r = await req(CODE.RESUME, data);
  } catch (e) {
    // A lost connection is not the turn's end: the reconnect resumes it.
    if (e.code !== ERR.LOST && S.turn && S.turn.session === session) failTurn(e);
    return;
  }
  if (r.active) {
    if (!S.turn && session === S.open) {
      const pending = pendingTurn();
      const text = pending && pending.session === session ? pending.text : null;
      S.turn = newTurn(session, false, text, null, null, null);
      attachTurn(S.turn);
      setBusy(true);
    }
  } else if (S.turn && S.turn.session === session) {
    // It ended while we were away: what it stored is in the history.
    endTurn();
    if (session === S.open) await loadNewer(true);
  }
}

// Answers side by side (code 18 with model_names): one column each,
// made when its first frame comes, in a row where the single answer was.
function column(t, i, model) {
  if (!t.columns) {
    t.columns = [];
    const row = el('div', 'answers pending');
    if (t.body) t.body.parentElement.replaceWith(row);
    else $('messages').append(row);
    t.nodes = t.nodes.filter((n) => n.isConnected).concat([row]);
    t.row = row;
    t.body = null;
  }
  while (t.columns.length <= i) {
    const col = el('div', 'msg assistant streaming');
    const head = el('div', 'answer-model', '');
    const body = el('div', 'body');
    col.append(head, body);
    t.row.append(col);
    t.columns.push({ col, head, body, text: '', done: false, failed: null });
  }
  if (model) t.columns[i].head.textContent = model;
  return t.columns[i];
}

// The end of one answer side by side: true when it is the group's last. A
// resume from the last delta may replay an end already seen: counted once.
function answerDone(t, c, answers) {
  if (c.done) return false;
  c.done = true;
  c.col.classList.remove('streaming');
  return ++t.finals >= answers;
}

// The group's end: the stored answers are read as after any reply (one
// loader at a time: the failed answers' turn_finished events read too);
// the columns of the ones that failed go with the rest of the pending row,
// so what they said stays in a notice.
async function endGroup(t, session) {
  endTurn();
  refreshMoney();
  const failed = (t.columns || []).filter((c) => c.failed);
  // With none stored this brings back what the request took off the screen.
  if (session === S.open) await loadNewer(true);
  if (failed.length) notice(failed.map((c) => `${c.head.textContent || 'An answer'}: ${c.failed}`).join(' · '));
}

// One answer side by side failed (its error names it), the others go on:
// its column says why until the group ends.
function onAnswerFailed(f) {
  const t = S.turn;
  if (!t) return;
  const c = column(t, f.answer, f.model_name);
  c.failed = errorText({ message: f.error, detail: f.detail });
  c.body.textContent = c.failed;
  c.col.classList.add('failed');
  if (answerDone(t, c, f.answers)) endGroup(t, t.session);
}

function onDelta(d) {
  const t = S.turn;
  if (!t || (t.session !== d.session_id && t.session !== NEW_SESSION)) return;
  if (t.session === NEW_SESSION) adoptSession(t, d.session_id);
  if (typeof d.index === 'number') {
    if (d.index <= t.index) return; // a repeat, after a resume
    t.index = d.index;
  }
  if (typeof d.answer === 'number') {
    const c = column(t, d.answer, t.models ? t.models[d.answer] : null);
    c.text += d.delta;
    if (t.session === S.open) renderInto(c.body, c.text);
    return;
  }
  t.text += d.delta;
  if (t.session === S.open) paintTurn(t);
}

// A NEW chat learns its id from its first frame.
function adoptSession(t, id) {
  t.session = id;
  if (S.open === null) {
    setOpen(id);
    $('export').hidden = false;
  }
  const p = pendingTurn();
  if (p) setPendingTurn(id, p.text);
}

async function onChatReply(d) {
  const t = S.turn;
  if (!t) return;
  if (t.session === NEW_SESSION) adoptSession(t, d.session_id);
  if (t.session !== d.session_id) return;
  if (d.temporary === true) {
    if (d.session_id === S.open) showTemporary(true);
  } else if (d.session_name) {
    upsertSession(d.session_id, d.session_name, true);
  }
  t.text = d.message;
  if (t.body) {
    cancelAnimationFrame(t.frame);
    t.frame = 0;
    renderInto(t.body, t.text);
    t.body.parentElement.classList.remove('streaming');
  }
  endTurn();
  refreshMoney();
  // The stored messages, with their seqs (for ratings) and file links.
  if (d.session_id === S.open) await loadNewer(true);
}

// The end of an edit or a new answer: the session's active path now ends
// with it. What the screen kept (the path up to where it branched) is on
// it, so the rest is read as after any reply; a tab that still shows the
// old branch reads the whole path (loadNewer sees the path turned). Only
// for the turn on screen: a resume replays the end of a turn that ended a
// moment ago too.
async function onBranchReply(d) {
  const t = S.turn;
  if (!t || t.session !== d.session_id) return;
  if (typeof d.answers === 'number') { // one of several: the turn ends with the last
    const c = column(t, d.answer, d.model_name);
    c.text = d.message;
    renderInto(c.body, c.text);
    if (!answerDone(t, c, d.answers)) return;
  }
  await endGroup(t, d.session_id);
}

export function failTurn(e) {
  const t = endTurn();
  if (t && t.own && t.userText && $('input').value === '') $('input').value = t.userText;
  if (t && t.nodes.length) {
    const last = t.nodes[t.nodes.length - 1];
    last.classList.remove('streaming');
    for (const n of t.nodes) n.remove();
  }
  if (e.code === ERR.TURN_INTERRUPTED) notice('The reply was interrupted before it was saved. Send it again.');
  else notice(errorText(e));
}

export function onPush(f) {
  if (f.error !== undefined) {
    if (f.type === CODE.REGENERATE && typeof f.answer === 'number') {
      onAnswerFailed(f);
    } else if (isTurn(f.type) || f.type === CODE.RESUME) {
      const branch = f.type === CODE.EDIT || f.type === CODE.REGENERATE;
      if (S.turn) failTurn({ message: f.error, code: f.code, detail: f.detail });
      else if (isTurn(f.type)) notice(f.error);
      // what an edit or a new answer took off the screen comes back
      if (branch && S.open) openSession(S.open, {});
    } else {
      notice(f.detail ? `${f.error} (${f.detail})` : f.error);
    }
    return;
  }
  if (f.type === CODE.DELTA) onDelta(f.data);
  else if (f.type === CODE.CHAT) onChatReply(f.data);
  else if (f.type === CODE.EDIT || f.type === CODE.REGENERATE) onBranchReply(f.data);
  else if (f.type === CODE.EVENT) onEvent(f.data);
}

function onEvent(ev) {
  switch (ev.kind) {
  case 'session_created':
    upsertSession(ev.session_id, ev.session_name, true);
    break;
  case 'session_renamed':
    upsertSession(ev.session_id, ev.session_name, false);
    break;
  case 'session_deleted':
    dropSession(ev.session_id);
    break;
  case 'balance':
    S.balance = ev.balance;
    showMoney();
    refreshSpent();
    break;
  case 'models':
    S.modelsLoaded = loadModels();
    break;
  case 'turn_started':
    // Another tab (or instance) began a reply in the chat we look at.
    if (ev.session_id === S.open && !S.turn) resume(ev.session_id, -1);
    break;
  case 'turn_finished':
    if (ev.session_id === S.open && !S.turn) loadNewer(true);
    break;
  case 'session_changed':
    onSessionChanged();
    break;
  case 'import_progress':
  case 'import_finished':
    onImportEvent(ev);
    break;
  case 'branch_switched':
    // Another tab chose another version: show the same path.
    if (ev.session_id === S.open && !S.turn) openSession(S.open, {});
    break;
  default:
    break;
  }
}

// ------------------------------------------------------------- sending
