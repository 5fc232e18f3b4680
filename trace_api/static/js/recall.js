// Mock recalls: start one from lots or a supplier, read the packet (affected lots, where
// they are now, customers, mass balance with residuals highlighted, gaps, time taken),
// download it and the FSMA 204 spreadsheet.

import { api, fetchFile } from "./api.js";
import { h, notice, replace, saveBlob, statusPill, table, trimDecimal, when } from "./util.js";

const OUT = ["consumed", "shipped", "transferred_out", "scrapped"];

export async function renderRecalls(section, ctx, params, signal) {
  const lot = params.get("lot") || "";
  const supplier = params.get("supplier") || "";
  const mode = supplier ? "supplier" : "lots";
  const lotsInput = h("input", { id: "recall-lots", type: "text", value: lot, placeholder: "lot ids or any alias, comma-separated" });
  const supplierInput = h("input", { id: "recall-supplier", type: "text", value: supplier, placeholder: "supplier id or name, as on the receipts" });
  const modeInputs = [["lots", "Lots"], ["supplier", "Supplier"]].map(([value, label]) => h("label", { class: "radio" },
    h("input", { type: "radio", name: "recall-mode", value, checked: value === mode, onchange: sync }), ` ${label}`));
  const error = h("p", { class: "error", role: "alert", id: "recall-error" });
  const running = h("p", { class: "muted", id: "recall-running", hidden: true });
  const start = h("button", { type: "submit", class: "primary", id: "start-recall" }, "Start mock recall");
  const form = h("form", { class: "recall-form", id: "recall-form" },
    h("fieldset", {}, h("legend", {}, "Recall from"), modeInputs),
    h("label", { class: "lots-field" }, "Lots ", lotsInput),
    h("label", { class: "supplier-field" }, "Supplier ", supplierInput),
    start, running, error);
  function sync() {
    const chosen = form.querySelector("input[name=recall-mode]:checked").value;
    form.querySelector(".lots-field").hidden = chosen !== "lots";
    form.querySelector(".supplier-field").hidden = chosen !== "supplier";
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = form.querySelector("input[name=recall-mode]:checked").value;
    const body = chosen === "lots"
      ? { lots: lotsInput.value.split(/[,\s]+/).map((x) => x.trim()).filter(Boolean) }
      : { supplier: supplierInput.value.trim() };
    if ((body.lots && !body.lots.length) || (chosen === "supplier" && !body.supplier)) {
      error.textContent = chosen === "lots" ? "Name at least one lot." : "Name the supplier.";
      return;
    }
    error.textContent = "";
    start.disabled = true;
    running.hidden = false;
    const began = performance.now();
    const tick = setInterval(() => { running.textContent = `Running… ${((performance.now() - began) / 1000).toFixed(1)} s`; }, 100);
    try {
      const packet = await api("/api/v1/recalls", { method: "POST", body });
      ctx.navigate(`#/recall/${encodeURIComponent(packet.recall_id)}`);
    } catch (e) {
      error.textContent = e.message;
    } finally {
      clearInterval(tick);
      start.disabled = false;
      running.hidden = true;
    }
  });
  const list = h("div", { id: "recall-list" });
  replace(section, h("h1", {}, "Mock recalls"),
    h("p", { class: "muted" }, "A mock recall finds every lot made from the suspect lots, where each is now, which customers received it, and whether the mass balance closes."),
    form, h("h2", {}, "Earlier recalls"), list);
  sync();
  const page = await api("/api/v1/recalls", { params: { limit: 50 } });
  if (signal.aborted) return;
  replace(list, page.items.length ? table(["Started", "By", "Request", "Affected lots", "Took"], page.items.map((r) => h("tr", {},
    h("td", {}, h("a", { href: `#/recall/${encodeURIComponent(r.recall_id)}` }, when(r.created_at))),
    h("td", {}, r.created_by || ""), h("td", {}, describeRequest(r.request)), h("td", { class: "num" }, r.affected_lots),
    h("td", { class: "num" }, `${r.duration_ms} ms`)))) : notice("No recall has been run yet."));
}

function describeRequest(request) {
  if (request.lots && request.lots.length) return `lots ${request.lots.join(", ")}`;
  if (request.supplier) return `supplier ${request.supplier}`;
  if (request.item) return `item ${request.item} ${request.date_from || ""}–${request.date_to || ""}`;
  return "";
}

async function download(path, fallback) {
  const { blob, filename } = await fetchFile(path);
  saveBlob(blob, filename || fallback);
}

function num(value) {
  return value === null || value === undefined ? "" : trimDecimal(value);
}

export async function renderRecall(section, ctx, recallId, signal) {
  replace(section, h("p", { class: "muted" }, "Loading the recall packet…"));
  const packet = await api(`/api/v1/recalls/${encodeURIComponent(recallId)}`);
  if (signal.aborted) return;
  const s = packet.summary;
  const tile = (label, value, kind = "") => h("div", { class: `tile ${kind}`, dataset: { tile: label } }, h("span", { class: "value" }, value), h("span", { class: "label" }, label));
  const tiles = h("div", { class: "tiles", id: "recall-summary" },
    tile("affected lots", s.affected_lots), tile("suspect lots", s.seed_lots), tile("customers", s.customers),
    tile("shipments", s.shipments), tile("in transit", s.in_transit, s.in_transit ? "warn" : ""),
    tile("data gaps", s.gaps, s.gaps ? "bad" : "good"),
    tile("mass balance", s.mass_balance_closes ? "closes" : "open", s.mass_balance_closes ? "good" : "bad"),
    tile("time taken", `${packet.duration_ms} ms`));
  const exports = h("div", { class: "actions", id: "recall-exports" });
  if (ctx.can("export")) {
    const base = `/api/v1/recalls/${encodeURIComponent(packet.recall_id)}/export`;
    const formats = ["csv", "xlsx", ...(ctx.features.recallPdf ? ["pdf"] : [])];
    for (const format of formats) {
      exports.append(h("button", { type: "button", "data-format": format, onclick: () => download(`${base}?format=${format}`, `recall-${packet.recall_id}.${format}`) }, `Packet ${format.toUpperCase()}`));
    }
    const seeds = packet.lots.filter((l) => l.seed && !l.redacted).map((l) => l.lot_id);
    if (ctx.features.fsma204 && seeds.length) {
      const pick = h("select", { id: "fsma-lot", "aria-label": "FSMA 204 spreadsheet of lot" }, seeds.map((id) => h("option", { value: id }, id)));
      exports.append(h("span", { class: "fsma" }, "FSMA 204 of ", pick, " ",
        h("button", { type: "button", id: "fsma204-xlsx", onclick: () => download(`/api/v1/exports/fsma204?lot=${encodeURIComponent(pick.value)}&format=xlsx`, "fsma204.xlsx") }, "XLSX"),
        h("button", { type: "button", id: "fsma204-csv", onclick: () => download(`/api/v1/exports/fsma204?lot=${encodeURIComponent(pick.value)}&format=csv`, "fsma204.csv") }, "CSV")));
    }
  }
  const lotRows = packet.lots.flatMap((lot) => {
    const balances = lot.balances.length ? lot.balances : [null];
    return balances.map((b, i) => {
      const residual = b && Number(b.residual) !== 0;
      return h("tr", { class: [lot.seed ? "seed" : "", residual ? "residual" : ""].join(" ").trim() || null, dataset: { lot: lot.lot_id } },
        i === 0 ? h("td", { rowspan: balances.length }, lot.redacted ? h("em", {}, "another site's lot") : h("a", { href: `#/lot/${encodeURIComponent(lot.lot_id)}` }, lot.lot_id), lot.seed ? h("span", { class: "pill seed" }, "suspect") : null) : null,
        i === 0 ? h("td", { rowspan: balances.length }, lot.redacted ? "" : lot.site) : null,
        i === 0 ? h("td", { rowspan: balances.length }, lot.item_description || lot.item_code || "") : null,
        i === 0 ? h("td", { rowspan: balances.length }, lot.redacted ? "" : statusPill(lot.status)) : null,
        i === 0 ? h("td", { rowspan: balances.length }, lot.last_location || "") : null,
        i === 0 ? h("td", { rowspan: balances.length, class: "num" }, lot.suspect_share === null || lot.suspect_share === undefined ? "" : `${(Number(lot.suspect_share) * 100).toFixed(1)} %`) : null,
        h("td", { class: "num" }, b ? `${num(b.inflow)}` : ""),
        h("td", { class: "num" }, b ? num(OUT.reduce((sum, k) => sum + Number(b[k] || 0), 0).toFixed(6)) : ""),
        h("td", { class: "num" }, b ? num(b.adjusted) : ""),
        h("td", { class: "num" }, b ? num(b.on_hand) : ""),
        h("td", { class: `num${residual ? " residual-cell" : ""}` }, b ? num(b.residual) : "no quantity events"),
        h("td", {}, b ? b.unit : ""));
    });
  });
  const shipments = packet.shipments.map((x) => h("tr", {},
    h("td", {}, x.customer || ""), h("td", {}, x.ship_to || ""), h("td", {}, x.document || ""), h("td", {}, x.lot_id),
    h("td", {}, when(x.shipped_at)), h("td", { class: "num" }, `${num(x.quantity)} ${x.unit}`), h("td", { class: "num" }, num(x.suspect_kg))));
  const transit = packet.in_transit.map((x) => h("tr", {}, h("td", {}, x.lot_id), h("td", {}, x.transfer_id || ""), h("td", {}, when(x.shipped_at)),
    h("td", {}, x.to || ""), h("td", { class: "num" }, `${num(x.quantity)} ${x.unit || ""}`)));
  const gaps = packet.gaps.map((g) => h("tr", {}, h("td", {}, g.lot_id), h("td", {}, g.message)));
  const customers = [...new Set(packet.shipments.map((x) => x.customer))];
  replace(section,
    h("h1", {}, "Mock recall ", h("small", { class: "muted" }, describeRequest(packet.request))),
    h("p", { class: "muted" }, `Run ${when(packet.created_at)} · recall ${packet.recall_id}`),
    tiles, exports,
    h("h2", {}, `Customers reached (${customers.length})`),
    customers.length ? h("ul", { class: "customers", id: "recall-customers" }, customers.map((c) => h("li", {}, c))) : notice("No affected lot reached a customer."),
    h("h2", {}, `Affected lots (${packet.lots.length})`),
    h("p", { class: "muted" }, "Mass balance per unit: in = received + produced + returned; out = consumed + shipped + transferred out + scrapped. A residual (highlighted) is material that left a lot without ever entering it: an input event the hub never received."),
    table(["Lot", "Site", "Item", "Status", "Where now", "Suspect share", "In", "Out", "Adjusted", "On hand", "Residual", "Unit"], lotRows, { id: "recall-lots" }),
    h("h2", {}, `Shipments (${packet.shipments.length})`),
    packet.shipments.length ? table(["Customer", "Ship to", "Document", "Lot", "Shipped", "Quantity", "Suspect kg"], shipments, { id: "recall-shipments" }) : notice("No shipments."),
    packet.in_transit.length ? [h("h2", {}, `In transit (${packet.in_transit.length})`), table(["Lot", "Transfer", "Shipped", "To", "Quantity"], transit, { id: "recall-transit" })] : null,
    h("h2", {}, `Data gaps (${packet.gaps.length})`),
    packet.gaps.length ? table(["Lot", "What is missing"], gaps, { id: "recall-gaps" }) : notice("No data gaps: every affected lot's balance closes.", "good"));
}
