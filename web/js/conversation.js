// conversation.js - the open session: its messages, paged both ways from
// any point, ratings, files.

import { CODE, ERR } from './wire.js';
import { renderInto } from './render.js';
import { $, PAGE, S, clearNotice, el, errorText, fileURL, icon, iconButton, isImage, nearBottom, notice, pendingTurn, req, setOpen, toBottom } from './state.js';
import { setExportLinks } from './session.js';
import { dropSession } from './sidebar.js';
import { attachTurn, dropPending, resume } from './turn.js';
import { branchControls } from './branch.js';
import { showTemporary } from './temporary.js';

export function setTitle(name) {
  S.openName = name;
  $('title').textContent = name || 'New chat';
  document.title = name ? `${name} · chatd` : 'chatd';
  $('export').hidden = S.open === null;
  $('share').hidden = S.open === null;
  setExportLinks();
}

export function markActive() {
  for (const li of $('sessions').children) li.classList.toggle('active', li.dataset.id === S.open);
}

export function newChat() {
  setOpen(null);
  S.msgs = [];
  S.hasOlder = S.hasNewer = false;
  S.nextBefore = null;
  if (S.turn && !S.turn.own) S.turn = null;
  setTitle('');
  showTemporary(null);
  markActive();
  renderConversation();
  $('input').focus();
}

// Opens a session: its newest page, or with at, the page around that
// message (a search hit), which can then be scrolled in both directions.
export async function openSession(id, { at }) {
  const data = { session_id: id, limit: PAGE };
  if (at !== undefined && at !== null) data.before = at + Math.floor(PAGE / 2);
  let r;
  try {
    r = await req(CODE.HISTORY, data);
  } catch (e) {
    const pending = pendingTurn();
    if (e.code === ERR.NO_SESSION && pending && pending.session === id && !S.turn) {
      // A new chat is stored with its first reply: until then only its
      // running turn knows it. Resume that.
      setOpen(id);
      S.msgs = [];
      S.hasOlder = S.hasNewer = false;
      setTitle(pending.text.slice(0, 20));
      renderConversation();
      await resume(id, -1);
      if (!S.turn) await loadNewer(true);
      return;
    }
    if (e.code === ERR.NO_SESSION) {
      sessionStorage.removeItem('chatd.open');
      dropSession(id);
      notice('That chat no longer exists.');
    } else {
      notice(`Could not open the chat: ${errorText(e)}`);
    }
    return;
  }
  if (S.turn && !S.turn.own) S.turn = null;
  setOpen(id);
  S.msgs = r.messages;
  S.hasOlder = r.has_more;
  S.nextBefore = r.next_before;
  S.hasNewer = at !== undefined && at !== null;
  setTitle(r.session_name);
  showTemporary(r.temporary === true);
  markActive();
  renderConversation();
  if (S.hasNewer) {
    const hit = document.querySelector(`.msg[data-seq="${at}"]`);
    if (hit) {
      hit.classList.add('hit');
      hit.scrollIntoView({ block: 'center' });
    }
  } else {
    toBottom();
  }
  clearNotice();
  // A reply may be running in it (another tab, or ours before a reload).
  if (!S.turn) resume(id, -1);
}

export async function loadOlder() {
  if (!S.open || !S.hasOlder || S.loadingOlder) return;
  S.loadingOlder = true;
  const id = S.open;
  try {
    const r = await req(CODE.HISTORY, { session_id: id, before: S.nextBefore, limit: PAGE });
    if (id !== S.open) return;
    const s = $('scroller');
    const before = s.scrollHeight;
    const have = new Set(S.msgs.map((m) => m.seq));
    const older = r.messages.filter((m) => !have.has(m.seq));
    S.msgs = older.concat(S.msgs);
    S.hasOlder = r.has_more;
    S.nextBefore = r.next_before;
    const frag = document.createDocumentFragment();
    for (const m of older) frag.append(messageEl(m));
    $('messages').prepend(frag);
    s.scrollTop += s.scrollHeight - before; // what was on screen stays there
  } catch (e) {
    if (e.code !== ERR.LOST) notice(`Could not load older messages: ${errorText(e)}`);
  } finally {
    S.loadingOlder = false;
  }
  recheck();
}

// Messages after the newest we have: after a jump, when scrolled down;
// after a reply, to learn the stored messages' seqs; after a reconnect.
export async function loadNewer(all) {
  if (!S.open) return;
  if (S.loadingNewer) {
    S.newerAgain = true;
    return;
  }
  S.loadingNewer = true;
  S.newerAgain = false;
  const id = S.open;
  try {
    for (;;) {
      const last = S.msgs.length ? S.msgs[S.msgs.length - 1].seq : -1;
      const data = { session_id: id, limit: PAGE };
      if (S.hasNewer) data.before = last + PAGE + 1;
      const r = await req(CODE.HISTORY, data);
      if (id !== S.open) return;
      const fresh = r.messages.filter((m) => m.seq > last);
      // The path went another way (an edit, a new answer, from here or
      // another tab): what is on screen is not on it. Read it again.
      const turned = last >= 0 && fresh.length > 0 && fresh[0].parent_seq !== last;
      if (!S.hasNewer && (turned || (fresh.length === r.messages.length && r.has_more && last >= 0))) {
        // More than a page arrived while we were away: start again from the newest.
        await openSession(id, {});
        return;
      }
      const bottom = !S.hasNewer && nearBottom();
      if (!S.turn || S.turn.session !== id) dropPending();
      S.msgs = S.msgs.concat(fresh);
      for (const m of fresh) $('messages').append(messageEl(m));
      $('empty').hidden = S.msgs.length > 0;
      if (S.hasNewer && fresh.length < PAGE) S.hasNewer = false;
      if (bottom) toBottom();
      if (!all || !S.hasNewer || fresh.length === 0) break;
    }
  } catch (e) {
    if (e.code !== ERR.LOST) notice(`Could not load new messages: ${errorText(e)}`);
  } finally {
    S.loadingNewer = false;
  }
  if (S.newerAgain) loadNewer(true);
  else recheck();
}

// An observer reports only changes: a sentinel still in view after a page
// arrived (a short page, a tall screen) would never fire again.
function recheck() {
  requestAnimationFrame(() => {
    const s = $('scroller').getBoundingClientRect();
    const inView = (id) => {
      const r = $(id).getBoundingClientRect();
      return r.bottom >= s.top - 200 && r.top <= s.bottom + 200;
    };
    if (S.hasOlder && !S.loadingOlder && inView('older')) loadOlder();
    else if (S.hasNewer && !S.loadingNewer && inView('newer')) loadNewer(false);
  });
}

function rateButtons(m) {
  const meta = el('div', 'meta');
  const mk = (value, label, glyph) => {
    const b = iconButton(glyph, 'rate', label);
    b.dataset.rating = String(value);
    b.setAttribute('aria-pressed', String(m.rating === value));
    b.addEventListener('click', () => rate(m, m.rating === value ? 0 : value, meta));
    return b;
  };
  meta.append(mk(1, 'Good reply', 'up'), mk(-1, 'Bad reply', 'down'));
  return meta;
}

async function rate(m, value, meta) {
  try {
    const r = await req(CODE.RATE, { session_id: S.open, seq: m.seq, rating: value });
    m.rating = r.rating === 0 ? undefined : r.rating;
    for (const b of meta.querySelectorAll('button.rate'))
      b.setAttribute('aria-pressed', String(Number(b.dataset.rating) === r.rating));
  } catch (e) {
    notice(`Could not save the rating: ${errorText(e)}`);
  }
}

export function fileBody(ref, name) {
  const body = el('div', 'body');
  const url = fileURL(ref);
  if (isImage(name || ref)) {
    const a = el('a');
    a.href = url;
    a.target = '_blank';
    a.rel = 'noopener';
    const img = el('img');
    img.src = url;
    img.alt = name || 'attached image';
    img.loading = 'lazy';
    a.append(img);
    body.append(a);
  } else {
    const a = el('a', 'file-link');
    a.append(icon('file'), document.createTextNode(name || ref));
    a.href = url;
    a.target = '_blank';
    a.rel = 'noopener';
    body.append(a);
  }
  return body;
}

function messageEl(m) {
  const d = el('div', `msg ${m.role}`);
  d.dataset.seq = String(m.seq);
  if (m.role === 'file') {
    d.append(fileBody(m.content, m.original_name));
  } else if (m.role === 'assistant') {
    const body = el('div', 'body');
    renderInto(body, m.content);
    const meta = rateButtons(m);
    meta.append(branchControls(m, d));
    d.append(body, meta);
  } else {
    const meta = el('div', 'meta');
    meta.append(branchControls(m, d));
    d.append(el('div', 'body', m.content), meta);
  }
  return d;
}

export function renderConversation() {
  const box = $('messages');
  box.replaceChildren(...S.msgs.map(messageEl));
  $('empty').hidden = S.msgs.length > 0 || S.turn !== null;
  if (S.turn && S.turn.session === S.open) attachTurn(S.turn);
}

// ----------------------------------------------------------- the turn
//
// A turn is the reply being streamed into the view: our own (sent from
// this tab) or resumed (another tab's, or ours from before a reload or a
// lost connection). Deltas carry an index; one at or below the last we
// have is a repeat and is dropped, so a resume never doubles text.
