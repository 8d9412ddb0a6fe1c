// One WebSocket to the server, kept open for the page (docs/protocol.md).
//
// Rules:
// * Replies are matched to requests by `id`; every request gets an answer: the
//   server's reply, or an error made here (`not_connected`, `connection_closed`,
//   `timeout`) shaped like the server's, so the page shows one kind of error.
// * Every stream message is checked against its subscription's `seq`: it must
//   be the last one + 1. A message already seen is dropped; a gap, or a message
//   the handler rejects (a depth checksum that does not match), resubscribes
//   from scratch (unsubscribe, then subscribe without `since`: a fresh snapshot).
// * When the connection drops it is opened again after a backoff (0.5 s doubling
//   to 15 s, with jitter), unless `beforeReconnect` says not to (an expired
//   token). Each subscription is then resumed with `since: {epoch, seq}` of the
//   last message it took; when the server answers with an error
//   (`resume_unavailable`: history lost, or too old), it subscribes fresh and
//   its handler is told to start over.
// * A ping every 15 s; no answer within 10 s counts as a dead connection.

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;
const PING_EVERY_MS = 15000;
const REQUEST_TIMEOUT_MS = 10000;
export const TOKEN_EXPIRED = 4003;

function localError(code, message) {
  return {type: "error", id: null, code, message, field: null};
}

/** The subscription a stream message belongs to. */
function channelKey(m) {
  switch (m.type) {
    case "trade_executed": return [`trades ${m.symbol}`, "trades *"];
    case "depth_snapshot": case "depth_update": return [`depth ${m.symbol}`];
    case "orderbook_snapshot": case "orderbook_update": return [`orderbook ${m.symbol}`];
    case "order_update": return ["orders"];
    default: return [];
  }
}

export class Connection {
  /**
   * @param url the WebSocket URL (with `?token=` for a private connection)
   * @param onState called with {state, detail}: state is "connecting", "open",
   *   "waiting" (a retry is scheduled: detail.retryInMs, detail.code, detail.reason)
   *   or "stopped"
   * @param onMessage messages no subscription takes (shutdown, stray replies)
   * @param beforeReconnect async (closeEvent, opened) => whether to try again
   */
  constructor(url, {onState = () => {}, onMessage = () => {}, beforeReconnect = async () => true} = {}) {
    this.url = url;
    this._onState = onState;
    this._onMessage = onMessage;
    this._beforeReconnect = beforeReconnect;
    this._ws = null;
    this._pending = new Map();
    this._subscriptions = new Map();
    this._nextId = 1;
    this._attempts = 0;
    this._retryTimer = null;
    this._pingTimer = null;
    this._stopped = true;
    this.state = "stopped";
  }

  get isOpen() {
    return this._ws !== null && this._ws.readyState === WebSocket.OPEN;
  }

  start() {
    if (!this._stopped) return;
    this._stopped = false;
    this._connect();
  }

  stop() {
    this._stopped = true;
    clearTimeout(this._retryTimer);
    const ws = this._ws;
    if (ws) {
      this._detach(ws);
      ws.close(1000, "page closed the connection");
      this._lost(localError("connection_closed", "the connection was closed"));
    }
    this._setState("stopped", {});
  }

  /** Subscribe to `stream` (and `symbol`) with `handlers` (see Subscription). */
  subscribe(stream, symbol, handlers) {
    const subscription = new Subscription(this, stream, symbol, handlers);
    this._subscriptions.set(subscription.key, subscription);
    subscription._send();
    return subscription;
  }

  /** Send `{action, id, ...fields}`; resolves with the reply, rejects with an error reply. */
  request(action, fields = {}, timeoutMs = REQUEST_TIMEOUT_MS) {
    if (!this.isOpen) {
      return Promise.reject(localError("not_connected", "not connected to the server; it reconnects by itself"));
    }
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(localError("timeout", `no answer from the server to ${action} within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this._pending.set(id, {resolve, reject, timer});
      this._ws.send(JSON.stringify({action, id, ...fields}));
    });
  }

  _setState(state, detail) {
    this.state = state;
    this._onState({state, detail});
  }

  _connect() {
    this._setState("connecting", {attempt: this._attempts + 1});
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (error) {
      this._closed({code: 1006, reason: String(error)}, false);
      return;
    }
    this._ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this._attempts = 0;
      this._setState("open", {});
      this._pingTimer = setInterval(() => this._ping(ws), PING_EVERY_MS);
      for (const subscription of this._subscriptions.values()) subscription._send();
    };
    ws.onmessage = (event) => this._receive(event.data);
    ws.onclose = (event) => {
      this._detach(ws);
      this._closed(event, opened);
    };
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = null;
    clearInterval(this._pingTimer);
    if (this._ws === ws) this._ws = null;
  }

  _ping(ws) {
    this.request("ping").catch((error) => {
      if (error.code === "timeout" && this._ws === ws) {  // dead: do not wait for TCP to notice
        this._detach(ws);
        ws.close(4000, "no pong");
        this._closed({code: 4000, reason: "the server did not answer a ping"}, true);
      }
    });
  }

  _lost(error) {
    for (const {reject, timer} of this._pending.values()) {
      clearTimeout(timer);
      reject(error);
    }
    this._pending.clear();
    for (const subscription of this._subscriptions.values()) subscription._connectionLost();
  }

  async _closed(event, opened) {
    const reason = event.reason || (opened ? "connection lost" : "could not connect");
    this._lost(localError("connection_closed", `the connection closed (${event.code} ${reason})`));
    if (this._stopped) return;
    const again = await this._beforeReconnect(event, opened);
    if (this._stopped) return;
    if (!again) {
      this._stopped = true;
      this._setState("stopped", {code: event.code, reason});
      return;
    }
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this._attempts) * (0.8 + 0.4 * Math.random());
    this._attempts += 1;
    this._setState("waiting", {retryInMs: delay, code: event.code, reason});
    this._retryTimer = setTimeout(() => this._connect(), delay);
  }

  _receive(data) {
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      return;
    }
    if (m.id != null && this._pending.has(m.id)) {
      const {resolve, reject, timer} = this._pending.get(m.id);
      this._pending.delete(m.id);
      clearTimeout(timer);
      (m.type === "error" ? reject : resolve)(m);
      return;
    }
    for (const key of channelKey(m)) {
      const subscription = this._subscriptions.get(key);
      if (subscription) {
        subscription._receive(m);
        return;
      }
    }
    this._onMessage(m);
  }
}

/**
 * One subscription, kept across reconnects. `handlers`:
 * - fresh(reply): start over (a new subscription; a depth snapshot follows);
 * - resumed(reply): the server resumed after the last message taken;
 * - message(m): a stream message in order; return false to resynchronise;
 * - failed(error): the server refused the subscription (the error reply);
 * - notice(text): something worth showing (a gap, a resync, a resume refused).
 */
export class Subscription {
  constructor(connection, stream, symbol, handlers) {
    this.connection = connection;
    this.stream = stream;
    this.symbol = symbol;
    this.key = symbol == null ? stream === "trades" ? "trades *" : stream : `${stream} ${symbol}`;
    this.handlers = handlers;
    this.epoch = null;
    this.seq = null;
    this.status = "idle";  // subscribing, active, resyncing, failed, closed
    this.resyncs = 0;
    this.resumes = 0;
    this._awaitingSnapshot = false;
  }

  close() {
    const active = this.status === "active";
    this.status = "closed";
    if (this.connection._subscriptions.get(this.key) === this) this.connection._subscriptions.delete(this.key);
    if (active && this.connection.isOpen) this.connection.request("unsubscribe", this._fields()).catch(() => {});
  }

  /** Start over: unsubscribe, then subscribe without `since` (a fresh snapshot). */
  resync(why) {
    if (this.status === "closed" || this.status === "resyncing") return;
    this.status = "resyncing";
    this.resyncs += 1;
    this.epoch = this.seq = null;
    this._notice(`${this.stream}: ${why}; subscribing again`);
    const again = () => {
      if (this.status === "resyncing") this._send();
    };
    this.connection.request("unsubscribe", this._fields()).then(again, again);
  }

  _fields() {
    return this.symbol == null ? {stream: this.stream} : {stream: this.stream, symbol: this.symbol};
  }

  _notice(text) {
    if (this.handlers.notice) this.handlers.notice(text);
  }

  _send() {
    if (["closed", "active", "subscribing"].includes(this.status) || !this.connection.isOpen) return;
    const fields = this._fields();
    const resuming = this.epoch != null && this.seq != null;
    if (resuming) fields.since = {epoch: this.epoch, seq: this.seq};
    this.status = "subscribing";
    this.connection.request("subscribe", fields).then(
      (reply) => this._subscribed(reply),
      (error) => this._refused(error, resuming),
    );
  }

  _subscribed(reply) {
    if (this.status === "closed") {
      if (this.connection.isOpen) this.connection.request("unsubscribe", this._fields()).catch(() => {});
      return;
    }
    this.epoch = reply.epoch ?? null;
    this.status = "active";
    if (reply.resumed) {
      this.resumes += 1;
      if (this.handlers.resumed) this.handlers.resumed(reply);
      return;
    }
    this.seq = reply.seq;
    this._awaitingSnapshot = this.stream === "depth" || this.stream === "orderbook";
    this.handlers.fresh(reply);
  }

  _refused(error, resuming) {
    if (this.status === "closed" || ["not_connected", "connection_closed"].includes(error.code)) return;
    if (resuming) {  // resume_unavailable (or a server without resume): subscribe fresh
      this.epoch = this.seq = null;
      this._notice(`${this.stream}: could not resume (${error.message}); subscribing fresh`);
      this.status = "idle";
      this._send();
      return;
    }
    if (error.code === "rate_limited" || error.code === "timeout") {  // try again in a while
      this.status = "idle";
      this._notice(`${this.stream}: ${error.message}; trying again`);
      setTimeout(() => this._send(), 2000);
      return;
    }
    this.status = "failed";
    if (this.handlers.failed) this.handlers.failed(error);
  }

  _connectionLost() {
    if (this.status !== "closed" && this.status !== "failed") this.status = "idle";
    if (this._awaitingSnapshot) this.epoch = this.seq = null;  // nothing to resume from
  }

  _receive(m) {
    if (this.status !== "active") return;
    if (m.type.endsWith("_snapshot")) {
      this._awaitingSnapshot = false;
      if (m.seq !== this.seq) return this.resync(`snapshot at seq ${m.seq}, expected ${this.seq}`);
      if (this.handlers.message(m) === false) this.resync("checksum mismatch");
      return;
    }
    if (this._awaitingSnapshot) return this.resync("an update came before the snapshot");
    if (m.seq <= this.seq) return;  // already taken (a resume overlapping what arrived)
    if (m.seq !== this.seq + 1) return this.resync(`gap: seq ${m.seq} after ${this.seq}`);
    this.seq = m.seq;
    if (this.handlers.message(m) === false) this.resync("checksum mismatch");
  }
}
