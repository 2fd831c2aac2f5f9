// composer.js - writing a message: sending it, stopping its reply,
// attaching and uploading a file.

import { CODE, ERR, NEW_SESSION } from './wire.js';
import { wantTemporary } from './temporary.js';
import { $, S, clearNotice, errorText, isImage, notice, req, setOpen, setPendingTurn, toBottom } from './state.js';
import { upsertSession } from './sidebar.js';
import { markActive, setTitle } from './conversation.js';
import { attachTurn, failTurn, newTurn, setBusy } from './turn.js';

export async function send(ev) {
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
  let session = S.open || NEW_SESSION;
  let fileRef = '', fileName = null, previewURL = null;
  if (S.attachment) {
    const a = S.attachment;
    $('send').disabled = true;
    try {
      const up = await upload(a.file, session, model);
      fileRef = up.fileName;
      fileName = a.file.name;
      previewURL = a.url;
      if (session === NEW_SESSION) {
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
    const data = {
      session_id: session, model_name: model, message, session_prompt: '',
      file_name: fileRef, stream: true,
    };
    if (session === NEW_SESSION && wantTemporary()) data.temporary = true;
    await req(CODE.CHAT, data);
  } catch (e) {
    failTurn(e);
  }
}

export async function stop() {
  const t = S.turn;
  if (!t || t.session === NEW_SESSION) return;
  try {
    await req(CODE.STOP, { session_id: t.session });
  } catch (e) {
    if (e.code !== ERR.NO_TURN) notice(`Could not stop: ${errorText(e)}`);
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

export function attach(file) {
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

export function showAttachment() {
  const a = S.attachment;
  $('attachment').hidden = !a;
  $('attachment-name').textContent = a ? a.file.name : '';
  $('attachment-preview').hidden = !(a && a.url);
  if (a && a.url) $('attachment-preview').src = a.url;
  else $('attachment-preview').removeAttribute('src');
}

// --------------------------------------------------- models and money

export function growInput() {
  const t = $('input');
  t.style.height = 'auto';
  t.style.height = `${Math.min(t.scrollHeight, window.innerHeight * 0.4)}px`;
}
