// The genealogy picture: a layered left-to-right layout (material flows from supplier
// receipts on the left to customer shipments on the right), one horizontal band per
// site, drawn as plain SVG so it exports as it is and every node stays in the DOM.

import { trimDecimal } from "./util.js";

const SVG = "http://www.w3.org/2000/svg";
export const NODE_W = 210;
export const NODE_H = 48;
const COL_W = 340;
const ROW_H = 64;
const BAND_HEAD = 34;
const BAND_GAP = 26;
const PAD = 24;

// Inside the SVG itself, so an exported file looks like the page.
export const GRAPH_CSS = `
svg.genealogy { font-family: system-ui, "Segoe UI", Roboto, sans-serif; background: #fff; }
svg.genealogy .band rect { fill: #f4f6f9; stroke: #d9dee6; }
svg.genealogy .band:nth-child(even) rect { fill: #eef2f7; }
svg.genealogy .band text { font-size: 15px; font-weight: 600; fill: #44546a; }
svg.genealogy .edge path { fill: none; stroke: #8894a6; stroke-width: 1.6; }
svg.genealogy .edge.redacted path { stroke-dasharray: 5 4; }
svg.genealogy .edge.selected path { stroke: #1f4e79; stroke-width: 3; }
svg.genealogy .edge text { font-size: 12px; fill: #223; paint-order: stroke; stroke: #fff; stroke-width: 4px; stroke-linejoin: round; }
svg.genealogy .node rect.box { fill: #e6e9ee; stroke: #66707d; stroke-width: 1.2; }
svg.genealogy .node { cursor: pointer; }
svg.genealogy .node text { pointer-events: none; }
svg.genealogy .node .code { font-size: 13px; font-weight: 600; fill: #111; }
svg.genealogy .node .meta { font-size: 11px; fill: #333; }
svg.genealogy .node.status-RELEASED rect.box { fill: #d8f0dc; stroke: #2e7d32; }
svg.genealogy .node.status-ON_HOLD rect.box { fill: #ffe6b3; stroke: #c77700; }
svg.genealogy .node.status-QUARANTINE rect.box { fill: #fff6c2; stroke: #a08800; }
svg.genealogy .node.status-REJECTED rect.box { fill: #f8d0d0; stroke: #b71c1c; }
svg.genealogy .node.status-EXPIRED rect.box { fill: #e0d4ec; stroke: #6a3d9a; }
svg.genealogy .node.redacted rect.box { fill: #f0f0f0; stroke: #9e9e9e; stroke-dasharray: 4 3; }
svg.genealogy .node.redacted .code { fill: #777; font-style: italic; }
svg.genealogy .node.root rect.box { stroke-width: 3.5; }
svg.genealogy .node.selected rect.box { stroke: #1f4e79; stroke-width: 3.5; }
svg.genealogy .toggle circle { fill: #1f4e79; }
svg.genealogy .toggle text { fill: #fff; font-size: 11px; font-weight: 700; }
svg.genealogy .toggle { cursor: pointer; }
svg.genealogy .alert-badge circle { fill: #c62828; }
svg.genealogy .alert-badge text { fill: #fff; font-size: 11px; font-weight: 700; }
svg.genealogy.far .edge text, svg.genealogy.far .node .meta { display: none; }
`;

function el(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  }
  if (text !== null) node.textContent = text;
  return node;
}

/** Links grouped by (parent, child): one drawn edge per pair, with every quantity. */
export function edgePairs(lotIds, edges) {
  const pairs = new Map();
  for (const e of edges) {
    if (!lotIds.has(e.parent_lot) || !lotIds.has(e.child_lot) || e.parent_lot === e.child_lot) continue;
    const key = `${e.parent_lot}\u0000${e.child_lot}`;
    if (!pairs.has(key)) pairs.set(key, { parent: e.parent_lot, child: e.child_lot, links: [] });
    pairs.get(key).links.push(e);
  }
  return [...pairs.values()];
}

/** What an edge's label says: the quantities used, per unit summed over its links. */
export function edgeLabel(pair) {
  const byUnit = new Map();
  for (const link of pair.links) {
    if (!link.quantity_used) continue;
    const { value, unit } = link.quantity_used;
    byUnit.set(unit, (byUnit.get(unit) || []).concat([value]));
  }
  return [...byUnit.entries()].map(([unit, values]) => `${sumDecimals(values)} ${unit}`).join(" + ");
}

/** Exact sum of decimal strings (at most 6 places, as the API sends them). */
export function sumDecimals(values) {
  let micro = 0n;
  for (const v of values) {
    const [whole, frac = ""] = String(v).replace(/^-/, "").split(".");
    const units = BigInt(whole || "0") * 1000000n + BigInt((frac + "000000").slice(0, 6));
    micro += String(v).startsWith("-") ? -units : units;
  }
  const sign = micro < 0n ? "-" : "";
  const abs = micro < 0n ? -micro : micro;
  return sign + trimDecimal(`${abs / 1000000n}.${String(abs % 1000000n).padStart(6, "0")}`);
}

/** Columns by longest path from the sources; rework loops are broken where they close. */
function ranks(ids, pairs) {
  const children = new Map([...ids].map((id) => [id, []]));
  const parents = new Map([...ids].map((id) => [id, []]));
  for (const p of pairs) {
    children.get(p.parent).push(p.child);
    parents.get(p.child).push(p.parent);
  }
  const indegree = new Map([...ids].map((id) => [id, parents.get(id).length]));
  const rank = new Map([...ids].map((id) => [id, 0]));
  const done = new Set();
  const queue = [...ids].filter((id) => indegree.get(id) === 0).sort();
  const drain = () => {
    while (queue.length) {
      const n = queue.shift();
      if (done.has(n)) continue;
      done.add(n);
      for (const c of children.get(n)) {
        if (done.has(c)) continue;
        rank.set(c, Math.max(rank.get(c), rank.get(n) + 1));
        indegree.set(c, indegree.get(c) - 1);
        if (indegree.get(c) === 0) queue.push(c);
      }
    }
  };
  drain();
  for (const id of [...ids].sort()) {
    if (!done.has(id)) { queue.push(id); drain(); } // a loop: enter it here
  }
  // A supplier lot sits just before the first lot made from it, not far left.
  for (const id of ids) {
    const kids = children.get(id);
    if (parents.get(id).length === 0 && kids.length) {
      rank.set(id, Math.max(0, Math.min(...kids.map((c) => rank.get(c))) - 1));
    }
  }
  const low = Math.min(...rank.values());
  for (const id of ids) rank.set(id, rank.get(id) - low);
  return { rank, children, parents };
}

/**
 * Positions for ``lots`` (API trace lots) and ``edges`` (API trace edges): nodes by id
 * with x, y; bands by site; the size of the whole picture.
 */
export function layoutGraph(lots, edges) {
  const byId = new Map(lots.map((l) => [l.lot_id, l]));
  const ids = new Set(byId.keys());
  const pairs = edgePairs(ids, edges);
  if (!ids.size) return { nodes: new Map(), pairs, bands: [], width: 0, height: 0 };
  const { rank, children, parents } = ranks(ids, pairs);
  const siteOf = (id) => (byId.get(id).redacted ? "redacted" : byId.get(id).site);
  const firstRank = new Map();
  for (const id of ids) {
    const s = siteOf(id);
    firstRank.set(s, Math.min(firstRank.get(s) ?? Infinity, rank.get(id)));
  }
  const sites = [...firstRank.keys()].sort((a, b) => (a === "redacted") - (b === "redacted")
    || firstRank.get(a) - firstRank.get(b) || a.localeCompare(b));
  // cells[rank][site] = ordered lot ids
  const maxRank = Math.max(...rank.values());
  const cells = Array.from({ length: maxRank + 1 }, () => new Map(sites.map((s) => [s, []])));
  for (const id of [...ids].sort()) cells[rank.get(id)].get(siteOf(id)).push(id);
  const siteIndex = new Map(sites.map((s, i) => [s, i]));
  const order = new Map();
  const number = () => {
    for (const column of cells) {
      for (const [site, list] of column) list.forEach((id, i) => order.set(id, siteIndex.get(site) * 100000 + i));
    }
  };
  number();
  // Barycentre sweeps: each lot moves next to the lots it is linked with, fewer crossings.
  const mean = (list) => (list.length ? list.reduce((a, id) => a + order.get(id), 0) / list.length : null);
  for (let sweep = 0; sweep < 4; sweep++) {
    const forward = sweep % 2 === 0;
    const columns = forward ? cells : [...cells].reverse();
    for (const column of columns) {
      for (const [site, list] of column) {
        const keyed = list.map((id, i) => {
          const m = mean(forward ? parents.get(id) : children.get(id));
          return [m === null ? siteIndex.get(site) * 100000 + i : m, i, id];
        });
        keyed.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
        column.set(site, keyed.map((k) => k[2]));
        column.get(site).forEach((id, i) => order.set(id, siteIndex.get(site) * 100000 + i));
      }
    }
  }
  const nodes = new Map();
  const bands = [];
  let top = PAD;
  for (const site of sites) {
    const rows = Math.max(...cells.map((column) => column.get(site).length));
    const height = BAND_HEAD + rows * ROW_H;
    bands.push({ site, y: top, height, count: cells.reduce((n, column) => n + column.get(site).length, 0) });
    for (let r = 0; r <= maxRank; r++) {
      const list = cells[r].get(site);
      const offset = ((rows - list.length) * ROW_H) / 2;
      list.forEach((id, i) => nodes.set(id, {
        lot: byId.get(id), rank: r, x: PAD + r * COL_W, y: top + BAND_HEAD + offset + i * ROW_H + (ROW_H - NODE_H) / 2,
      }));
    }
    top += height + BAND_GAP;
  }
  return { nodes, pairs, bands, width: PAD * 2 + maxRank * COL_W + NODE_W, height: top - BAND_GAP + PAD };
}

function shorten(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * Draw ``layout`` into ``svg`` (emptied first). ``marks``: root, selected id, per-lot
 * toggles ({hidden, expanded}) and alert counts.
 */
export function drawGraph(svg, layout, marks = {}) {
  svg.replaceChildren();
  svg.classList.add("genealogy");
  svg.append(el("style", {}, GRAPH_CSS));
  const defs = el("defs");
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.append(el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8894a6" }));
  defs.append(marker);
  svg.append(defs);
  const scene = el("g", { class: "scene" });
  const bandLayer = el("g", { class: "bands" });
  for (const band of layout.bands) {
    const g = el("g", { class: "band", "data-site": band.site });
    g.append(el("rect", { x: 0, y: band.y, width: layout.width, height: band.height, rx: 8 }));
    const name = band.site === "redacted" ? "Other sites (redacted)" : `Site ${band.site}`;
    g.append(el("text", { x: 12, y: band.y + 22 }, `${name} · ${band.count} lot${band.count === 1 ? "" : "s"}`));
    bandLayer.append(g);
  }
  const edgeLayer = el("g", { class: "edges" });
  for (const pair of layout.pairs) {
    const a = layout.nodes.get(pair.parent);
    const b = layout.nodes.get(pair.child);
    const x1 = a.x + NODE_W;
    const y1 = a.y + NODE_H / 2;
    const x2 = b.x;
    const y2 = b.y + NODE_H / 2;
    const dx = Math.max(40, Math.abs(x2 - x1) / 2);
    const redacted = pair.links.every((l) => l.redacted);
    const g = el("g", { class: `edge${redacted ? " redacted" : ""}`, "data-parent": pair.parent, "data-child": pair.child });
    g.append(el("path", { d: `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)" }));
    const label = edgeLabel(pair);
    if (label) {
      // the curve's midpoint (t = 0.5 of the cubic)
      const mx = (x1 + 3 * (x1 + dx) + 3 * (x2 - dx) + x2) / 8;
      const my = (y1 + y2) / 2;
      g.append(el("text", { class: "qty", x: mx, y: my - 5, "text-anchor": "middle" }, label));
      const kinds = [...new Set(pair.links.map((l) => l.kind))].join(", ");
      g.append(el("title", {}, `${pair.parent} → ${pair.child}\n${kinds}: ${label} used`));
    }
    edgeLayer.append(g);
  }
  const nodeLayer = el("g", { class: "nodes" });
  for (const [id, n] of layout.nodes) {
    const lot = n.lot;
    const classes = ["node", lot.redacted ? "redacted" : `status-${lot.status || "UNKNOWN"}`];
    if (id === marks.root) classes.push("root");
    if (id === marks.selected) classes.push("selected");
    const g = el("g", { class: classes.join(" "), "data-lot": id, transform: `translate(${n.x},${n.y})`, tabindex: 0, role: "button" });
    g.append(el("rect", { class: "box", width: NODE_W, height: NODE_H, rx: 6 }));
    g.append(el("text", { class: "code", x: 10, y: 19 }, lot.redacted ? "another site's lot" : shorten(id, 28)));
    const meta = lot.redacted ? "details hidden" : [lot.item_description || lot.item_code, (lot.status || "no status").replace("_", " ").toLowerCase()].filter(Boolean).join(" · ");
    g.append(el("text", { class: "meta", x: 10, y: 37 }, shorten(meta, 34)));
    g.append(el("title", {}, lot.redacted ? "Another site's lot: you may not see its details" : `${id}\n${lot.item_description || ""} (${lot.item_code || "?"})\nstatus: ${lot.status || "unknown"}\n${lot.depth} step(s) from the lot traced`));
    const alerts = marks.alerts?.get(id);
    if (alerts) {
      const badge = el("g", { class: "alert-badge", transform: "translate(0,0)" });
      badge.append(el("circle", { r: 10 }));
      badge.append(el("text", { "text-anchor": "middle", y: 4 }, `!${alerts}`));
      badge.append(el("title", {}, `${alerts} open alert(s) on this lot`));
      g.append(badge);
    }
    const toggle = marks.toggles?.get(id);
    if (toggle && (toggle.hidden || toggle.expanded)) {
      const t = el("g", { class: "toggle", "data-lot": id, transform: `translate(${NODE_W},0)` });
      t.append(el("circle", { r: 11 }));
      t.append(el("text", { "text-anchor": "middle", y: 4 }, toggle.hidden ? `+${toggle.hidden}` : "−"));
      t.append(el("title", {}, toggle.hidden ? `show ${toggle.hidden} more linked lot(s)` : "collapse what this lot opened"));
      g.append(t);
    }
    nodeLayer.append(g);
  }
  scene.append(bandLayer, edgeLayer, nodeLayer);
  svg.append(scene);
}

/** Pan (drag) and zoom (wheel, buttons) by moving the viewBox; labels hide when far out. */
export class PanZoom {
  constructor(svg, bounds) {
    this.svg = svg;
    this.bounds = bounds;
    this.box = { x: 0, y: 0, w: 1, h: 1 };
    this.frame = null;
    this.drag = null;
    svg.addEventListener("wheel", (event) => {
      event.preventDefault();
      const r = svg.getBoundingClientRect();
      this.zoom(Math.exp(event.deltaY * 0.0015), (event.clientX - r.left) / r.width, (event.clientY - r.top) / r.height);
    }, { passive: false });
    svg.addEventListener("pointerdown", (event) => {
      if (event.target.closest(".node, .toggle")) return;
      this.drag = { x: event.clientX, y: event.clientY, box: { ...this.box } };
      svg.setPointerCapture(event.pointerId);
      svg.classList.add("dragging");
    });
    svg.addEventListener("pointermove", (event) => {
      if (!this.drag) return;
      const r = svg.getBoundingClientRect();
      const k = this.box.w / r.width;
      this.box.x = this.drag.box.x - (event.clientX - this.drag.x) * k;
      this.box.y = this.drag.box.y - (event.clientY - this.drag.y) * k;
      this.apply();
    });
    const end = () => { this.drag = null; svg.classList.remove("dragging"); };
    svg.addEventListener("pointerup", end);
    svg.addEventListener("pointercancel", end);
  }

  /** Show the whole picture. */
  fit() {
    const r = this.svg.getBoundingClientRect();
    const aspect = r.height / Math.max(r.width, 1) || 0.6;
    const { width, height } = this.bounds;
    let w = Math.max(width, 400);
    let h = w * aspect;
    if (h < height) { h = height; w = h / aspect; }
    this.box = { x: (width - w) / 2, y: (height - h) / 2, w, h };
    this.apply();
  }

  /** Show the area around ``node`` at a readable scale. */
  focus(node) {
    const r = this.svg.getBoundingClientRect();
    const scale = Math.max(this.scale(), 0.8);
    const w = r.width / scale;
    const h = r.height / scale;
    this.box = { x: node.x + NODE_W / 2 - w / 2, y: node.y + NODE_H / 2 - h / 2, w, h };
    this.apply();
  }

  scale() {
    return this.svg.getBoundingClientRect().width / this.box.w;
  }

  zoom(factor, fx = 0.5, fy = 0.5) {
    const w = Math.min(Math.max(this.box.w * factor, 150), Math.max(this.bounds.width, this.bounds.height) * 4);
    const k = w / this.box.w;
    this.box.x += fx * this.box.w * (1 - k);
    this.box.y += fy * this.box.h * (1 - k);
    this.box.w *= k;
    this.box.h *= k;
    this.apply();
  }

  apply() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      const { x, y, w, h } = this.box;
      this.svg.setAttribute("viewBox", `${x} ${y} ${w} ${h}`);
      this.svg.classList.toggle("far", this.scale() < 0.45);
    });
  }
}

/** The whole picture as a standalone SVG document (text). */
export function svgText(svg, bounds) {
  const copy = svg.cloneNode(true);
  copy.setAttribute("xmlns", SVG);
  copy.setAttribute("viewBox", `0 0 ${bounds.width} ${bounds.height}`);
  copy.setAttribute("width", bounds.width);
  copy.setAttribute("height", bounds.height);
  copy.classList.remove("far", "dragging");
  copy.removeAttribute("style");
  for (const node of copy.querySelectorAll("[tabindex]")) node.removeAttribute("tabindex");
  return `<?xml version="1.0" encoding="UTF-8"?>\n${new XMLSerializer().serializeToString(copy)}`;
}

/** The whole picture as a PNG Blob (white background, up to 2x, within canvas limits). */
export function pngBlob(svg, bounds) {
  return new Promise((resolve, reject) => {
    const scale = Math.min(2, 16000 / Math.max(bounds.width, bounds.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.ceil(bounds.width * scale);
    canvas.height = Math.ceil(bounds.height * scale);
    const image = new Image();
    const url = URL.createObjectURL(new Blob([svgText(svg, bounds)], { type: "image/svg+xml" }));
    image.onload = () => {
      const g = canvas.getContext("2d");
      g.fillStyle = "#fff";
      g.fillRect(0, 0, canvas.width, canvas.height);
      g.drawImage(image, 0, 0, canvas.width, canvas.height);
      URL.revokeObjectURL(url);
      canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("the picture is too large for a PNG"))), "image/png");
    };
    image.onerror = () => { URL.revokeObjectURL(url); reject(new Error("the picture could not be rendered")); };
    image.src = url;
  });
}
