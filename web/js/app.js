// app.js - chatd's chat page, its entry: wires the page's controls to the
// modules and boots (sign-in, then the connection).
//
//   wire.js          the WebSocket to chatd; message and error codes
//   render.js        Markdown made safe (marked, DOMPurify, highlight.js)
//   state.js         the page's one state (S) and shared helpers
//   session.js       sign-in and the connection
//   sidebar.js       the session list and search
//   conversation.js  the open session, paged
//   turn.js          a reply streaming, stopped, resumed; live events
//   branch.js        versions of a message: switch, edit, new answer, fork
//   organize.js      pin, archive, tags; which chats the list shows
//   sharing.js       share links; continuing a shared chat in a copy
//   importing.js     chats from ChatGPT, Claude, Open WebUI, another chatd
//   temporary.js     temporary chats: made, shown as such, kept
//   composer.js      sending, stopping, attaching a file
//
// Every reply from chatd is plain text or Markdown made safe by render.js;
// nothing from the server is ever assigned to innerHTML without it.

import { $, S, clearNotice, icon } from './state.js';
import { UUID, setExportLinks, showSignin, signin, signinWithToken, signout, start } from './session.js';
import { closeSidebar, loadSessions, onSearchInput } from './sidebar.js';
import { loadNewer, loadOlder, newChat } from './conversation.js';
import { attach, growInput, send, showAttachment, stop } from './composer.js';
import { setView } from './organize.js';
import { wireSharing } from './sharing.js';
import { wireImport } from './importing.js';
import { initTemporary } from './temporary.js';

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
  initTemporary();
  $('sign-out').addEventListener('click', signout);
  $('notice-close').addEventListener('click', clearNotice);
  $('search').addEventListener('input', onSearchInput);
  $('view').addEventListener('change', () => setView($('view').value, S.tag));
  $('tag-filter').addEventListener('click', () => setView(S.view, ''));
  wireSharing();
  wireImport();
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
