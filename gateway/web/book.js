// A local copy of one market's order book, kept from the `depth` stream and
// proved against the server's checksum after every message (docs/protocol.md,
// "depth_snapshot and depth_update").
//
// Rules: a snapshot replaces the book; an update sets each level it lists
// (quantity zero deletes it); each side is then cut to the depth window; the
// checksum (CRC32 of the top asks from the lowest price up, then the top bids
// from the highest down, each level's price and quantity as sent with the
// decimal point and then the leading zeros removed) must equal the message's.
// Prices and quantities stay the strings the server sent.

import {compare, isZero} from "./decimal.js";

const TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (the zlib one) of an ASCII string, as an unsigned 32-bit integer. */
export function crc32(text) {
  let crc = 0xffffffff;
  for (let i = 0; i < text.length; i++) crc = TABLE[(crc ^ text.charCodeAt(i)) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function part(text) {
  return text.replace(".", "").replace(/^0+/, "");
}

/** The checksum of a book: bids best (highest) first, asks best (lowest) first. */
export function checksum(bids, asks, depth) {
  const levels = [...asks.slice(0, depth), ...bids.slice(0, depth)];
  return crc32(levels.map(([price, quantity]) => part(price) + part(quantity)).join(""));
}

export class DepthBook {
  constructor(depth) {
    this.depth = depth;
    this.symbol = null;
    this.seq = null;
    this._bids = new Map();
    this._asks = new Map();
  }

  /** Replace the book with a `depth_snapshot`; true when its checksum matches. */
  load(snapshot) {
    this.symbol = snapshot.symbol;
    this._bids.clear();
    this._asks.clear();
    return this._apply(snapshot);
  }

  /** Apply a `depth_update`; true when the result matches its checksum. */
  apply(update) {
    return this._apply(update);
  }

  /** Bids, highest price first: [[price, quantity], ...]. */
  get bids() {
    return [...this._bids].sort((a, b) => compare(b[0], a[0]));
  }

  /** Asks, lowest price first. */
  get asks() {
    return [...this._asks].sort((a, b) => compare(a[0], b[0]));
  }

  checksum() {
    return checksum(this.bids, this.asks, this.depth);
  }

  _apply(message) {
    for (const [side, levels] of [[this._bids, message.bids], [this._asks, message.asks]]) {
      for (const [price, quantity] of levels) {
        if (isZero(quantity)) side.delete(price);
        else side.set(price, quantity);
      }
    }
    this._truncate(this._bids, this.bids);
    this._truncate(this._asks, this.asks);
    this.seq = message.seq;
    return this.checksum() === message.checksum;
  }

  _truncate(side, sorted) {
    for (const [price] of sorted.slice(this.depth)) side.delete(price);
  }
}
