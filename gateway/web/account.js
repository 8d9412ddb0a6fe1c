// The account panel: a pasted token, the user's open orders (live from the
// `orders` stream) and the order form (WebSocket order entry).
//
// Rules:
// * The token lives in this tab's sessionStorage only: never in the page's URL,
//   never in localStorage. It goes to the server in two places only: the
//   `Authorization` header of REST calls and the `?token=` of the WebSocket
//   URL (browsers cannot set headers on a WebSocket; docs/protocol.md).
// * A browser hides why a WebSocket handshake failed, so before connecting,
//   and whenever a connection could not be opened, the token is checked over
//   REST (`GET /api/v1/orders`), whose 401 carries the server's own message
//   ("token expired at ...; get a new one with: ..."). A close with 4003 means
//   the token expired while connected. Either stops the reconnecting until a
//   new token is pasted.
// * Open orders: the stream's knowledge of an order wins over REST's (the REST
//   list, fetched after subscribing, may be older than an update that overtook
//   it); an order the stream closed (filled, cancelled) never comes back.

import {Connection, TOKEN_EXPIRED} from "./connection.js";

const KEY = "trade-engine.token";
const CLOSED = new Set(["FILLED", "CANCELLED", "REJECTED"]);
const STATUS = {OPEN: "open", PARTIALLY_FILLED: "partial"};
const $ = (id) => document.getElementById(id);

function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
    return typeof claims.sub === "string" ? claims : null;
  } catch {
    return null;
  }
}

function errorText(error) {
  return `${error.code}: ${error.message}${error.field ? ` (field ${error.field})` : ""}`;
}

export class Account {
  constructor(wsUrl, notify) {
    this.wsUrl = wsUrl;
    this.notify = notify;
    this.token = null;
    this.claims = null;
    this.connection = null;
    this.orders = new Map();
    this._closed = new Set();
    this._streamed = new Set();
    this.symbol = null;
    this._generation = 0;
    this._resumeOnShow = false;
    this._wire();
    this._renderOrders();
  }

  restore() {
    const token = sessionStorage.getItem(KEY);
    if (token) this.use(token);
  }

  setMarket(symbol) {
    this.symbol = symbol;
    $("order-market").textContent = symbol ?? "";
  }

  forget() {
    this._disconnect();
    sessionStorage.removeItem(KEY);
    this.token = this.claims = null;
    $("token").value = "";
    this.orders.clear();
    this._renderOrders();
    this._setState("none", "no token: the order form needs one");
  }

  async use(token) {
    this._disconnect();
    token = token.trim();
    const claims = claimsOf(token);
    if (!claims) {
      sessionStorage.removeItem(KEY);
      this._setState("rejected", "that is not a token: paste the output of trade-engine token --user NAME");
      return;
    }
    sessionStorage.setItem(KEY, token);
    $("token").value = "";
    this.token = token;
    this.claims = claims;
    this._setState("checking", `checking the token of ${claims.sub}…`);
    if (await this._refused()) return;
    if (this.token !== token) return;
    const url = `${this.wsUrl}${this.wsUrl.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
    const connection = this.connection = new Connection(url, {
      onState: ({state, detail}) => this._connectionState(connection, state, detail),
      onMessage: (m) => {
        if (m.type === "shutdown") this.notify("info", `server: ${m.reason}`);
      },
      beforeReconnect: (event, opened) => this._reconnect(connection, event, opened),
    });
    connection.start();
    this._subscription = connection.subscribe("orders", null, {
      fresh: () => this._reload(),
      message: (m) => this._update(m),
      failed: (error) => this.notify("error", `orders: ${errorText(error)}`),
      notice: (text) => this.notify("info", text),
    });
  }

  /** Close the account's connection while the page is hidden; `resume` opens it again. */
  pause() {
    this._resumeOnShow = this.connection !== null && this.connection.state !== "stopped";
    if (this._resumeOnShow) this.connection.stop();
  }

  resume() {
    if (this._resumeOnShow && this.connection) this.connection.start();
  }

  _disconnect() {
    if (this.connection) this.connection.stop();
    this.connection = null;
    $("order-fields").disabled = true;
  }

  /** Whether the server refuses the token (401): then says why, in its own words. */
  async _refused() {
    const token = this.token;
    let answer, body;
    try {
      answer = await fetch("/api/v1/orders", {headers: {Authorization: `Bearer ${token}`}});
      body = await answer.json();
    } catch (error) {
      return false;  // the server is away: the connection retries and says so
    }
    if (answer.status !== 401 || this.token !== token) return false;
    const expired = this.claims.exp != null && this.claims.exp * 1000 <= Date.now();
    this._setState(expired ? "expired" : "rejected",
      `${expired ? "token expired" : "token refused"}: ${body.error.message}`);
    return true;
  }

  async _reconnect(connection, event, opened) {
    if (connection !== this.connection) return false;
    if (event.code === TOKEN_EXPIRED) {
      this._setState("expired", `token expired: the server closed the connection (${event.code} ` +
        `${event.reason || "token expired"}); paste a new one: trade-engine token --user ${this.claims.sub}`);
      return false;
    }
    if (!opened && await this._refused()) return false;
    return true;
  }

  _connectionState(connection, state, detail) {
    if (connection !== this.connection) return;
    $("order-fields").disabled = state !== "open";
    if (state === "open") {
      const until = this.claims.exp ? `, token valid until ${new Date(this.claims.exp * 1000).toLocaleString()}` : "";
      this._setState("ready", `signed in as ${this.claims.sub}${until}`);
    } else if (state === "waiting") {
      this._setState("reconnecting", `not connected (${detail.code} ${detail.reason}); ` +
        `retrying in ${Math.ceil(detail.retryInMs / 1000)} s`);
    } else if (state === "connecting") {
      if ($("account").dataset.state !== "reconnecting") this._setState("connecting", `connecting as ${this.claims.sub}…`);
    }
  }

  _setState(state, text) {
    const element = $("account");
    element.dataset.state = state;
    element.textContent = text;
  }

  async _reload() {
    const generation = ++this._generation;  // a late answer to an older reload is dropped
    this.orders.clear();
    this._closed.clear();
    this._streamed.clear();
    this._renderOrders();
    const token = this.token;
    try {
      const answer = await fetch("/api/v1/orders", {headers: {Authorization: `Bearer ${token}`}});
      const body = await answer.json();
      if (!answer.ok) throw new Error(body.error ? body.error.message : answer.statusText);
      if (token !== this.token || generation !== this._generation) return;
      for (const order of body.orders) {
        if (!this._streamed.has(order.order_id) && !this._closed.has(order.order_id)) {
          this.orders.set(order.order_id, order);
        }
      }
      this._renderOrders();
    } catch (error) {
      this.notify("error", `could not load your orders: ${error.message}`);
    }
  }

  _update(m) {
    if (m.action === "rejected") {
      this.notify("error", `order ${m.order_id ?? ""} ${m.command ?? ""} rejected: ${m.reason}`);
      return true;
    }
    this._streamed.add(m.order_id);
    if (CLOSED.has(m.status)) {
      this._closed.add(m.order_id);
      this.orders.delete(m.order_id);
    } else {
      const known = this.orders.get(m.order_id) ?? {};
      this.orders.set(m.order_id, {...known, ...m, type: m.order_type ?? known.type});
    }
    this._renderOrders();
    return true;
  }

  _renderOrders() {
    const orders = [...this.orders.values()].sort((a, b) => b.order_id - a.order_id);
    $("orders").replaceChildren(...orders.map((order) => {
      const tr = document.createElement("tr");
      tr.dataset.orderId = String(order.order_id);
      const side = order.side.toLowerCase();
      for (const [text, className] of [[order.order_id, ""], [order.symbol, "small"], [side, side === "buy" ? "bid" : "ask"],
        [order.price ?? "market", ""], [order.quantity, ""], [order.filled_quantity, ""], [STATUS[order.status] ?? order.status.toLowerCase(), "small"]]) {
        const td = document.createElement("td");
        td.textContent = text;
        if (className) td.className = className;
        tr.append(td);
      }
      const button = document.createElement("button");
      button.type = "button";
      button.className = "cancel";
      button.textContent = "Cancel";
      button.addEventListener("click", () => this._cancel(order.order_id, button));
      const td = document.createElement("td");
      td.append(button);
      tr.append(td);
      return tr;
    }));
    if (!orders.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 8;
      td.className = "small";
      td.textContent = this.token ? "no open orders" : "paste a token to see your orders";
      tr.append(td);
      $("orders").append(tr);
    }
  }

  async _cancel(orderId, button) {
    if (!this.connection) return;
    button.disabled = true;
    try {
      const reply = await this.connection.request("cancel", {order_id: orderId});
      this.notify("ok", `cancelled order ${reply.order.order_id} (${reply.order.status.toLowerCase()})`);
    } catch (error) {
      button.disabled = false;
      this.notify("error", errorText(error));
    }
  }

  async _place() {
    for (const id of ["o-price", "o-quantity"]) $(id).removeAttribute("aria-invalid");
    if (!this.connection) {
      this.notify("error", "not connected: paste a token first");
      return;
    }
    const type = $("o-type").value;
    const order = {
      symbol: this.symbol,
      side: $("o-buy").checked ? "buy" : "sell",
      type,
      quantity: $("o-quantity").value.trim(),
      time_in_force: $("o-tif").value,
    };
    if (type === "limit") order.price = $("o-price").value.trim();
    try {
      const {order: placed} = await this.connection.request("place", {order});
      this.notify("ok", `placed order ${placed.order_id}: ${placed.side.toLowerCase()} ${placed.quantity} ` +
        `${placed.symbol} at ${placed.price ?? "market"} (${placed.status.toLowerCase()})`);
    } catch (error) {
      const input = {price: "o-price", quantity: "o-quantity"}[error.field];
      if (input) $(input).setAttribute("aria-invalid", "true");
      this.notify("error", errorText(error));
    }
  }

  _wire() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value;
      if (token.trim()) this.use(token);
    });
    $("token-forget").addEventListener("click", () => this.forget());
    $("order-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this._place();
    });
    $("o-type").addEventListener("change", () => {
      const market = $("o-type").value === "market";
      $("o-price").disabled = market;
      $("o-tif").value = market ? "ioc" : "gtc";
    });
  }
}
