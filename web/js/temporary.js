// temporary.js - temporary chats (code 3's temporary, code 25): a new chat
// may be made temporary before its first message; it is then never listed
// or searched, and chatd deletes it a day after its last message unless it
// is kept.

import { CODE } from './wire.js';
import { $, S, errorText, notice, req } from './state.js';
import { upsertSession } from './sidebar.js';

// The open chat is temporary (true), ordinary (false), or not yet sent
// (null: the toggle decides).
export function showTemporary(temporary) {
  S.openTemporary = temporary;
  $('temporary-toggle').hidden = temporary !== null;
  $('temporary-badge').hidden = temporary !== true;
  if (temporary === null) $('temporary').checked = false;
}

// For code 3 on a new chat: whether to ask for a temporary one.
export function wantTemporary() {
  return S.openTemporary === null && $('temporary').checked;
}

export function initTemporary() {
  showTemporary(null);
  $('keep').addEventListener('click', async () => {
    const id = S.open;
    if (!id) return;
    try {
      await req(CODE.KEEP, { session_id: id });
      if (id !== S.open) return;
      showTemporary(false);
      upsertSession(id, S.openName || 'New Chat', true);
    } catch (e) {
      notice(`Could not keep the chat: ${errorText(e)}`);
    }
  });
}
