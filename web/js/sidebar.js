// sidebar.js - the session list (paged, filtered by organize.js),
// renaming and deleting a session, and searching the user's history.

import { CODE } from './wire.js';
import { $, S, SESSION_PAGE, el, errorText, icon, iconButton, notice, req } from './state.js';
import { newChat, openSession, setTitle } from './conversation.js';
import { listFilter, organizeButtons, tagChips } from './organize.js';

function sessionItem(s) {
  const li = el('li');
  li.dataset.id = s.session_id;
  if (s.session_id === S.open) li.classList.add('active');
  li.classList.toggle('pinned', !!s.pinned);
  const open = el('button', 'open');
  open.type = 'button';
  open.title = s.session_name;
  if (s.pinned) open.append(icon('pin'));
  open.append(el('span', 'name', s.session_name));
  open.addEventListener('click', () => {
    closeSidebar();
    openSession(s.session_id, {});
  });
  const actions = el('span', 'actions');
  const rename = iconButton('rename', 'rename', `Rename ${s.session_name}`);
  rename.addEventListener('click', () => startRename(li, s));
  const del = iconButton('trash', 'delete', `Delete ${s.session_name}`);
  del.addEventListener('click', () => confirmDelete(li, s));
  actions.append(...organizeButtons(li, s), rename, del);
  li.append(open, tagChips(s), actions);
  return li;
}

// An entry the user is editing (its name, its tags, a delete to confirm)
// holds the list as it is: a redraw for another change (an event from
// another tab or instance, a page loaded) would take away the box they are
// typing in, and its blur would save it half done. The edit's end draws
// the list again.
let editing = null;
export function beginEdit(li) { editing = li; }
export function endEdit() { editing = null; }

export function renderSessions() {
  if (editing !== null && editing.isConnected) return;
  editing = null;
  const ul = $('sessions');
  ul.replaceChildren(...S.sessions.map(sessionItem));
}

// A reset (another view, a change heard) is always asked for, and makes
// any answer still on its way stale: only the newest one's answer is drawn.
// (It used to be dropped while a load was on its way, so switching the view
// while an event's reload was in flight kept the old view's list.) The next
// page is asked for only when nothing is on its way.
let generation = 0;
export async function loadSessions(reset) {
  if (reset) generation++;
  else if (S.sessionsLoading || S.sessionsDone) return;
  const mine = generation;
  S.sessionsLoading = true;
  try {
    const data = { limit: SESSION_PAGE, filter: listFilter() };
    if (!reset && S.sessionsNext !== null) data.before = S.sessionsNext;
    const r = await req(CODE.SESSIONS, data);
    if (mine !== generation) return;
    const page = r.session_info || [];
    if (reset) S.sessions = [];
    const have = new Set(S.sessions.map((s) => s.session_id));
    for (const s of page) if (!have.has(s.session_id)) S.sessions.push(s);
    S.sessionsNext = r.next_before ?? null;
    S.sessionsDone = !r.has_more;
    renderSessions();
  } catch (e) {
    if (mine === generation) notice(`Could not load your chats: ${errorText(e)}`);
  } finally {
    if (mine === generation) S.sessionsLoading = false;
  }
}

export function upsertSession(id, name, top) {
  const s = S.sessions.find((x) => x.session_id === id);
  if (s) s.session_name = name;
  else if (top && S.view === '' && !S.tag) {
    // after the pinned ones: a new chat is the newest of the others
    const at = S.sessions.findIndex((x) => !x.pinned);
    S.sessions.splice(at < 0 ? S.sessions.length : at, 0,
      { session_id: id, session_name: name, pinned: false, archived: false, tags: [] });
  }
  renderSessions();
  if (id === S.open) setTitle(name);
}

export function dropSession(id) {
  S.sessions = S.sessions.filter((s) => s.session_id !== id);
  renderSessions();
  if (id === S.open) {
    newChat();
    notice('This chat was deleted.');
  }
}

function startRename(li, s) {
  const input = el('input', 'rename-input');
  input.value = s.session_name;
  input.maxLength = 100;
  input.setAttribute('aria-label', 'New name');
  li.replaceChildren(input);
  beginEdit(li);
  input.focus();
  input.select();
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    endEdit();
    const name = input.value.trim();
    if (!save || name === '' || name === s.session_name) {
      renderSessions();
      return;
    }
    try {
      const r = await req(CODE.RENAME, { session_id: s.session_id, session_name: name });
      upsertSession(s.session_id, r.session_name, false);
    } catch (e) {
      renderSessions();
      notice(`Could not rename: ${errorText(e)}`);
    }
  };
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') finish(true);
    else if (ev.key === 'Escape') finish(false);
  });
  input.addEventListener('blur', () => finish(true));
}

function confirmDelete(li, s) {
  const box = el('div', 'confirm');
  const yes = el('button', 'danger', 'Delete');
  yes.type = 'button';
  const no = el('button', '', 'Cancel');
  no.type = 'button';
  box.append(el('span', '', `Delete “${s.session_name}”?`), yes, no);
  li.replaceChildren(box);
  beginEdit(li);
  no.focus();
  const cancel = () => { endEdit(); renderSessions(); };
  no.addEventListener('click', cancel);
  box.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') cancel(); });
  yes.addEventListener('click', async () => {
    endEdit();
    try {
      await req(CODE.DELETE, { session_id: s.session_id });
      dropSession(s.session_id);
    } catch (e) {
      renderSessions();
      notice(`Could not delete: ${errorText(e)}`);
    }
  });
}

// -------------------------------------------------------------- search

let searchTimer = null;

export function onSearchInput() {
  clearTimeout(searchTimer);
  const q = $('search').value.trim();
  if (q === '') {
    $('results').hidden = true;
    $('sessions').hidden = false;
    return;
  }
  searchTimer = setTimeout(() => search(q), 250);
}

function snippet(parts) {
  const span = el('span', 'snippet');
  for (const p of parts || []) span.append(p.hit ? el('mark', '', p.text) : document.createTextNode(p.text));
  return span;
}

async function search(q) {
  const mine = ++S.searchSeq;
  let r;
  try {
    r = await req(CODE.SEARCH, { query: q, limit: 20 });
  } catch (e) {
    if (mine === S.searchSeq) notice(`Search failed: ${errorText(e)}`);
    return;
  }
  if (mine !== S.searchSeq) return; // a newer query is on its way
  const ul = $('results');
  ul.replaceChildren();
  for (const h of r.hits) {
    const li = el('li');
    const b = el('button');
    b.type = 'button';
    b.append(el('span', 'name', h.session_name), snippet(h.snippet));
    b.addEventListener('click', async () => {
      closeSidebar();
      // A hit on another version of the chat: show that version first.
      if (h.on_active_path === false) {
        try {
          await req(CODE.SWITCH, { session_id: h.session_id, seq: h.seq });
        } catch (e) {
          notice(`Could not open that version: ${errorText(e)}`);
          return;
        }
      }
      openSession(h.session_id, { at: h.seq });
    });
    li.append(b);
    ul.append(li);
  }
  if (r.hits.length === 0) ul.append(el('li', 'none', 'No matches'));
  $('sessions').hidden = true;
  ul.hidden = false;
}

// -------------------------------------------------------- conversation

export function closeSidebar() {
  $('sidebar').classList.remove('open');
  $('scrim').hidden = true;
  $('menu').setAttribute('aria-expanded', 'false');
}
