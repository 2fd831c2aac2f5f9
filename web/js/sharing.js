// sharing.js - share links of the open chat (codes 21, 22, 23): a dialog
// that makes one (expiry, view limit), copies it, lists the chat's links
// and revokes them; and continuing a shared chat in a copy of one's own
// (code 20 with the link's id), which the shared page links to as
// /?fork=<id>.

import { CODE } from './wire.js';
import { $, S, el, errorText, notice, req } from './state.js';
import { openSession } from './conversation.js';
import { upsertSession } from './sidebar.js';

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : 'never';
}

async function listLinks() {
  const ul = $('share-list');
  let r;
  try {
    r = await req(CODE.SHARES, {});
  } catch (e) {
    ul.replaceChildren(el('li', 'none', `Could not load the links: ${errorText(e)}`));
    return;
  }
  const mine = r.shares.filter((s) => s.session_id === S.open);
  ul.replaceChildren();
  for (const s of mine) {
    const li = el('li');
    li.dataset.id = s.share_id;
    const views = s.max_views ? `${s.views}/${s.max_views} views` : `${s.views} views`;
    const state = s.active ? `expires ${when(s.expires_at)}` : 'no longer open';
    li.append(el('span', 'share-what', `${views} · ${state}`));
    const revoke = el('button', 'danger revoke', 'Revoke');
    revoke.type = 'button';
    revoke.addEventListener('click', async () => {
      try {
        await req(CODE.UNSHARE, { share_id: s.share_id });
      } catch (e) {
        notice(`Could not revoke: ${errorText(e)}`);
      }
      listLinks();
    });
    li.append(revoke);
    ul.append(li);
  }
  if (mine.length === 0) ul.append(el('li', 'none', 'No links to this chat yet'));
}

export function openShareDialog() {
  if (!S.open) return;
  $('share-url').value = '';
  $('share-made').hidden = true;
  $('share-error').hidden = true;
  $('share-dialog').showModal();
  listLinks();
}

async function makeLink(ev) {
  ev.preventDefault();
  const data = { session_id: S.open };
  const seconds = Number($('share-expiry').value);
  if (seconds > 0) data.expires_in_seconds = seconds;
  const views = $('share-views').value.trim();
  if (views !== '') data.max_views = Number(views);
  try {
    const r = await req(CODE.SHARE, data);
    $('share-url').value = r.url;
    $('share-made').hidden = false;
    $('share-error').hidden = true;
    $('share-url').select();
  } catch (e) {
    $('share-error').textContent = errorText(e);
    $('share-error').hidden = false;
  }
  listLinks();
}

async function copyLink() {
  const url = $('share-url').value;
  try {
    await navigator.clipboard.writeText(url);
  } catch (e) {
    $('share-url').select();
    document.execCommand('copy');
  }
  $('share-copy').textContent = 'Copied';
  setTimeout(() => { $('share-copy').textContent = 'Copy'; }, 1500);
}

export function wireSharing() {
  $('share').addEventListener('click', openShareDialog);
  $('share-form').addEventListener('submit', makeLink);
  $('share-copy').addEventListener('click', copyLink);
  $('share-close').addEventListener('click', () => $('share-dialog').close());
}

// /?fork=<link>: the shared chat, copied into a chat of this user's.
export async function forkFromLink() {
  const url = new URL(location.href);
  const id = url.searchParams.get('fork');
  if (!id) return false;
  url.searchParams.delete('fork');
  history.replaceState(null, '', url.pathname + url.search + url.hash);
  try {
    const r = await req(CODE.FORK, { share_id: id });
    upsertSession(r.session_id, r.session_name, true);
    await openSession(r.session_id, {});
    return true;
  } catch (e) {
    notice(`Could not copy the shared chat: ${errorText(e)}`);
    return false;
  }
}
