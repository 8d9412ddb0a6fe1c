// The trading page: wires the market view and the account panel to the server.
//
// The server fills in two <meta> values: the WebSocket URL (its own listener,
// on another port than this page) and the depth window the checksum covers.
// Market data runs on one public connection (`/ws`); the account's orders and
// order entry on a second one opened with the token, so an expired token never
// stops the market data. `window.tradePage` exposes both for the console.

import {Account} from "./account.js";
import {Connection} from "./connection.js";
import {MarketView} from "./market.js";

const $ = (id) => document.getElementById(id);
const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;

function notify(kind, text) {
  const notice = $("notice");
  notice.dataset.kind = kind;
  notice.textContent = text;
}

function showStatus({state, detail}) {
  const status = $("status");
  status.dataset.state = state;
  document.body.dataset.connection = state;
  status.textContent = {
    open: "connected",
    connecting: detail.attempt > 1 ? `connecting… (attempt ${detail.attempt})` : "connecting…",
    waiting: `not connected (${detail.code} ${detail.reason}); retrying in ${Math.ceil((detail.retryInMs ?? 0) / 1000)} s`,
    stopped: "not connected",
  }[state];
}

async function loadMarkets() {
  for (let delay = 500; ; delay = Math.min(delay * 2, 10000)) {
    try {
      const answer = await fetch("/api/v1/markets");
      if (answer.ok) return (await answer.json()).markets;
      notify("error", `GET /api/v1/markets answered ${answer.status}`);
    } catch (error) {
      showStatus({state: "waiting", detail: {code: "", reason: "the server is not answering", retryInMs: delay}});
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

function symbolFromHash(markets) {
  const wanted = decodeURIComponent(location.hash.slice(1)).replace("-", "/").toUpperCase();
  return markets.find((m) => m.symbol === wanted)?.symbol ?? markets[0]?.symbol ?? null;
}

async function main() {
  const wsUrl = meta("trade-engine-ws");
  const depthLevels = Number(meta("trade-engine-depth-levels"));
  $("ws-url").textContent = wsUrl;
  const connection = new Connection(wsUrl, {
    onState: showStatus,
    onMessage: (m) => {
      if (m.type === "shutdown") notify("info", `server: ${m.reason}`);
    },
  });
  const market = new MarketView(connection, depthLevels, notify);
  const account = new Account(wsUrl, notify);
  window.tradePage = {connection, market, account};
  // Leaving the page closes its connections at once (a page kept in the back-forward
  // cache would otherwise hold them open, unanswered); coming back opens them again.
  window.addEventListener("pagehide", () => {
    connection.stop();
    account.pause();
  });
  window.addEventListener("pageshow", (event) => {
    if (!event.persisted) return;
    connection.start();
    account.resume();
  });
  account.restore();

  const markets = await loadMarkets();
  const select = $("market");
  select.replaceChildren(...markets.map((m) => new Option(m.symbol, m.symbol)));
  select.disabled = markets.length === 0;
  const choose = (symbol) => {
    if (!symbol || symbol === market.symbol) return;
    select.value = symbol;
    market.show(symbol);
    account.setMarket(symbol);
  };
  select.addEventListener("change", () => {
    location.hash = select.value.replace("/", "-");
  });
  window.addEventListener("hashchange", () => choose(symbolFromHash(markets)));
  connection.start();
  choose(symbolFromHash(markets));
  if (!markets.length) notify("error", "the server trades no market (see docs/configuration.md, markets)");
}

main();
