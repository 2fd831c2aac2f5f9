// share.js - the read-only page of a share link (GET /s/<id>): the
// snapshot chatd put into the page as a JSON data block, drawn with the
// chat page's renderer and sanitizer (render.js). Nothing is fetched and
// nothing is signed in; "Continue this chat" opens the chat page, which
// asks chatd for a copy (code 20 with the link's id).

import { renderInto } from './render.js';

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function fileEl(m) {
  const body = el('div', 'body');
  const a = el('a', 'file-link');
  a.href = m.url;
  a.target = '_blank';
  a.rel = 'noopener';
  if (/^image\//.test(m.content_type || '')) {
    const img = el('img');
    img.src = m.url;
    img.alt = m.original_name || 'attached image';
    img.loading = 'lazy';
    a.append(img);
  } else {
    a.textContent = m.original_name || 'attached file';
  }
  body.append(a);
  return body;
}

function messageEl(m) {
  const d = el('div', `msg ${m.role}`);
  if (m.role === 'file') {
    d.append(fileEl(m));
  } else if (m.role === 'assistant') {
    const body = el('div', 'body');
    renderInto(body, m.content);
    d.append(body);
  } else {
    d.append(el('div', 'body', m.content));
  }
  return d;
}

function show() {
  const snap = JSON.parse(document.getElementById('snapshot').textContent);
  document.getElementById('shared-title').textContent = snap.title;
  document.title = `${snap.title} · shared chat`;
  const at = document.getElementById('shared-at');
  at.dateTime = snap.shared_at;
  at.textContent = new Date(snap.shared_at).toLocaleString();
  const id = location.pathname.split('/')[2];
  document.getElementById('continue').href = `/?fork=${encodeURIComponent(id)}`;
  document.getElementById('messages').replaceChildren(...snap.messages.map(messageEl));
  document.body.dataset.ready = '1';
}

// The libraries are classic deferred scripts: they have run before a
// module script runs, so marked and DOMPurify are there.
show();
