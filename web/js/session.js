// session.js - signing in and the connection: who the user is, the
// WebSocket's state, what is loaded once connected and again after a
// reconnect (models, balance, spending, export links).

import { CODE, ERR, NEW_SESSION, Wire } from './wire.js';
import { $, S, authQuery, el, errorText, money, notice, req, showMoney } from './state.js';
import { loadSessions } from './sidebar.js';
import { forkFromLink } from './sharing.js';
import { loadNewer, openSession, renderConversation } from './conversation.js';
import { dropPending, endTurn, onPush, resume } from './turn.js';

function decodeSub(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
    return typeof claims.sub === 'string' ? claims.sub : '';
  } catch (e) {
    return '';
  }
}

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function showSignin(message) {
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

export async function signinWithToken(token) {
  const sub = decodeSub(token);
  if (!sub) return showSignin('That is not a token chatd can read.');
  if ((await tokenAccepted(token)) === false) {
    sessionStorage.removeItem('chatd.token');
    return showSignin('chatd did not accept that token: it may have expired. Sign in again.');
  }
  sessionStorage.setItem('chatd.token', token);
  return start(sub, token);
}

export function signin(ev) {
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

export function signout() {
  if (S.wire) S.wire.stop();
  S.wire = null;
  sessionStorage.removeItem('chatd.token');
  sessionStorage.removeItem('chatd.open');
  sessionStorage.removeItem('chatd.pending');
  localStorage.removeItem('chatd.user');
  S.config.default_user = '';
  showSignin('');
}

export function start(user, token) {
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
    if (e.code === ERR.NO_USER || e.code === ERR.FORBIDDEN_USER || e.code === ERR.INVALID_FIELD) {
      signout();
      showSignin(e.code === ERR.NO_USER ? 'There is no such user.' : errorText(e));
      return;
    }
    notice(errorText(e));
  }
  subscribe();
  S.modelsLoaded = loadModels();
  refreshMoney();
  await loadSessions(true);
  if (await forkFromLink()) return; // a shared chat, continued here
  const open = sessionStorage.getItem('chatd.open');
  if (open) await openSession(open, {});
  else renderConversation();
}

async function reconnected() {
  subscribe();
  refreshMoney();
  loadSessions(true);
  if (S.turn && S.turn.session === NEW_SESSION) {
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

export async function loadModels() {
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

export async function refreshMoney() {
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

export async function refreshSpent() {
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

export function setExportLinks() {
  for (const a of $('export').querySelectorAll('a')) {
    const f = a.dataset.format;
    a.href = a.dataset.all
      ? `/export?format=${f}&${authQuery()}`
      : `/sessions/${encodeURIComponent(S.open || '')}/export?format=${f}&${authQuery()}`;
  }
}

// ------------------------------------------------------------- wiring
