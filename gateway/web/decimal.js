// Exact arithmetic on the decimal strings the server sends ("50000.00", "0.00600").
// Money never becomes a float here: a decimal string is a BigInt of units and a scale.
// (Only the chart turns prices into numbers, to place points on the screen.)

const PATTERN = /^(-?)(\d*)(?:\.(\d*))?$/;

export function parse(text) {
  const m = PATTERN.exec(String(text));
  if (!m || (m[2] === "" && (m[3] ?? "") === "")) throw new Error(`not a decimal: ${text}`);
  const fraction = m[3] ?? "";
  return {units: BigInt(`${m[1]}${m[2] || "0"}${fraction}`), scale: fraction.length};
}

function aligned(a, b) {
  const x = parse(a), y = parse(b);
  const scale = Math.max(x.scale, y.scale);
  return [x.units * 10n ** BigInt(scale - x.scale), y.units * 10n ** BigInt(scale - y.scale), scale];
}

export function format(units, scale) {
  const negative = units < 0n;
  let digits = (negative ? -units : units).toString().padStart(scale + 1, "0");
  if (scale > 0) digits = `${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
  return negative ? `-${digits}` : digits;
}

/** -1, 0 or 1, as a is below, equal to or above b. */
export function compare(a, b) {
  const [x, y] = aligned(a, b);
  return x < y ? -1 : x > y ? 1 : 0;
}

export function subtract(a, b) {
  const [x, y, scale] = aligned(a, b);
  return format(x - y, scale);
}

export function add(a, b) {
  const [x, y, scale] = aligned(a, b);
  return format(x + y, scale);
}

export function isZero(text) {
  return parse(text).units === 0n;
}

/** Whether `text` is a plain non-negative decimal a person typed ("0.01", "50000"). */
export function isDecimal(text) {
  return /^\d+(\.\d+)?$|^\.\d+$/.test(text);
}
