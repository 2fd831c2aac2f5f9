// state.js - the page's one state (S) and the helpers every part of the page
// uses: DOM helpers, icons, notices, money, requests to chatd.

export const $ = (id) => document.getElementById(id);
export const PAGE = 50;          // messages per history page (code 9)
export const SESSION_PAGE = 30;  // sessions per list page (code 1)
const NEAR_BOTTOM = 80;   // px: closer than this and streaming keeps us at the bottom

export const S = {
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
  openTemporary: null, // the open chat is temporary (temporary.js)
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
  view: '',            // the list shown: '' (chats), 'pinned' or 'archived'
  tag: '',             // and only the sessions with this tag ('' for any)
};

// ------------------------------------------------------------- helpers

export function el(tag, cls, text) {
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
  regenerate: 'M20 12a8 8 0 1 1-2.3-5.7M20 4v5h-5',
  fork: 'M7 3v18M7 9c0 4 10 3 10 8v4M17 3v3',
  compare: 'M4 4h7v16H4zM13 4h7v16h-7z',
  pin: 'M9 3h6l-1 6 4 4H6l4-4-1-6zM12 13v8',
  archive: 'M3 4h18v4H3zM5 8v12h14V8M10 12h4',
  tag: 'M3 3h8l10 10-8 8L3 11V3zM7.5 7.5h.01',
  share: 'M4 12v8h16v-8M12 3v12M7 8l5-5 5 5',
};

export function icon(name) {
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

export function iconButton(name, cls, label) {
  const b = el('button', `icon ${cls}`);
  b.type = 'button';
  b.setAttribute('aria-label', label);
  b.title = label;
  b.append(icon(name));
  return b;
}

// The open chat is remembered for a reload (null: a new chat).
export function setOpen(id) {
  S.open = id;
  if (id) sessionStorage.setItem('chatd.open', id);
  else sessionStorage.removeItem('chatd.open');
}

// What this tab sent in the turn now running, so that a reload mid-reply
// can show the question above the resumed answer.
export function pendingTurn() {
  return JSON.parse(sessionStorage.getItem('chatd.pending') || 'null');
}

export function setPendingTurn(session, text) {
  sessionStorage.setItem('chatd.pending', JSON.stringify({ session, text }));
}

export function notice(text) {
  $('notice-text').textContent = text;
  $('notice').hidden = false;
}

export function clearNotice() {
  $('notice').hidden = true;
}

export function errorText(e) {
  if (!e) return 'Something went wrong';
  return e.detail ? `${e.message} (${e.detail})` : e.message;
}

export function req(type, data) {
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

export function money(v, digits) {
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  return '$' + n.toFixed(digits === undefined ? moneyDigits(n) : digits);
}

// Both figures again, from the last values heard.
export function showMoney() {
  const d = moneyDigits(S.balance, S.spent);
  $('balance').textContent = S.balance === null ? '' : money(S.balance, d);
  $('spent').textContent = S.spent === null ? '' : `· ${money(S.spent, d)} spent this month`;
}

export function authQuery() {
  return S.token ? `token=${encodeURIComponent(S.token)}` : `user_id=${encodeURIComponent(S.user)}`;
}

// A file entry's content is its stored reference; the page links it on
// its own origin (PUBLIC_BASE_URL may name another).
export function fileURL(ref) {
  return '/uploads/' + ref;
}

export function isImage(name) {
  return /\.(png|jpe?g|gif|webp)(\?|$)/i.test(name);
}

export function nearBottom() {
  const s = $('scroller');
  return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM;
}

export function toBottom() {
  const s = $('scroller');
  s.scrollTop = s.scrollHeight;
}

// -------------------------------------------------------------- sign-in
