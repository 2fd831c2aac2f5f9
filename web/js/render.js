// render.js - an assistant's Markdown as safe HTML: marked parses,
// DOMPurify removes anything that could run (the Content-Security-Policy
// is the second wall), highlight.js colours code blocks. All three are
// Debian's packages, loaded as classic scripts before this module.

/* global marked, DOMPurify, hljs */

let hooked = false;

function escapeHTML(s) {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

function setup() {
  if (hooked) return;
  hooked = true;
  // Raw HTML in a reply is shown as the text it is: a model that writes
  // <img onerror=...> or <script> gets those characters on screen, never
  // elements. (DOMPurify below would remove what runs anyway.)
  marked.use({ renderer: { html: (html) => escapeHTML(html) } });
  // Links from a reply open outside the page and learn nothing about it.
  DOMPurify.addHook('afterSanitizeAttributes', (node) => {
    if (node.tagName === 'A' && node.hasAttribute('href')) {
      node.setAttribute('target', '_blank');
      node.setAttribute('rel', 'noopener noreferrer');
    }
  });
}

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select'],
  FORBID_ATTR: ['style'],
};

export function markdownHTML(text) {
  setup();
  const html = marked.parse(text, { gfm: true, breaks: true, headerIds: false, mangle: false });
  return DOMPurify.sanitize(html, PURIFY);
}

// Fills el with text rendered, then highlights and adds copy buttons.
export function renderInto(el, text) {
  el.innerHTML = markdownHTML(text);
  for (const code of el.querySelectorAll('pre > code')) {
    try {
      // highlightElement since highlight.js 10.7, where highlightBlock is
      // deprecated; Debian bookworm's 9.18 has only highlightBlock.
      if (hljs.highlightElement) hljs.highlightElement(code);
      else hljs.highlightBlock(code);
    } catch (e) {
      // an unknown language stays plain
    }
    const pre = code.parentElement;
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'copy';
    b.textContent = 'Copy';
    b.setAttribute('aria-label', 'Copy code');
    b.addEventListener('click', () => copyText(code.textContent, b));
    pre.appendChild(b);
  }
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {
    const t = document.createElement('textarea');
    t.value = text;
    document.body.appendChild(t);
    t.select();
    document.execCommand('copy');
    t.remove();
  }
  button.textContent = 'Copied';
  setTimeout(() => { button.textContent = 'Copy'; }, 1500);
}
