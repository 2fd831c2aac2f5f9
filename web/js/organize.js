// organize.js - pinning, archiving and tagging chats (code 24), and which
// of them the list shows: the chats, the pinned ones, the archive, or the
// ones with a tag (code 1's filter). chatd keeps the state; another tab's
// change arrives as a session_changed event and the list is read again.

import { CODE } from './wire.js';
import { $, S, el, errorText, iconButton, notice, req } from './state.js';
import { beginEdit, endEdit, loadSessions, renderSessions } from './sidebar.js';

// Code 1's filter for what the list shows.
export function listFilter() {
  const f = {};
  if (S.view === 'archived') f.archived = true;
  if (S.view === 'pinned') f.pinned = true;
  if (S.tag) f.tag = S.tag;
  return f;
}

export function setView(view, tag) {
  S.view = view;
  S.tag = tag;
  $('view').value = view;
  const chip = $('tag-filter');
  chip.hidden = !tag;
  $('tag-filter-name').textContent = tag;
  loadSessions(true);
}

async function organize(s, fields) {
  try {
    await req(CODE.ORGANIZE, Object.assign({ session_id: s.session_id }, fields));
    // pinned ones first, archived ones elsewhere: the order is chatd's
    loadSessions(true);
  } catch (e) {
    notice(`Could not change the chat: ${errorText(e)}`);
  }
}

// The pin, archive and tag buttons of a session's entry.
export function organizeButtons(li, s) {
  const pin = iconButton('pin', 'pin', s.pinned ? `Unpin ${s.session_name}` : `Pin ${s.session_name}`);
  pin.setAttribute('aria-pressed', String(!!s.pinned));
  pin.addEventListener('click', () => organize(s, { pinned: !s.pinned }));
  const archive = iconButton('archive', 'archive',
    s.archived ? `Restore ${s.session_name}` : `Archive ${s.session_name}`);
  archive.setAttribute('aria-pressed', String(!!s.archived));
  archive.addEventListener('click', () => organize(s, { archived: !s.archived }));
  const tags = iconButton('tag', 'tags', `Tags of ${s.session_name}`);
  tags.addEventListener('click', () => editTags(li, s));
  return [pin, archive, tags];
}

// The session's tags, each a button that shows the chats with it.
export function tagChips(s) {
  const box = el('span', 'tag-chips');
  for (const t of s.tags || []) {
    const b = el('button', 'tag-chip', t);
    b.type = 'button';
    b.title = `Chats tagged ${t}`;
    b.addEventListener('click', () => setView(S.view === 'pinned' ? '' : S.view, t));
    box.append(b);
  }
  return box;
}

function editTags(li, s) {
  const input = el('input', 'tags-input');
  input.value = (s.tags || []).join(', ');
  input.placeholder = 'tags, separated by commas';
  input.setAttribute('aria-label', 'Tags, separated by commas');
  li.replaceChildren(input);
  beginEdit(li);
  input.focus();
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    endEdit();
    if (!save) {
      renderSessions();
      return;
    }
    const tags = input.value.split(',').map((t) => t.trim()).filter((t) => t !== '');
    await organize(s, { tags });
    renderSessions();
  };
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') finish(true);
    else if (ev.key === 'Escape') finish(false);
  });
  input.addEventListener('blur', () => finish(true));
}

// Another tab or instance changed one: read the list again (once).
let again = null;
export function onSessionChanged() {
  clearTimeout(again);
  again = setTimeout(() => loadSessions(true), 50);
}
