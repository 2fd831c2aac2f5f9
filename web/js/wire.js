// wire.js - the page's one WebSocket to chatd: requests and their replies,
// frames that arrive on their own (deltas, final chat replies, events),
// and reconnecting with back-off.
//
// chatd answers a connection's requests in order, except chat turns (code
// 3), whose reply may come after later requests' replies. So each request
// of another code waits in a queue of its own type and takes the first
// reply or error of that type; code 3 replies, type 7 deltas, type 15
// events and anything a resumed turn sends are handed to onPush.

// The codes whose reply ends a turn: pushed, never waited for.
export function isTurn(type) {
  return type === CODE.CHAT || type === CODE.EDIT || type === CODE.REGENERATE;
}

export const CODE = {
  USER: 0, SESSIONS: 1, CHATS: 2, CHAT: 3, DELETE: 4, MODELS: 5, BALANCE: 6, DELTA: 7,
  STOP: 8, HISTORY: 9, RENAME: 10, SEARCH: 11, RATE: 12, USAGE: 13, SUBSCRIBE: 14,
  EVENT: 15, RESUME: 16, EDIT: 17, REGENERATE: 18, SWITCH: 19, FORK: 20,
  SHARE: 21, SHARES: 22, UNSHARE: 23, ORGANIZE: 24, KEEP: 25, BUDGET: 26,
};

// The error codes the page acts on, as the protocol table names them
// (README.md, "Error codes"); LOST is the page's own: no connection.
export const ERR = {
  LOST: -1,
  NO_USER: 3,
  INVALID_FIELD: 17,
  NO_SESSION: 18,
  NO_TURN: 23,
  FORBIDDEN_USER: 26,
  TURN_INTERRUPTED: 29,
  NO_SHARE: 31,
};

// The session_id of a chat turn that starts a new session (code 3).
export const NEW_SESSION = 'NEW';

export class WireError extends Error {
  constructor(frame) {
    super(frame.error);
    this.code = frame.code;
    this.type = frame.type;
    this.detail = frame.detail;
  }
}

export class Wire {
  // url: the WebSocket address; hooks: onPush(frame), onState(state, info),
  // onOpen(reconnected).
  constructor(url, hooks) {
    this.url = url;
    this.hooks = hooks;
    this.ws = null;
    this.waiting = new Map(); // type -> [{resolve, reject}]
    this.attempt = 0;
    this.timer = null;
    this.opened = false;
    this.closed = false;
  }

  start() {
    this.closed = false;
    this.connect();
  }

  stop() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.failAll('Signed out');
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    this.hooks.onState(this.opened ? 'reconnecting' : 'connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.retry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      const again = this.opened;
      this.opened = true;
      this.attempt = 0;
      this.hooks.onState('open');
      this.hooks.onOpen(again);
    };
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failAll('The connection to chatd was lost');
      if (!this.closed) this.retry();
    };
    ws.onerror = () => {}; // onclose follows and decides
  }

  // 0.5 s, 1 s, 2 s, ... up to 15 s, with jitter so that many tabs of a
  // restarted server do not all come back in the same instant.
  retry() {
    const base = Math.min(15000, 500 * 2 ** this.attempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.attempt++;
    const until = Date.now() + delay;
    this.hooks.onState('waiting', until);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  // Reconnect now (the user asked, or the page came back to the front).
  nudge() {
    if (this.ws === null && !this.closed) {
      clearTimeout(this.timer);
      this.connect();
    }
  }

  failAll(why) {
    for (const q of this.waiting.values())
      for (const w of q) w.reject(new WireError({ error: why, code: ERR.LOST }));
    this.waiting.clear();
  }

  // Sends a request and resolves with its reply's data (rejects with a
  // WireError). A turn (codes 3, 17, 18) resolves at once: its reply is
  // pushed, after its deltas, to this tab and to any resuming it.
  request(type, data) {
    if (!this.open)
      return Promise.reject(new WireError({ error: 'Not connected to chatd', code: ERR.LOST, type }));
    this.ws.send(JSON.stringify({ type, data }));
    if (isTurn(type)) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      if (!this.waiting.has(type)) this.waiting.set(type, []);
      this.waiting.get(type).push({ resolve, reject });
    });
  }

  receive(text) {
    let f;
    try {
      f = JSON.parse(text);
    } catch (e) {
      return;
    }
    const type = f.type;
    const q = this.waiting.get(type);
    const isPush = isTurn(type) || type === CODE.DELTA || type === CODE.EVENT;
    if (!isPush && q && q.length > 0) {
      const w = q.shift();
      if (f.error !== undefined) w.reject(new WireError(f));
      else w.resolve(f.data);
      return;
    }
    this.hooks.onPush(f);
  }
}
