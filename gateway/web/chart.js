// A small line chart of recent trade prices, drawn as inline SVG (no library).
// The prices become numbers here only to be placed on the screen.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 600, HEIGHT = 160, PAD = 6;

function element(name, attributes) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

/** Draw `trades` (oldest first: {price, time}) into the <svg> `svg`. */
export function drawChart(svg, trades, labels) {
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  svg.replaceChildren();
  svg.dataset.points = String(trades.length);
  if (trades.length === 0) {
    labels.high.textContent = labels.low.textContent = "";
    const empty = element("text", {x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", class: "chart-empty"});
    empty.textContent = "no trades yet";
    svg.append(empty);
    return;
  }
  const prices = trades.map((t) => Number(t.price));
  let low = Math.min(...prices), high = Math.max(...prices);
  const lowText = trades[prices.indexOf(low)].price, highText = trades[prices.indexOf(high)].price;
  if (high === low) {
    high += 1;
    low -= 1;
  }
  const x = (i) => trades.length === 1 ? WIDTH / 2 : PAD + (i * (WIDTH - 2 * PAD)) / (trades.length - 1);
  const y = (p) => PAD + ((high - p) * (HEIGHT - 2 * PAD)) / (high - low);
  const points = prices.map((p, i) => `${x(i).toFixed(1)},${y(p).toFixed(1)}`).join(" ");
  svg.append(element("polyline", {points, class: "chart-line"}));
  const last = prices.length - 1;
  svg.append(element("circle", {cx: x(last).toFixed(1), cy: y(prices[last]).toFixed(1), r: 3, class: "chart-dot"}));
  labels.high.textContent = highText;
  labels.low.textContent = lowText;
}
