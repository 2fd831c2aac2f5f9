// importing.js - bringing chats in from ChatGPT, Claude, Open WebUI or
// another chatd (POST /import): the file is sent, chatd answers at once
// and works in the background; its import_progress events move a bar,
// and import_finished says what came in and what was left out, and why.

import { $, S, errorText, notice } from './state.js';
import { loadSessions } from './sidebar.js';

let running = null; // the import_id this tab started
// Imports already over: their events can come before the answer to the
// POST, which must then not show the bar again.
const over = new Set();

function showProgress(done, total) {
  const box = $('import-progress');
  box.hidden = false;
  const bar = $('import-bar');
  bar.max = total || 1;
  bar.value = done;
  $('import-text').textContent = total ? `Importing… ${done} of ${total}` : 'Importing…';
}

async function send(file) {
  const fd = new FormData();
  fd.append('user_id', S.user);
  fd.append('file', file, file.name);
  const headers = S.token ? { Authorization: `Bearer ${S.token}` } : {};
  showProgress(0, 0);
  try {
    const r = await fetch('/import', { method: 'POST', body: fd, headers });
    let body = null;
    try {
      body = await r.json();
    } catch (e) {
      // no JSON: the status says it
    }
    if (!r.ok) throw new Error(body && body.message ? body.message : `HTTP ${r.status}`);
    running = body.data.import_id;
    if (!over.has(running)) showProgress(0, body.data.total);
  } catch (e) {
    $('import-progress').hidden = true;
    notice(`Could not import: ${errorText(e)}`);
  }
}

export function wireImport() {
  $('import').addEventListener('click', () => $('import-file').click());
  $('import-file').addEventListener('change', () => {
    const f = $('import-file').files[0];
    $('import-file').value = '';
    if (f) send(f);
  });
}

// Type 15 events of an import (this tab's or another's).
export function onImportEvent(ev) {
  if (ev.kind === 'import_progress') {
    showProgress(ev.done, ev.total);
    return;
  }
  // import_finished
  over.add(ev.import_id);
  $('import-progress').hidden = true;
  const mine = ev.import_id === running;
  if (mine) running = null;
  loadSessions(true);
  const n = ev.sessions === 1 ? '1 chat' : `${ev.sessions} chats`;
  let text = ev.status === 'finished' ? `Imported ${n}.` : `The import stopped after ${n}.`;
  if (ev.skipped_count > 0) {
    const first = ev.skipped.slice(0, 3).map((s) => `“${s.title}”: ${s.reason}`).join('; ');
    text += ` Left out ${ev.skipped_count}: ${first}${ev.skipped_count > 3 ? '; …' : ''}.`;
  }
  notice(text);
}
