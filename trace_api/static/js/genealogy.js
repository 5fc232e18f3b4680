// The genealogy page: where a lot came from and where it went, as a picture and as
// tables; a click on a lot shows its events, documents, QC results and status history.

import { api, ApiError, fetchFile } from "./api.js";
import { drawGraph, edgePairs, layoutGraph, PanZoom, pngBlob, svgText } from "./graph.js";
import { searchBox } from "./search.js";
import { h, notice, qty, replace, saveBlob, statusPill, table, when } from "./util.js";

const SHOW_ALL = 300; // beyond this many lots the picture opens collapsed to a depth
const DEPTHS = ["1", "2", "3", "4", "5", "6", "7", "8", "10", "15", "20", "all"];
const QC_TYPES = new Set(["QcSampleTaken", "QcResultRecorded"]);

/** The deepest level at which at most ``limit`` lots are shown. */
function defaultDepth(lots) {
  if (lots.length <= SHOW_ALL) return "all";
  let best = "1";
  for (const d of DEPTHS.slice(0, -1)) {
    if (lots.filter((l) => l.depth <= Number(d)).length <= SHOW_ALL) best = d;
  }
  return best;
}

/** Lots shown: those within ``depth`` steps, plus the neighbours of expanded lots. */
export function visibleLots(trace, depth, expanded) {
  const limit = depth === "all" ? Infinity : Number(depth);
  const visible = new Set(trace.lots.filter((l) => l.depth <= limit).map((l) => l.lot_id));
  const neighbours = new Map(trace.lots.map((l) => [l.lot_id, new Set()]));
  for (const e of trace.edges) {
    neighbours.get(e.parent_lot)?.add(e.child_lot);
    neighbours.get(e.child_lot)?.add(e.parent_lot);
  }
  const todo = [...expanded].filter((id) => visible.has(id));
  while (todo.length) {
    const id = todo.pop();
    for (const n of neighbours.get(id) || []) {
      if (!visible.has(n)) {
        visible.add(n);
        if (expanded.has(n)) todo.push(n);
      }
    }
  }
  const toggles = new Map();
  for (const id of visible) {
    const hidden = [...(neighbours.get(id) || [])].filter((n) => !visible.has(n)).length;
    toggles.set(id, { hidden, expanded: expanded.has(id) });
  }
  return { visible, toggles };
}

export async function renderGenealogy(section, ctx, lotArg, params, signal) {
  const direction = params.get("direction") || "both";
  const maxDepth = params.get("max_depth") || "50";
  const state = {
    view: params.get("view") || "graph",
    depth: params.get("depth"),
    expanded: new Set(),
    selected: null,
    trace: null,
    alerts: new Map(),
  };
  const header = h("div", { class: "lot-header" }, searchBox(ctx, ""));
  const status = h("p", { class: "muted", id: "trace-summary" }, "Tracing…");
  replace(section, header, status);

  let trace;
  const began = performance.now();
  try {
    trace = await api(`/api/v1/lots/${encodeURIComponent(lotArg)}/trace`, { params: { direction, max_depth: maxDepth } });
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      replace(status, notice(`No lot you may see goes by “${lotArg}”. Check the code, or search for its start.`, "error"));
      return;
    }
    throw error;
  }
  if (signal.aborted) return;
  const took = Math.round(performance.now() - began);
  state.trace = trace;
  state.depth = state.depth || defaultDepth(trace.lots);
  const rootLot = trace.lots.find((l) => l.lot_id === trace.root);

  if (ctx.features.alerts && ctx.can("alerts")) {
    try {
      const page = await api("/api/v1/alerts", { params: { status: "unresolved", limit: 500 } });
      for (const alert of page.items) {
        for (const lot of alert.lots || []) {
          if (!state.alerts.has(lot)) state.alerts.set(lot, []);
          state.alerts.get(lot).push(alert);
        }
      }
    } catch {
      // alerts decorate the picture; the genealogy stands without them
    }
  }

  // ---- header: the lot, what it also goes by, what one can do with it ----
  const title = h("div", { class: "lot-title" },
    h("h1", { id: "lot-title" }, trace.root),
    rootLot && !rootLot.redacted ? [statusPill(rootLot.status), h("span", { class: "muted" }, rootLot.item_description || rootLot.item_code || "")] : null,
    lotArg !== trace.root ? h("span", { class: "muted" }, `(found by “${lotArg}”)`) : null);
  const actions = h("div", { class: "actions" });
  if (ctx.can("recall")) {
    actions.append(h("button", { type: "button", id: "recall-this", onclick: () => ctx.navigate(`#/recalls?lot=${encodeURIComponent(trace.root)}`) }, "Mock recall…"));
  }
  if (ctx.can("export") && ctx.features.fsma204) {
    actions.append(h("button", { type: "button", onclick: () => download(`/api/v1/exports/fsma204?lot=${encodeURIComponent(trace.root)}&format=xlsx`, "fsma204.xlsx") }, "FSMA 204 spreadsheet"));
  }
  header.append(title, actions);

  const directionSelect = h("select", { id: "direction", "aria-label": "direction" },
    [["both", "backward and forward"], ["backward", "backward (where from)"], ["forward", "forward (where to)"]]
      .map(([v, label]) => h("option", { value: v, selected: v === direction }, label)));
  directionSelect.addEventListener("change", () => reroute({ direction: directionSelect.value, depth: null }));
  const depthSelect = h("select", { id: "depth", "aria-label": "depth shown" },
    DEPTHS.map((d) => h("option", { value: d, selected: d === state.depth }, d === "all" ? "all levels" : `${d} level${d === "1" ? "" : "s"}`)));
  depthSelect.addEventListener("change", () => { state.depth = depthSelect.value; state.expanded.clear(); draw(); });
  const tabs = h("div", { class: "tabs", role: "tablist" },
    ["graph", "table"].map((v) => h("button", { type: "button", role: "tab", "data-view": v, "aria-selected": String(state.view === v),
      onclick: () => { state.view = v; show(); } }, v === "graph" ? "Picture" : "Table")));
  const exportSvg = h("button", { type: "button", id: "export-svg", onclick: () => saveBlob(new Blob([svgText(svg, layout)], { type: "image/svg+xml" }), `genealogy-${fileSafe(trace.root)}.svg`) }, "SVG");
  const exportPng = h("button", { type: "button", id: "export-png", onclick: async () => saveBlob(await pngBlob(svg, layout), `genealogy-${fileSafe(trace.root)}.png`) }, "PNG");
  const fit = h("button", { type: "button", id: "fit", title: "show everything", onclick: () => panzoom.fit() }, "Fit");
  const zoomIn = h("button", { type: "button", title: "zoom in", onclick: () => panzoom.zoom(0.7) }, "+");
  const zoomOut = h("button", { type: "button", title: "zoom out", onclick: () => panzoom.zoom(1.4) }, "−");
  const toolbar = h("div", { class: "toolbar" },
    h("label", {}, "Trace ", directionSelect), h("label", {}, "Show ", depthSelect), tabs,
    h("span", { class: "graph-only" }, fit, zoomIn, zoomOut, h("span", { class: "muted" }, " Export "), exportSvg, exportPng));
  const legend = h("div", { class: "legend graph-only" },
    ["RELEASED", "QUARANTINE", "ON_HOLD", "REJECTED", "EXPIRED"].map((s) => statusPill(s)),
    h("span", { class: "pill redacted" }, "other site (redacted)"),
    h("span", { class: "muted" }, "Arrows follow the material; labels give the quantity used. Drag to move, wheel to zoom, click a lot for its details."));

  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.id = "genealogy-graph";
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Genealogy of ${trace.root}`);
  const graphBox = h("div", { class: "graph-box" }, svg);
  const tableBox = h("div", { class: "table-box", id: "genealogy-table" });
  const panel = h("aside", { class: "panel", id: "lot-panel", hidden: true });
  const body = h("div", { class: "genealogy-body" }, h("div", { class: "genealogy-main" }, graphBox, tableBox), panel);
  const counts = `${trace.lots.length} lots, ${trace.edges.length} links, ${trace.documents.length} documents · traced in ${took} ms`;
  replace(status, counts, trace.truncated ? h("strong", { class: "warn" }, " · truncated: the genealogy goes on beyond what was fetched") : null);
  section.append(toolbar, legend, body);

  let layout = null;
  let panzoom = null;
  const docsByLot = new Map();
  for (const d of trace.documents) {
    if (!docsByLot.has(d.lot_id)) docsByLot.set(d.lot_id, []);
    docsByLot.get(d.lot_id).push(d);
  }
  const alertCounts = new Map([...state.alerts].map(([lot, list]) => [lot, list.length]));

  function draw() {
    const { visible, toggles } = visibleLots(trace, state.depth, state.expanded);
    const lots = trace.lots.filter((l) => visible.has(l.lot_id));
    layout = layoutGraph(lots, trace.edges);
    drawGraph(svg, layout, { root: trace.root, selected: state.selected, toggles, alerts: alertCounts });
    const shown = `${lots.length} of ${trace.lots.length} lots shown`;
    svg.dataset.shown = String(lots.length);
    graphBox.dataset.caption = shown;
    if (!panzoom) panzoom = new PanZoom(svg, layout);
    panzoom.bounds = layout;
    renderTable();
  }

  function show() {
    for (const tab of tabs.children) tab.setAttribute("aria-selected", String(tab.dataset.view === state.view));
    section.dataset.view = state.view;
    graphBox.hidden = state.view !== "graph";
    tableBox.hidden = state.view !== "table";
    for (const node of section.querySelectorAll(".graph-only")) node.hidden = state.view !== "graph";
    if (state.view === "graph") panzoom.fit();
  }

  function renderTable() {
    const lotRows = trace.lots.map((l) => h("tr", { class: l.lot_id === state.selected ? "selected" : null, dataset: { lot: l.lot_id } },
      h("td", {}, l.redacted ? h("em", {}, "another site's lot") : h("a", { href: "#", onclick: (e) => { e.preventDefault(); select(l.lot_id); } }, l.lot_id)),
      h("td", {}, l.redacted ? "" : l.site), h("td", {}, l.item_description || l.item_code || ""),
      h("td", {}, l.redacted ? "" : statusPill(l.status)), h("td", { class: "num" }, l.depth),
      h("td", {}, (state.alerts.get(l.lot_id) || []).length || "")));
    const linkRows = edgePairs(new Set(trace.lots.map((l) => l.lot_id)), trace.edges).sort(byEnds).flatMap((pair) => pair.links.map((e) => h("tr", { dataset: { parent: e.parent_lot, child: e.child_lot } },
      h("td", {}, e.parent_lot), h("td", {}, e.child_lot), h("td", {}, e.kind), h("td", {}, e.via || ""),
      h("td", { class: "num qty-used" }, qty(e.quantity_used)), h("td", { class: "num" }, qty(e.quantity_produced)), h("td", {}, when(e.occurred_at)))));
    const docRows = trace.documents.map((d) => h("tr", {},
      h("td", {}, d.cte), h("td", {}, `${d.doc_type} ${d.doc_number}`), h("td", {}, d.lot_id), h("td", {}, d.party_name || d.party_id || ""),
      h("td", {}, d.partner_lot || ""), h("td", {}, d.location_name || d.location_id || ""), h("td", { class: "num" }, qty({ value: d.quantity, unit: d.unit })), h("td", {}, when(d.occurred_at))));
    replace(tableBox,
      h("h2", {}, `Lots (${trace.lots.length})`),
      table(["Lot", "Site", "Item", "Status", "Steps away", "Open alerts"], lotRows, { id: "lots-table" }),
      h("h2", {}, `Links (${trace.edges.length})`),
      table(["From lot", "To lot", "Kind", "Via", "Used", "Produced", "When"], linkRows, { id: "links-table" }),
      h("h2", {}, `Documents (${trace.documents.length})`),
      table(["CTE", "Document", "Lot", "Party", "Partner lot", "Location", "Quantity", "When"], docRows, { id: "documents-table" }));
  }

  svg.addEventListener("click", (event) => {
    const toggle = event.target.closest(".toggle");
    if (toggle) {
      const id = toggle.dataset.lot;
      if (state.expanded.has(id)) state.expanded.delete(id);
      else state.expanded.add(id);
      draw();
      return;
    }
    const node = event.target.closest(".node");
    if (node) select(node.dataset.lot);
  });
  svg.addEventListener("keydown", (event) => {
    const node = event.target.closest?.(".node");
    if (node && (event.key === "Enter" || event.key === " ")) { event.preventDefault(); select(node.dataset.lot); }
  });

  async function select(id) {
    state.selected = id;
    for (const n of svg.querySelectorAll(".node.selected")) n.classList.remove("selected");
    svg.querySelector(`.node[data-lot="${CSS.escape(id)}"]`)?.classList.add("selected");
    for (const e of svg.querySelectorAll(".edge")) e.classList.toggle("selected", e.dataset.parent === id || e.dataset.child === id);
    for (const row of tableBox.querySelectorAll("#lots-table tr[data-lot]")) row.classList.toggle("selected", row.dataset.lot === id);
    panel.hidden = false;
    await renderPanel(panel, ctx, trace, id, docsByLot.get(id) || [], state.alerts.get(id) || [], signal);
  }

  function reroute(change) {
    const next = new URLSearchParams({ direction, max_depth: maxDepth, ...(state.depth ? { depth: state.depth } : {}), view: state.view });
    for (const [k, v] of Object.entries(change)) {
      if (v === null) next.delete(k); else next.set(k, v);
    }
    ctx.navigate(`#/lot/${encodeURIComponent(trace.root)}?${next}`);
  }

  draw();
  show();
  const onResize = () => { if (state.view === "graph") panzoom.fit(); };
  window.addEventListener("resize", onResize, { signal });
}

/** Link pairs by parent lot, then child lot: the API lists a backward trace's links by child. */
function byEnds(a, b) {
  return a.parent < b.parent ? -1 : a.parent > b.parent ? 1 : a.child < b.child ? -1 : a.child > b.child ? 1 : 0;
}

function fileSafe(text) {
  return text.replace(/[^A-Za-z0-9._-]+/g, "_");
}

async function download(path, fallback) {
  const { blob, filename } = await fetchFile(path);
  saveBlob(blob, filename || fallback);
}

/** The side panel: one lot's identity, status history, QC results, documents, events. */
async function renderPanel(panel, ctx, trace, id, documents, alerts, signal) {
  const lot = trace.lots.find((l) => l.lot_id === id);
  const close = h("button", { type: "button", class: "close", "aria-label": "close", onclick: () => { panel.hidden = true; } }, "×");
  if (!lot || lot.redacted) {
    replace(panel, close, h("h2", {}, "Another site's lot"),
      h("p", {}, "This lot belongs to a site your key does not cover. It keeps its place in the genealogy; its identity, item, status, quantities and documents stay hidden."));
    return;
  }
  replace(panel, close, h("h2", { id: "panel-title" }, id), h("p", { class: "muted" }, "Loading…"));
  const path = `/api/v1/lots/${encodeURIComponent(id)}`;
  const [card, events] = await Promise.all([api(path), api(`${path}/events`, { params: { limit: 500 } })]);
  if (signal.aborted || panel.querySelector("#panel-title")?.textContent !== id) return;
  const qc = events.items.filter((e) => QC_TYPES.has(e.event_type));
  const actions = h("div", { class: "actions" },
    id !== trace.root ? h("a", { class: "button", href: `#/lot/${encodeURIComponent(id)}` }, "Trace from this lot") : null,
    ctx.can("recall") ? h("a", { class: "button", href: `#/recalls?lot=${encodeURIComponent(id)}` }, "Mock recall…") : null);
  const eventRows = events.items.map((e) => h("tr", { class: e.voided_by ? "voided" : null, title: e.voided_by ? `voided by ${e.voided_by}` : null },
    h("td", {}, when(e.occurred_at)), h("td", {}, e.event_type, e.voided_by ? " (voided)" : ""), h("td", {}, e.system)));
  const incoming = trace.edges.filter((e) => e.child_lot === id);
  const outgoing = trace.edges.filter((e) => e.parent_lot === id);
  replace(panel, close,
    h("h2", { id: "panel-title" }, id),
    h("p", {}, statusPill(card.status), " ", card.item_description || "", card.item_code ? ` (${card.item_code})` : "", ` · site ${card.site}`),
    actions,
    alerts.length ? part("Open alerts", h("ul", { class: "alerts" }, alerts.map((a) => h("li", { class: `sev-${a.severity}` },
      h("strong", {}, a.severity.toLowerCase()), ` ${a.rule}: ${a.summary} `, h("a", { href: `#/ops?lot=${encodeURIComponent(id)}` }, "triage…"))))) : null,
    part("Also known as", card.aliases.length ? h("ul", { class: "plain" }, card.aliases.map((a) => h("li", {}, h("code", {}, a.alias), ` ${a.kind.replace(/_/g, " ").toLowerCase()}`))) : h("p", { class: "muted" }, "no other names")),
    part("Made from / went into", table(["", "Lot", "Quantity", "Kind"], [
      ...incoming.map((e) => h("tr", {}, h("td", {}, "from"), h("td", {}, e.parent_lot), h("td", { class: "num" }, qty(e.quantity_used)), h("td", {}, e.kind))),
      ...outgoing.map((e) => h("tr", {}, h("td", {}, "into"), h("td", {}, e.child_lot), h("td", { class: "num" }, qty(e.quantity_used)), h("td", {}, e.kind))),
    ], { id: "panel-links" })),
    part("Status history", card.status_history.length ? table(["When", "Status", "Reason", "By"], card.status_history.map((s) => h("tr", {},
      h("td", {}, when(s.occurred_at)), h("td", {}, statusPill(s.status)), h("td", {}, s.reason_code || ""), h("td", {}, s.actor || ""))), { id: "panel-status" }) : h("p", { class: "muted" }, "no status changes recorded")),
    part("QC results", qc.length ? table(["When", "Sample", "Test", "Result", "Spec", "Pass"], qc.map((e) => {
      const x = e.event;
      const spec = x.spec_min || x.spec_max ? `${x.spec_min ?? ""}–${x.spec_max ?? ""} ${x.result_unit || ""}` : "";
      return h("tr", { class: x.passed === false ? "fail" : null }, h("td", {}, when(e.occurred_at)), h("td", {}, x.sample_id || ""),
        h("td", {}, e.event_type === "QcSampleTaken" ? "sample taken" : x.test_code), h("td", {}, x.result ?? ""), h("td", {}, spec),
        h("td", {}, x.passed === undefined ? "" : x.passed ? "yes" : "NO"));
    }), { id: "panel-qc" }) : h("p", { class: "muted" }, "no QC samples or results")),
    part("Documents", documents.length ? table(["CTE", "Document", "Party", "Quantity", "When"], documents.map((d) => h("tr", {},
      h("td", {}, d.cte), h("td", {}, `${d.doc_type} ${d.doc_number}`), h("td", {}, d.party_name || d.party_id || ""),
      h("td", { class: "num" }, qty({ value: d.quantity, unit: d.unit })), h("td", {}, when(d.occurred_at)))), { id: "panel-documents" }) : h("p", { class: "muted" }, "no receipts, shipments or transfers")),
    part(`Events (${events.total})`, table(["When", "Event", "System"], eventRows, { id: "panel-events" })));
}

function part(title, ...content) {
  return h("section", { class: "panel-section" }, h("h3", {}, title), content);
}
