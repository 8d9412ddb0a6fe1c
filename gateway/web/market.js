// The market view: the order-book ladder (depth stream, checksum-verified),
// best bid / best ask / spread, the trades tape and the price chart.
//
// Rules: the ladder shows only a book whose last checksum matched (a mismatch
// or a seq gap resubscribes and shows "resynchronising" until the new
// snapshot); the tape merges the REST history with the stream by `trade_id`,
// so a trade is never shown twice and a fresh subscription loses none that the
// server still lists. A resumed subscription keeps the book and the tape; a
// fresh one (first, after a resync, or when the server could not resume: a new
// epoch may number trades anew) starts both from the server's.

import {DepthBook} from "./book.js";
import {drawChart} from "./chart.js";
import {add, subtract} from "./decimal.js";

const TAPE_ROWS = 40;
const CHART_POINTS = 120;
const $ = (id) => document.getElementById(id);

function row(cells, attributes = {}) {
  const tr = document.createElement("tr");
  for (const [text, className] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    tr.append(td);
  }
  Object.assign(tr.dataset, attributes);
  return tr;
}

function clock(iso) {
  return iso ? iso.slice(11, 23) : "";
}

export class MarketView {
  constructor(connection, depthLevels, notify) {
    this.connection = connection;
    this.depthLevels = depthLevels;
    this.notify = notify;
    this.symbol = null;
    this.book = new DepthBook(depthLevels);
    this.trades = new Map();
    this.checksumsOk = 0;
    this.mismatches = 0;
    this._depth = null;
    this._trades = null;
    this._generation = 0;  // of the trades subscription: a late REST answer is dropped
  }

  show(symbol) {
    this._generation += 1;
    if (this._depth) this._depth.close();
    if (this._trades) this._trades.close();
    this.symbol = symbol;
    this.book = new DepthBook(this.depthLevels);
    this.trades = new Map();
    this._renderBook(false);
    this._renderTrades();
    this._depth = this.connection.subscribe("depth", symbol, {
      fresh: () => {
        this.book = new DepthBook(this.depthLevels);
        this._renderBook(false);
      },
      resumed: (reply) => this._setBookState(`resumed at seq ${reply.seq}`),
      message: (m) => this._depthMessage(m),
      failed: (error) => this.notify("error", `depth: ${error.code}: ${error.message}`),
      notice: (text) => {
        this._renderBook(false);
        this.notify("info", text);
      },
    });
    this._trades = this.connection.subscribe("trades", symbol, {
      fresh: () => {  // a new subscription (maybe a new epoch): the server's trades only
        this.trades = new Map();
        this._renderTrades();
        this._backfill(symbol, ++this._generation);
      },
      message: (m) => {
        this._addTrades([m]);
        return true;
      },
      failed: (error) => this.notify("error", `trades: ${error.code}: ${error.message}`),
      notice: (text) => this.notify("info", text),
    });
  }

  _depthMessage(m) {
    const ok = m.type === "depth_snapshot" ? this.book.load(m) : this.book.apply(m);
    if (ok) this.checksumsOk += 1;
    else this.mismatches += 1;
    this._renderBook(ok);
    return ok;
  }

  async _backfill(symbol, generation) {
    try {
      const answer = await fetch(`/api/v1/markets/${encodeURIComponent(symbol)}/trades?limit=${CHART_POINTS}`);
      const body = await answer.json();
      if (!answer.ok) throw new Error(body.error ? body.error.message : answer.statusText);
      if (generation === this._generation) this._addTrades(body.trades);
    } catch (error) {
      this.notify("error", `could not load recent trades: ${error.message}`);
    }
  }

  _addTrades(trades) {
    for (const trade of trades) this.trades.set(trade.trade_id, trade);
    if (this.trades.size > CHART_POINTS) {
      const ids = [...this.trades.keys()].sort((a, b) => a - b);
      for (const id of ids.slice(0, ids.length - CHART_POINTS)) this.trades.delete(id);
    }
    this._renderTrades();
  }

  _setBookState(text) {
    $("book-state").textContent = text;
  }

  _renderBook(synced) {
    const table = $("book");
    const book = this.book;
    table.dataset.synced = String(synced);
    table.dataset.symbol = this.symbol ?? "";
    table.dataset.seq = book.seq == null ? "" : String(book.seq);
    table.dataset.checksums = String(this.checksumsOk);
    table.dataset.mismatches = String(this.mismatches);
    table.dataset.resyncs = String(this._depth ? this._depth.resyncs : 0);
    const bids = synced ? book.bids : [], asks = synced ? book.asks : [];
    // The running total stays an exact decimal string; only the bar's width is a float.
    const cumulative = (levels) => {
      let total = "0";
      return levels.map(([price, quantity]) => [price, quantity, (total = add(total, quantity))]);
    };
    const bidRows = cumulative(bids), askRows = cumulative(asks);
    const widest = Math.max(1e-12, ...[...bidRows, ...askRows].map((r) => Number(r[2])));
    const render = (rows, side) => rows.map(([price, quantity, total]) => {
      const tr = row([[price, side], [quantity, ""], [total, "small"]], {price, quantity});
      tr.className = `level ${side}`;
      tr.style.setProperty("--depth", `${(100 * Number(total)) / widest}%`);
      return tr;
    });
    $("asks").replaceChildren(...render(askRows, "ask").reverse());
    $("bids").replaceChildren(...render(bidRows, "bid"));
    const bestBid = bids[0]?.[0], bestAsk = asks[0]?.[0];
    $("best-bid").textContent = bestBid ?? "–";
    $("best-ask").textContent = bestAsk ?? "–";
    const spread = bestBid && bestAsk ? subtract(bestAsk, bestBid) : null;
    $("spread").textContent = spread ?? "–";
    $("book-mid").textContent = !synced ? (book.seq == null ? "waiting for the book…" : "resynchronising…")
      : spread ? `spread ${spread}` : bids.length || asks.length ? "one side empty" : "the book is empty";
    this._setBookState(synced
      ? `seq ${book.seq} · checksum ok (${this.checksumsOk}) · resyncs ${this._depth ? this._depth.resyncs : 0}`
      : book.seq == null ? "waiting for the depth snapshot" : `checksum mismatch at seq ${book.seq}: resynchronising`);
  }

  _renderTrades() {
    const trades = [...this.trades.values()].sort((a, b) => a.trade_id - b.trade_id);
    const newest = trades.slice(-TAPE_ROWS).reverse();
    $("tape").replaceChildren(...newest.map((t) => {
      const side = t.taker_side.toLowerCase();
      const tr = row([[clock(t.executed_at), "small"], [t.price, side === "buy" ? "bid" : "ask"],
        [t.quantity, ""], [side, "small"]], {tradeId: String(t.trade_id), price: t.price, quantity: t.quantity});
      return tr;
    }));
    $("last-price").textContent = trades.length ? `last ${trades[trades.length - 1].price}` : "";
    drawChart($("chart"), trades.map((t) => ({price: t.price, time: t.executed_at})),
      {high: $("chart-high"), low: $("chart-low")});
  }
}
