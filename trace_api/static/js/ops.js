// Operations: KPI tiles, integration health per site and connector, and integrity alerts
// with filters, acknowledge and resolve. Each part appears when the API offers it and
// the user's role may see it.

import { api, paramEnum } from "./api.js";
import { duration, h, notice, replace, table, when } from "./util.js";

export async function renderOps(section, ctx, params, signal) {
  const tiles = h("div", { class: "tiles", id: "kpis" });
  const connectors = h("div", { id: "connectors" });
  const alerts = h("div", { id: "alerts" });
  replace(section, h("h1", {}, "Operations"), tiles);
  const parts = [loadTiles(tiles, ctx)];
  const refreshTiles = () => loadTiles(tiles, ctx);
  if (ctx.features.connectors && ctx.can("operate")) {
    section.append(h("h2", {}, "Integration health"), connectors);
    parts.push(loadConnectors(connectors));
  }
  if (ctx.features.alerts && ctx.can("alerts")) {
    section.append(h("h2", {}, "Integrity alerts"), alerts);
    parts.push(renderAlerts(alerts, ctx, params, signal, refreshTiles));
  } else if (!ctx.features.alerts) {
    section.append(h("h2", {}, "Integrity alerts"), notice("This hub's API has no alerts yet."));
  }
  await Promise.all(parts);
}

function tile(label, value, kind = "", href = null) {
  const body = [h("span", { class: "value" }, value), h("span", { class: "label" }, label)];
  return href ? h("a", { class: `tile ${kind}`, href, dataset: { tile: label } }, body)
    : h("div", { class: `tile ${kind}`, dataset: { tile: label } }, body);
}

async function loadTiles(tiles, ctx) {
  const jobs = [];
  if (ctx.features.stats && ctx.can("read")) {
    jobs.push(api("/api/v1/stats").then((s) => [
      tile("lots", s.lots),
      tile("on hold", s.by_status.ON_HOLD || 0, s.by_status.ON_HOLD ? "warn" : ""),
      tile("in quarantine", s.by_status.QUARANTINE || 0),
      tile("sites", Object.keys(s.by_site).length),
    ]));
  }
  if (ctx.features.kpis && ctx.can("read")) {
    jobs.push(api("/api/v1/kpis").then((k) => {
      const share = k.genealogy_completeness.share;
      const recall = k.mock_recall_ms;
      return [
        tile("shipped lots traced to a supplier", share === null ? "–" : `${(Number(share) * 100).toFixed(1)} %`,
          share === null ? "" : Number(share) < 1 ? "warn" : "good"),
        tile("mock recall p90", recall.p90 === null ? "–" : `${Math.round(recall.p90)} ms`),
      ];
    }));
  }
  if (ctx.can("recall")) {
    jobs.push(api("/api/v1/recalls", { params: { limit: 1 } }).then((r) => [tile("mock recalls", r.total, "", "#/recalls")]));
  }
  if (ctx.features.alerts && ctx.can("alerts")) {
    jobs.push(Promise.all([
      api("/api/v1/alerts", { params: { status: "open", limit: 1 } }),
      api("/api/v1/alerts", { params: { status: "unresolved", severity: "CRITICAL", limit: 1 } }),
    ]).then(([open, critical]) => [
      tile("open alerts", open.total, open.total ? "warn" : "good"),
      tile("critical unresolved", critical.total, critical.total ? "bad" : "good"),
    ]));
  }
  if (ctx.features.connectors && ctx.can("operate")) {
    jobs.push(api("/api/v1/connectors").then((c) => {
      const failing = c.items.filter((x) => x.health === "error").length;
      return [tile("connectors", c.total), tile("connectors failing", failing, failing ? "bad" : "good")];
    }));
  }
  const results = await Promise.allSettled(jobs);
  replace(tiles, results.filter((r) => r.status === "fulfilled").map((r) => r.value));
}

async function loadConnectors(box) {
  const page = await api("/api/v1/connectors");
  if (!page.items.length) {
    replace(box, notice("No connector has reported yet (connectors report once they run)."));
    return;
  }
  const bySite = new Map();
  for (const c of page.items) {
    const site = c.site || "unknown site";
    if (!bySite.has(site)) bySite.set(site, []);
    bySite.get(site).push(c);
  }
  const rows = [];
  for (const site of [...bySite.keys()].sort()) {
    rows.push(h("tr", { class: "group" }, h("th", { colspan: 10, scope: "rowgroup" }, `Site ${site}`)));
    for (const c of bySite.get(site)) {
      rows.push(h("tr", { class: `health-${c.health}`, dataset: { connector: c.connector } },
        h("td", {}, c.connector), h("td", {}, c.system || ""),
        h("td", {}, h("span", { class: `pill health ${c.health}` }, c.health)),
        h("td", { title: c.last_success || "" }, c.last_success ? `${duration(c.seconds_since_success)} ago` : "never"),
        h("td", { class: "num" }, c.lag_s === null || c.lag_s === undefined ? "–" : duration(c.lag_s)),
        h("td", { class: "num" }, c.records_read), h("td", { class: "num" }, c.events_published),
        h("td", { class: `num${c.dead_lettered ? " warn" : ""}` }, c.dead_lettered),
        h("td", { class: "num" }, c.consecutive_errors),
        h("td", { class: "error-text" }, c.last_error || "")));
    }
  }
  replace(box, table(["Connector", "System", "Health", "Last success", "Lag", "Read", "Published", "Dead-lettered", "Errors in a row", "Last error"], rows, { id: "connectors-table" }));
}

async function renderAlerts(box, ctx, params, signal, onChange) {
  const select = (id, label, values, chosen) => h("label", {}, `${label} `, h("select", { id, name: id },
    values.map(([v, text]) => h("option", { value: v, selected: v === chosen }, text))));
  const statuses = paramEnum("/api/v1/alerts", "status");
  const filters = h("form", { class: "filters", id: "alert-filters" },
    select("alert-status", "Status", [["", "any"], ...statuses.map((s) => [s, s])], params.get("status") || (statuses.includes("unresolved") ? "unresolved" : "")),
    select("alert-severity", "Severity", [["", "any"], ...paramEnum("/api/v1/alerts", "severity").map((s) => [s, s.toLowerCase()])], params.get("severity") || ""),
    select("alert-rule", "Rule", [["", "any"], ...paramEnum("/api/v1/alerts", "rule").map((s) => [s, s])], params.get("rule") || ""),
    h("label", {}, "Site ", h("input", { id: "alert-site", size: 6, value: params.get("site") || "" })),
    h("label", {}, "Lot ", h("input", { id: "alert-lot", size: 18, value: params.get("lot") || "", placeholder: "id or alias" })),
    h("button", { type: "submit" }, "Filter"));
  const list = h("div", { id: "alert-list" });
  replace(box, filters, list);
  const load = async () => {
    const value = (id) => filters.querySelector(`#${id}`).value.trim();
    try {
      const page = await api("/api/v1/alerts", { params: {
        status: value("alert-status"), severity: value("alert-severity"), rule: value("alert-rule"),
        site: value("alert-site"), lot: value("alert-lot"), limit: 200,
      } });
      if (signal.aborted) return;
      replace(list, page.items.length ? [
        h("p", { class: "muted" }, `${page.total} alert(s)${page.total > page.items.length ? `, the newest ${page.items.length} shown` : ""}`),
        table(["Severity", "Rule", "What", "Lots", "Detected", "Status", ""], page.items.map((a) => alertRow(a, ctx, changed)), { id: "alerts-table" }),
      ] : notice("No alert matches."));
    } catch (error) {
      replace(list, notice(error.message, "error"));
    }
  };
  const changed = () => { load(); onChange(); };
  filters.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  filters.addEventListener("change", () => load());
  await load();
}

function alertRow(a, ctx, reload) {
  const lots = (a.lots || []).map((lot) => (lot.startsWith("redacted-") ? h("em", {}, "other site") : h("a", { href: `#/lot/${encodeURIComponent(lot)}` }, lot)));
  const trail = [a.acknowledged ? `acknowledged by ${a.acknowledged.by}${a.acknowledged.comment ? `: “${a.acknowledged.comment}”` : ""}` : null,
    a.resolved ? `resolved by ${a.resolved.by}: “${a.resolved.comment}”` : null].filter(Boolean);
  const actions = h("td", { class: "row-actions" });
  if (ctx.can("triage")) {
    if (a.status === "open" && ctx.features.alertAck) {
      actions.append(h("button", { type: "button", class: "ack", onclick: () => act(a, "ack", reload) }, "Acknowledge"));
    }
    if ((a.status === "open" || a.status === "acknowledged") && ctx.features.alertResolve) {
      actions.append(h("button", { type: "button", class: "resolve", onclick: () => act(a, "resolve", reload) }, "Resolve"));
    }
  }
  return h("tr", { class: `sev-${a.severity}`, dataset: { alert: a.alert_id, status: a.status } },
    h("td", {}, h("span", { class: `pill sev ${a.severity}` }, a.severity.toLowerCase())),
    h("td", {}, a.rule), h("td", {}, a.summary, trail.length ? h("div", { class: "muted trail" }, trail.join(" · ")) : null),
    h("td", {}, lots.flatMap((x, i) => (i ? [", ", x] : [x]))), h("td", {}, when(a.detected_at)),
    h("td", { class: "alert-status" }, a.status), actions);
}

/** Ask for a comment, then acknowledge or resolve the alert. */
function act(alert, action, reload) {
  const dialog = document.getElementById("comment-dialog");
  const form = document.getElementById("comment-form");
  const text = document.getElementById("comment-text");
  const error = document.getElementById("comment-error");
  document.getElementById("comment-title").textContent = action === "ack" ? "Acknowledge alert" : "Resolve alert";
  document.getElementById("comment-subject").textContent = alert.summary;
  text.value = "";
  text.placeholder = action === "ack" ? "optional: who looks at it, what happens next" : "what was done (required)";
  error.textContent = "";
  const submit = async (event) => {
    event.preventDefault();
    if (action === "resolve" && !text.value.trim()) {
      error.textContent = "Say what resolved the alert.";
      return;
    }
    try {
      await api(`/api/v1/alerts/${encodeURIComponent(alert.alert_id)}/${action}`, { method: "POST", body: { comment: text.value.trim() } });
    } catch (e) {
      error.textContent = e.message;
      return;
    }
    cleanup();
    dialog.close();
    reload();
  };
  const cancel = () => { cleanup(); dialog.close(); };
  const cleanup = () => {
    form.removeEventListener("submit", submit);
    document.getElementById("comment-cancel").removeEventListener("click", cancel);
  };
  form.addEventListener("submit", submit);
  document.getElementById("comment-cancel").addEventListener("click", cancel);
  dialog.showModal();
  text.focus();
}
