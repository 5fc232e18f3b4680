// Lot search by any alias (enterprise id, site lot code, supplier lot, licence plate),
// with suggestions while typing; Enter or a click opens the lot's genealogy.

import { api } from "./api.js";
import { debounce, h, notice, replace, statusPill, table } from "./util.js";

/** The search box, reusable in the genealogy page's header. */
export function searchBox(ctx, initial = "") {
  const input = h("input", {
    type: "search", id: "lot-search", placeholder: "Lot code, supplier lot, licence plate or SITE:CODE",
    autocomplete: "off", role: "combobox", "aria-expanded": "false", "aria-controls": "lot-suggestions",
    "aria-label": "Search lots by any alias", value: initial,
  });
  const list = h("ul", { id: "lot-suggestions", role: "listbox", class: "suggestions", hidden: true });
  let items = [];
  let active = -1;

  const open = (lot) => ctx.navigate(`#/lot/${encodeURIComponent(lot)}`);
  const show = () => {
    list.hidden = items.length === 0;
    input.setAttribute("aria-expanded", String(!list.hidden));
    replace(list, items.map((item, i) => h("li", {
      role: "option", class: i === active ? "active" : null, "aria-selected": String(i === active),
      dataset: { lot: item.lot_id },
      onmousedown: (event) => { event.preventDefault(); open(item.lot_id); },
    },
    h("span", { class: "lot-id" }, item.lot_id),
    h("span", { class: "muted" }, item.item_description || item.item_code || ""),
    statusPill(item.status),
    h("span", { class: "aliases" }, item.aliases.map((a) => a.alias).join(", ")))));
  };
  const suggest = debounce(async () => {
    const q = input.value.trim();
    if (!q) { items = []; show(); return; }
    try {
      const page = await api("/api/v1/lots", { params: { q, limit: 10 } });
      if (input.value.trim() !== q) return; // typed on meanwhile
      items = page.items;
      active = -1;
      show();
    } catch {
      items = [];
      show();
    }
  }, 120);

  input.addEventListener("input", suggest);
  input.addEventListener("blur", () => { list.hidden = true; });
  input.addEventListener("focus", () => { if (items.length) show(); });
  input.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      if (!items.length) return;
      active = (active + (event.key === "ArrowDown" ? 1 : -1) + items.length) % items.length;
      show();
    } else if (event.key === "Enter") {
      event.preventDefault();
      const q = input.value.trim();
      if (active >= 0) open(items[active].lot_id);
      else if (q) open(q); // the API resolves any alias, also one not (yet) suggested
    } else if (event.key === "Escape") {
      list.hidden = true;
    }
  });
  return h("div", { class: "search" }, input, list);
}

/** The home page: search, and the lots matching what was searched last. */
export async function renderSearch(section, ctx, params) {
  const q = params.get("q") || "";
  const box = searchBox(ctx, q);
  const results = h("div", { id: "search-results" });
  const form = h("form", { class: "search-form", onsubmit: (e) => e.preventDefault() }, box);
  replace(section,
    h("h1", {}, "Find a lot"),
    h("p", { class: "muted" }, "Type any name a lot goes by: the enterprise id (SITE:CODE), a site's lot code, the supplier's lot or a licence plate."),
    form, results);
  box.querySelector("input").focus();
  if (ctx.features.stats) {
    try {
      const stats = await api("/api/v1/stats");
      results.append(h("p", { class: "muted" },
        `${stats.lots} lots in the hub: ${Object.entries(stats.by_site).map(([s, n]) => `${s} ${n}`).join(", ")}.`));
    } catch {
      // counts are a convenience
    }
  }
  if (q) {
    const page = await api("/api/v1/lots", { params: { q, limit: 50 } });
    results.append(page.items.length ? table(["Lot", "Site", "Item", "Status", "Aliases"],
      page.items.map((item) => h("tr", {},
        h("td", {}, h("a", { href: `#/lot/${encodeURIComponent(item.lot_id)}` }, item.lot_id)),
        h("td", {}, item.site), h("td", {}, item.item_description || item.item_code || ""),
        h("td", {}, statusPill(item.status)),
        h("td", {}, item.aliases.map((a) => a.alias).join(", "))))) : notice(`No lot goes by ${q}.`));
  }
}
