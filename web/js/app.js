// app.js - chatd's chat page: sign-in, the session list, the conversation,
// streaming and stopping replies, live updates from other tabs and
// instances, resuming a reply after a lost connection or a reload.
//
// State lives in one object (S); the DOM is changed only by the render
// functions below it. Every reply from chatd is plain text or Markdown made
// safe by render.js; nothing from the server is ever assigned to innerHTML
// without it.

import { Wire, CODE } from './wire.js';
import { renderInto } from './render.js';

const $ = (id) => document.getElementById(id);
const PAGE = 50;          // messages per history page (code 9)
const SESSION_PAGE = 30;  // sessions per list page (code 1)
const NEAR_BOTTOM = 80;   // px: closer than this and streaming keeps us at the bottom

const S = {
  config: null,
  user: '',            // user id
  token: '',           // AUTH_MODE=jwt
  wire: null,
  sessions: [],        // [{session_id, session_name}] newest first
  sessionsNext: null,  // code 1's next_before, null at the end
  sessionsLoading: false,
  sessionsDone: false,
  open: null,          // the open session id, null for a new chat
  openName: '',
  msgs: [],            // the open session's loaded messages, ascending seq
  nextBefore: null,    // older page cursor
  hasOlder: false,
  hasNewer: false,     // after a jump into the middle
  loadingOlder: false,
  loadingNewer: false,
  newerAgain: false,   // asked for newer messages while a load ran
  turn: null,          // the reply streaming into the open view (ours or resumed)
  models: [],
  modelsLoaded: null,  // the promise of the model list's load
  balance: null,       // the last balance heard (null: unknown)
  spent: null,         // this month's spending, likewise
  attachment: null,    // {file, url}
  searchSeq: 0,
};

// ------------------------------------------------------------- helpers

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// Icons are drawn, not emoji: a system without an emoji font would show
// empty boxes.
const ICONS = {
  attach: 'M21 12.5l-8.5 8.5a5 5 0 0 1-7-7L14 5.5a3.5 3.5 0 0 1 5 5L10.5 19a2 2 0 0 1-3-3L15 8.5',
  up: 'M7 10v11H3V10h4zm0 0l4-8a2.5 2.5 0 0 1 3 3l-1 4h6a2 2 0 0 1 2 2.3l-1.4 7A2 2 0 0 1 17.6 21H7',
  down: 'M17 14V3h4v11h-4zm0 0l-4 8a2.5 2.5 0 0 1-3-3l1-4H5a2 2 0 0 1-2-2.3l1.4-7A2 2 0 0 1 6.4 3H17',
  rename: 'M4 20h4L19 9l-4-4L4 16v4zM13.5 6.5l4 4',
  trash: 'M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13',
  menu: 'M4 6h16M4 12h16M4 18h16',
  file: 'M14 3H6v18h12V7l-4-4zM14 3v4h4',
};

function icon(name) {
  const NS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'svg-icon');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(NS, 'path');
  path.setAttribute('d', ICONS[name]);
  svg.append(path);
  return svg;
}

function iconButton(name, cls, label) {
  const b = el('button', `icon ${cls}`);
  b.type = 'button';
  b.setAttribute('aria-label', label);
  b.title = label;
  b.append(icon(name));
  return b;
}

// The open chat is remembered for a reload (null: a new chat).
function setOpen(id) {
  S.open = id;
  if (id) sessionStorage.setItem('chatd.open', id);
  else sessionStorage.removeItem('chatd.open');
}

// What this tab sent in the turn now running, so that a reload mid-reply
// can show the question above the resumed answer.
function pendingTurn() {
  return JSON.parse(sessionStorage.getItem('chatd.pending') || 'null');
}

function setPendingTurn(session, text) {
  sessionStorage.setItem('chatd.pending', JSON.stringify({ session, text }));
}

function notice(text) {
  $('notice-text').textContent = text;
  $('notice').hidden = false;
}

function clearNotice() {
  $('notice').hidden = true;
}

function errorText(e) {
  if (!e) return 'Something went wrong';
  return e.detail ? `${e.message} (${e.detail})` : e.message;
}

function req(type, data) {
  return S.wire.request(type, Object.assign({ user_id: S.user }, data));
}

// Amounts shown side by side (the balance, this month's spending) share one
// precision: cents, or 4 decimals as soon as one of them has more than
// cents, so that "$10.00 · $0.0013 spent" never hides the spending from
// the balance.
function moneyDigits(...vs) {
  const fine = vs.some((v) => {
    const n = Number(v);
    return Number.isFinite(n) && Math.abs(n * 100 - Math.round(n * 100)) > 1e-6;
  });
  return fine ? 4 : 2;
}

function money(v, digits) {
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  return '$' + n.toFixed(digits === undefined ? moneyDigits(n) : digits);
}

// Both figures again, from the last values heard.
function showMoney() {
  const d = moneyDigits(S.balance, S.spent);
  $('balance').textContent = S.balance === null ? '' : money(S.balance, d);
  $('spent').textContent = S.spent === null ? '' : `· ${money(S.spent, d)} spent this month`;
}

function authQuery() {
  return S.token ? `token=${encodeURIComponent(S.token)}` : `user_id=${encodeURIComponent(S.user)}`;
}

// A file entry's content is its stored reference; the page links it on
// its own origin (PUBLIC_BASE_URL may name another).
function fileURL(ref) {
  return '/uploads/' + ref;
}

function isImage(name) {
  return /\.(png|jpe?g|gif|webp)(\?|$)/i.test(name);
}

function nearBottom() {
  const s = $('scroller');
  return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM;
}

function toBottom() {
  const s = $('scroller');
  s.scrollTop = s.scrollHeight;
}

// -------------------------------------------------------------- sign-in

function decodeSub(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
    return typeof claims.sub === 'string' ? claims.sub : '';
  } catch (e) {
    return '';
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function showSignin(message) {
  $('app').hidden = true;
  $('signin').hidden = false;
  const jwt = S.config.auth_mode === 'jwt';
  $('signin-user').hidden = jwt;
  $('signin-token').hidden = !jwt;
  $('signin-user-id').required = !jwt;
  $('signin-token-text').required = jwt;
  $('signin-user-id').value = localStorage.getItem('chatd.user') || S.config.default_user || '';
  $('signin-error').textContent = message || '';
  $('signin-error').hidden = !message;
  (jwt ? $('signin-token-text') : $('signin-user-id')).focus();
}

// With AUTH_MODE=jwt: whether chatd accepts the token now (true), does not
// (false), or could not be asked (null).
async function tokenAccepted(token) {
  try {
    const r = await fetch('/client-config', { headers: { Authorization: `Bearer ${token}` } });
    if (r.status === 401) return false;
    return r.ok ? true : null;
  } catch (e) {
    return null;
  }
}

async function signinWithToken(token) {
  const sub = decodeSub(token);
  if (!sub) return showSignin('That is not a token chatd can read.');
  if ((await tokenAccepted(token)) === false) {
    sessionStorage.removeItem('chatd.token');
    return showSignin('chatd did not accept that token: it may have expired. Sign in again.');
  }
  sessionStorage.setItem('chatd.token', token);
  return start(sub, token);
}

function signin(ev) {
  ev.preventDefault();
  if (S.config.auth_mode === 'jwt') {
    signinWithToken($('signin-token-text').value.trim());
  } else {
    const user = $('signin-user-id').value.trim();
    if (!UUID.test(user)) return showSignin('A user id is a UUID, like bdff475a-a7f7-4590-9595-15fd8e6c7d0c.');
    localStorage.setItem('chatd.user', user);
    start(user, '');
  }
}

function signout() {
  if (S.wire) S.wire.stop();
  S.wire = null;
  sessionStorage.removeItem('chatd.token');
  sessionStorage.removeItem('chatd.open');
  sessionStorage.removeItem('chatd.pending');
  localStorage.removeItem('chatd.user');
  S.config.default_user = '';
  showSignin('');
}

function start(user, token) {
  S.user = user;
  S.token = token;
  $('signin').hidden = true;
  $('app').hidden = false;
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const q = token ? `?token=${encodeURIComponent(token)}` : '';
  S.wire = new Wire(`${proto}//${location.host}/ws${q}`, {
    onPush,
    onState: showState,
    onOpen: (again) => (again ? reconnected() : loaded()),
  });
  S.wire.start();
  $('input').focus();
}

// ------------------------------------------------------ connection state

let stateTimer = null;

function showState(state, until) {
  const s = $('status');
  clearInterval(stateTimer);
  if (state === 'open') {
    s.hidden = true;
    $('send').disabled = S.turn !== null;
    return;
  }
  s.hidden = false;
  if (state === 'connecting') s.textContent = 'Connecting…';
  else if (state === 'reconnecting') s.textContent = 'Reconnecting…';
  else if (state === 'waiting') {
    // Reconnecting keeps failing: an expired token is the likely reason
    // a browser cannot be told, so ask.
    if (S.token && S.wire && S.wire.attempt >= 2) {
      tokenAccepted(S.token).then((ok) => {
        if (ok === false) {
          signout();
          showSignin('Your session has expired. Sign in again.');
        }
      });
    }
    const tick = () => {
      const secs = Math.max(1, Math.ceil((until - Date.now()) / 1000));
      s.textContent = `Connection lost. Reconnecting in ${secs} s…`;
    };
    tick();
    stateTimer = setInterval(tick, 500);
  }
}

// The first open: who we are, our chats, models, balance; then the chat
// we had open before a reload, resuming its reply if one is running.
async function loaded() {
  try {
    const u = await req(CODE.USER, {});
    $('username').textContent = u.username;
  } catch (e) {
    if (e.code === 3 || e.code === 26 || e.code === 17) {
      signout();
      showSignin(e.code === 3 ? 'There is no such user.' : errorText(e));
      return;
    }
    notice(errorText(e));
  }
  subscribe();
  S.modelsLoaded = loadModels();
  refreshMoney();
  await loadSessions(true);
  const open = sessionStorage.getItem('chatd.open');
  if (open) await openSession(open, {});
  else renderConversation();
}

async function reconnected() {
  subscribe();
  refreshMoney();
  loadSessions(true);
  if (S.turn && S.turn.session === 'NEW') {
    // Lost before its first frame named the new chat: whatever it stored
    // shows in the list.
    endTurn();
    dropPending();
    notice('The connection was lost as the chat began. Check the chat list before sending again.');
  } else if (S.turn) {
    // The reply may still be running on some chatd: take it up from the
    // last delta we have.
    resume(S.turn.session, S.turn.index);
  } else if (S.open) {
    await loadNewer(true);
  }
}

async function subscribe() {
  try {
    await req(CODE.SUBSCRIBE, {});
  } catch (e) {
    // Live updates are a convenience; chatting goes on without them.
  }
}

// ------------------------------------------------------------- sidebar

function sessionItem(s) {
  const li = el('li');
  li.dataset.id = s.session_id;
  if (s.session_id === S.open) li.classList.add('active');
  const open = el('button', 'open', s.session_name);
  open.type = 'button';
  open.title = s.session_name;
  open.addEventListener('click', () => {
    closeSidebar();
    openSession(s.session_id, {});
  });
  const actions = el('span', 'actions');
  const rename = iconButton('rename', 'rename', `Rename ${s.session_name}`);
  rename.addEventListener('click', () => startRename(li, s));
  const del = iconButton('trash', 'delete', `Delete ${s.session_name}`);
  del.addEventListener('click', () => confirmDelete(li, s));
  actions.append(rename, del);
  li.append(open, actions);
  return li;
}

function renderSessions() {
  const ul = $('sessions');
  ul.replaceChildren(...S.sessions.map(sessionItem));
}

async function loadSessions(reset) {
  if (S.sessionsLoading || (!reset && S.sessionsDone)) return;
  S.sessionsLoading = true;
  try {
    const data = { limit: SESSION_PAGE };
    if (!reset && S.sessionsNext !== null) data.before = S.sessionsNext;
    const r = await req(CODE.SESSIONS, data);
    const page = r.session_info || [];
    if (reset) S.sessions = [];
    const have = new Set(S.sessions.map((s) => s.session_id));
    for (const s of page) if (!have.has(s.session_id)) S.sessions.push(s);
    S.sessionsNext = r.next_before ?? null;
    S.sessionsDone = !r.has_more;
    renderSessions();
  } catch (e) {
    notice(`Could not load your chats: ${errorText(e)}`);
  } finally {
    S.sessionsLoading = false;
  }
}

function upsertSession(id, name, top) {
  const s = S.sessions.find((x) => x.session_id === id);
  if (s) s.session_name = name;
  else if (top) S.sessions.unshift({ session_id: id, session_name: name });
  renderSessions();
  if (id === S.open) setTitle(name);
}

function dropSession(id) {
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
  input.focus();
  input.select();
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
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
  no.focus();
  no.addEventListener('click', renderSessions);
  box.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') renderSessions(); });
  yes.addEventListener('click', async () => {
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

function onSearchInput() {
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
    b.addEventListener('click', () => {
      closeSidebar();
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

function setTitle(name) {
  S.openName = name;
  $('title').textContent = name || 'New chat';
  document.title = name ? `${name} · chatd` : 'chatd';
  $('export').hidden = S.open === null;
  setExportLinks();
}

function markActive() {
  for (const li of $('sessions').children) li.classList.toggle('active', li.dataset.id === S.open);
}

function newChat() {
  setOpen(null);
  S.msgs = [];
  S.hasOlder = S.hasNewer = false;
  S.nextBefore = null;
  if (S.turn && !S.turn.own) S.turn = null;
  setTitle('');
  markActive();
  renderConversation();
  $('input').focus();
}

// Opens a session: its newest page, or with at, the page around that
// message (a search hit), which can then be scrolled in both directions.
async function openSession(id, { at }) {
  const data = { session_id: id, limit: PAGE };
  if (at !== undefined && at !== null) data.before = at + Math.floor(PAGE / 2);
  let r;
  try {
    r = await req(CODE.HISTORY, data);
  } catch (e) {
    const pending = pendingTurn();
    if (e.code === 18 && pending && pending.session === id && !S.turn) {
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
    if (e.code === 18) {
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

async function loadOlder() {
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
    if (e.code !== -1) notice(`Could not load older messages: ${errorText(e)}`);
  } finally {
    S.loadingOlder = false;
  }
  recheck();
}

// Messages after the newest we have: after a jump, when scrolled down;
// after a reply, to learn the stored messages' seqs; after a reconnect.
async function loadNewer(all) {
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
      if (!S.hasNewer && fresh.length === r.messages.length && r.has_more && last >= 0) {
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
    if (e.code !== -1) notice(`Could not load new messages: ${errorText(e)}`);
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

function fileBody(ref, name) {
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
    d.append(body, rateButtons(m));
  } else {
    d.append(el('div', 'body', m.content));
  }
  return d;
}

function renderConversation() {
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

function newTurn(session, own, userText, fileRef, fileName, previewURL) {
  return { session, own, index: -1, text: '', userText, fileRef, fileName, previewURL, nodes: [], body: null, frame: 0 };
}

function attachTurn(t) {
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

function dropPending() {
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

function setBusy(busy) {
  $('send').hidden = busy;
  $('stop').hidden = !busy;
  $('send').disabled = busy || !(S.wire && S.wire.open);
}

function endTurn() {
  const t = S.turn;
  S.turn = null;
  if (t && t.frame) cancelAnimationFrame(t.frame);
  sessionStorage.removeItem('chatd.pending');
  setBusy(false);
  return t;
}

async function resume(session, after) {
  const data = { session_id: session };
  if (after >= 0) data.after = after;
  let r;
  try {
    r = await req(CODE.RESUME, data);
  } catch (e) {
    // A lost connection is not the turn's end: the reconnect resumes it.
    if (e.code !== -1 && S.turn && S.turn.session === session) failTurn(e);
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

function onDelta(d) {
  const t = S.turn;
  if (!t || (t.session !== d.session_id && t.session !== 'NEW')) return;
  if (t.session === 'NEW') adoptSession(t, d.session_id);
  if (typeof d.index === 'number') {
    if (d.index <= t.index) return; // a repeat, after a resume
    t.index = d.index;
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
  if (t.session === 'NEW') adoptSession(t, d.session_id);
  if (t.session !== d.session_id) return;
  if (d.session_name) upsertSession(d.session_id, d.session_name, true);
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

function failTurn(e) {
  const t = endTurn();
  if (t && t.own && t.userText && $('input').value === '') $('input').value = t.userText;
  if (t && t.nodes.length) {
    const last = t.nodes[t.nodes.length - 1];
    last.classList.remove('streaming');
    for (const n of t.nodes) n.remove();
  }
  if (e.code === 29) notice('The reply was interrupted before it was saved. Send it again.');
  else notice(errorText(e));
}

function onPush(f) {
  if (f.error !== undefined) {
    if (f.type === CODE.CHAT || f.type === CODE.RESUME) {
      if (S.turn) failTurn({ message: f.error, code: f.code, detail: f.detail });
      else if (f.type === CODE.CHAT) notice(f.error);
    } else {
      notice(f.detail ? `${f.error} (${f.detail})` : f.error);
    }
    return;
  }
  if (f.type === CODE.DELTA) onDelta(f.data);
  else if (f.type === CODE.CHAT) onChatReply(f.data);
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
  default:
    break;
  }
}

// ------------------------------------------------------------- sending

async function send(ev) {
  if (ev) ev.preventDefault();
  const text = $('input').value;
  if (S.turn || !S.wire || !S.wire.open) return;
  if (text.trim() === '') {
    if (S.attachment) notice('Add a message to send with the file.');
    return;
  }
  // Enter may come before the model list has arrived (a fast typist,
  // a slow server): wait for it rather than refuse.
  if (!$('model').value && S.modelsLoaded) await S.modelsLoaded;
  if (S.turn || !S.wire || !S.wire.open) return;
  const model = $('model').value;
  if (!model) {
    notice('You have no model to chat with. Ask an administrator for access.');
    return;
  }
  clearNotice();
  let session = S.open || 'NEW';
  let fileRef = '', fileName = null, previewURL = null;
  if (S.attachment) {
    const a = S.attachment;
    $('send').disabled = true;
    try {
      const up = await upload(a.file, session, model);
      fileRef = up.fileName;
      fileName = a.file.name;
      previewURL = a.url;
      if (session === 'NEW') {
        session = up.sessionId;
        setOpen(session);
        upsertSession(session, 'New Chat', true);
        setTitle('New Chat');
        markActive();
      }
      S.attachment = null;
      showAttachment();
    } catch (e) {
      $('send').disabled = false;
      notice(`Upload failed: ${e.message}`);
      return;
    }
  }
  const message = text;
  $('input').value = '';
  growInput();
  S.turn = newTurn(session, true, message, fileRef || null, fileName, previewURL);
  setPendingTurn(session, message);
  if (S.open === null || session === S.open) attachTurn(S.turn);
  setBusy(true);
  toBottom();
  try {
    await req(CODE.CHAT, {
      session_id: session, model_name: model, message, session_prompt: '',
      file_name: fileRef, stream: true,
    });
  } catch (e) {
    failTurn(e);
  }
}

async function stop() {
  const t = S.turn;
  if (!t || t.session === 'NEW') return;
  try {
    await req(CODE.STOP, { session_id: t.session });
  } catch (e) {
    if (e.code !== 23) notice(`Could not stop: ${errorText(e)}`);
  }
}

async function upload(file, session, model) {
  const fd = new FormData();
  fd.append('user_id', S.user);
  fd.append('session_id', session);
  fd.append('model_name', model);
  fd.append('session_prompt', '');
  fd.append('file', file, file.name);
  const headers = S.token ? { Authorization: `Bearer ${S.token}` } : {};
  const r = await fetch('/upload', { method: 'POST', body: fd, headers });
  let body = null;
  try {
    body = await r.json();
  } catch (e) {
    // no JSON: the status says it
  }
  if (!r.ok) throw new Error(body && body.message ? body.message : `HTTP ${r.status}`);
  return body.data;
}

function attach(file) {
  if (!file) return;
  const c = S.config;
  const ext = (file.name.split('.').pop() || '').toLowerCase();
  if (c.upload_types && c.upload_types.length && !c.upload_types.includes(ext)) {
    notice(`Files of type .${ext} cannot be attached. Allowed: ${c.upload_types.join(', ')}.`);
    return;
  }
  if (file.size > c.max_file_bytes) {
    notice(`That file is larger than ${Math.round(c.max_file_bytes / 1048576)} MB.`);
    return;
  }
  const a = { file, url: null };
  S.attachment = a;
  showAttachment();
  $('input').focus();
  if (isImage(file.name)) {
    // A data: URL, not a blob: one: the page's policy allows images from
    // itself and data: only.
    const r = new FileReader();
    r.onload = () => {
      a.url = r.result;
      if (S.attachment === a) showAttachment();
    };
    r.readAsDataURL(file);
  }
}

function showAttachment() {
  const a = S.attachment;
  $('attachment').hidden = !a;
  $('attachment-name').textContent = a ? a.file.name : '';
  $('attachment-preview').hidden = !(a && a.url);
  if (a && a.url) $('attachment-preview').src = a.url;
  else $('attachment-preview').removeAttribute('src');
}

// --------------------------------------------------- models and money

async function loadModels() {
  try {
    const r = await req(CODE.MODELS, { mine: true });
    S.models = r.models || [];
    const sel = $('model');
    const want = sel.value || localStorage.getItem('chatd.model');
    sel.replaceChildren(...S.models.map((m) => el('option', '', m)));
    if (want && S.models.includes(want)) sel.value = want;
  } catch (e) {
    notice(`Could not load models: ${errorText(e)}`);
  }
}

async function refreshMoney() {
  try {
    const r = await req(CODE.BALANCE, {});
    S.balance = r.balance;
  } catch (e) {
    // shown as unknown; the next turn tries again
    S.balance = null;
  }
  showMoney();
  refreshSpent();
}

async function refreshSpent() {
  const now = new Date();
  const since = `${now.getUTCFullYear()}-${String(now.getUTCMonth() + 1).padStart(2, '0')}-01`;
  try {
    const r = await req(CODE.USAGE, { since });
    S.spent = r.spent;
    $('spent').title = r.by_model.map((m) => `${m.model}: ${money(m.spent)} (${m.turns} turns)`).join('\n');
  } catch (e) {
    S.spent = null;
  }
  showMoney();
}

function setExportLinks() {
  for (const a of $('export').querySelectorAll('a')) {
    const f = a.dataset.format;
    a.href = a.dataset.all
      ? `/export?format=${f}&${authQuery()}`
      : `/sessions/${encodeURIComponent(S.open || '')}/export?format=${f}&${authQuery()}`;
  }
}

// ------------------------------------------------------------- wiring

function growInput() {
  const t = $('input');
  t.style.height = 'auto';
  t.style.height = `${Math.min(t.scrollHeight, window.innerHeight * 0.4)}px`;
}

function closeSidebar() {
  $('sidebar').classList.remove('open');
  $('scrim').hidden = true;
  $('menu').setAttribute('aria-expanded', 'false');
}

function watch(sentinel, root, fn) {
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) fn();
  }, { root, rootMargin: '200px' }).observe(sentinel);
}

function wire() {
  for (const b of document.querySelectorAll('[data-icon]')) b.append(icon(b.dataset.icon));
  $('signin-form').addEventListener('submit', signin);
  $('composer').addEventListener('submit', send);
  $('stop').addEventListener('click', stop);
  $('new-chat').addEventListener('click', () => { closeSidebar(); newChat(); });
  $('sign-out').addEventListener('click', signout);
  $('notice-close').addEventListener('click', clearNotice);
  $('search').addEventListener('input', onSearchInput);
  $('model').addEventListener('change', () => localStorage.setItem('chatd.model', $('model').value));
  $('export').addEventListener('toggle', setExportLinks);
  $('attach').addEventListener('click', () => $('file').click());
  $('file').addEventListener('change', () => { attach($('file').files[0]); $('file').value = ''; });
  $('attachment-remove').addEventListener('click', () => {
    S.attachment = null;
    showAttachment();
  });
  $('menu').addEventListener('click', () => {
    const open = !$('sidebar').classList.contains('open');
    $('sidebar').classList.toggle('open', open);
    $('scrim').hidden = !open;
    $('menu').setAttribute('aria-expanded', String(open));
  });
  $('scrim').addEventListener('click', closeSidebar);
  const input = $('input');
  input.addEventListener('input', growInput);
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      send();
    }
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && S.turn) {
      ev.preventDefault();
      stop();
    }
  });
  // Drag and drop anywhere on the conversation.
  const chat = document.querySelector('.chat');
  let depth = 0;
  chat.addEventListener('dragenter', (ev) => { ev.preventDefault(); depth++; $('drop').hidden = false; });
  chat.addEventListener('dragleave', () => { if (--depth <= 0) { depth = 0; $('drop').hidden = true; } });
  chat.addEventListener('dragover', (ev) => ev.preventDefault());
  chat.addEventListener('drop', (ev) => {
    ev.preventDefault();
    depth = 0;
    $('drop').hidden = true;
    if (ev.dataTransfer.files.length) attach(ev.dataTransfer.files[0]);
  });
  watch($('older'), $('scroller'), loadOlder);
  watch($('newer'), $('scroller'), () => { if (S.hasNewer) loadNewer(false); });
  watch($('sessions-more'), $('side-scroll'), () => { if (S.wire && S.wire.open && $('results').hidden) loadSessions(false); });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && S.wire) S.wire.nudge();
  });
}

async function boot() {
  wire();
  try {
    const r = await fetch('/client-config');
    S.config = await r.json();
  } catch (e) {
    $('status').hidden = false;
    $('status').textContent = 'chatd is not answering. Reload to try again.';
    return;
  }
  if (S.config.auth_mode === 'jwt') {
    // A link with ?token= signs in; the token then leaves the address bar.
    const url = new URL(location.href);
    const fromURL = url.searchParams.get('token');
    if (fromURL) {
      sessionStorage.setItem('chatd.token', fromURL);
      url.searchParams.delete('token');
      history.replaceState(null, '', url.pathname + url.search + url.hash);
    }
    const token = sessionStorage.getItem('chatd.token');
    if (token) return signinWithToken(token);
    return showSignin('');
  }
  const user = localStorage.getItem('chatd.user') || S.config.default_user;
  if (user && UUID.test(user)) return start(user, '');
  return showSignin('');
}

boot();
