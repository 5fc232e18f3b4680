// Entry point: sign-in, navigation and the hash router (#/, #/lot/<id>, #/recalls,
// #/recall/<id>, #/ops). Every page renders into a fresh section from the JSON API.

import { api, apiFeatures, ApiError, getKey, setKey } from "./api.js";
import { h, notice, replace } from "./util.js";
import { renderSearch } from "./search.js";
import { renderGenealogy } from "./genealogy.js";
import { renderRecalls, renderRecall } from "./recall.js";
import { renderOps } from "./ops.js";

const view = document.getElementById("view");
const ctx = {
  who: null,
  features: null,
  can(permission) {
    return Boolean(this.who && this.who.permissions && this.who.permissions.includes(permission));
  },
  navigate(hash) {
    if (window.location.hash === hash) route();
    else window.location.hash = hash;
  },
};
let pageAbort = null;

async function loadWho() {
  try {
    ctx.who = await api("/api/v1/whoami", { quiet: true });
  } catch (error) {
    ctx.who = null;
    if (!(error instanceof ApiError) || error.status !== 401) throw error;
  }
  const who = document.getElementById("who");
  const signin = document.getElementById("signin-button");
  const signout = document.getElementById("signout-button");
  if (ctx.who === null) {
    replace(who, "not signed in");
  } else if (ctx.who.local_mode) {
    replace(who, h("span", { class: "pill local", title: "no API keys configured: full access, loopback only" }, "local mode"));
  } else {
    const site = ctx.who.site ? ` · ${ctx.who.site}` : "";
    replace(who, `${ctx.who.user} · ${ctx.who.role.replace("_", " ").toLowerCase()}${site}`);
  }
  signin.hidden = ctx.who !== null;
  signout.hidden = ctx.who === null || ctx.who.local_mode;
  for (const link of document.querySelectorAll("#nav a[data-nav]")) {
    const needs = { search: "read", recalls: "recall", ops: null }[link.dataset.nav];
    link.hidden = ctx.who === null || (needs !== null && !ctx.can(needs));
  }
}

function highlightNav(name) {
  for (const link of document.querySelectorAll("#nav a[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === name);
  }
}

async function route() {
  if (pageAbort) pageAbort.abort();
  pageAbort = new AbortController();
  const signal = pageAbort.signal;
  const section = h("section", { class: "page" });
  replace(view, section);
  if (ctx.who === null) {
    highlightNav(null);
    replace(section, h("div", { class: "welcome" },
      h("h1", {}, "lothub"),
      h("p", {}, "Lot genealogy, mock recalls and integration health across every plant."),
      h("button", { class: "primary", type: "button", onclick: openSignIn }, "Sign in with your API key")));
    return;
  }
  const hash = decodeURIComponent(window.location.hash.replace(/^#\/?/, ""));
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  const [page, ...rest] = path.split("/");
  const arg = rest.join("/");
  try {
    if (page === "lot" && arg) {
      highlightNav("search");
      await renderGenealogy(section, ctx, arg, params, signal);
    } else if (page === "recalls") {
      highlightNav("recalls");
      await renderRecalls(section, ctx, params, signal);
    } else if (page === "recall" && arg) {
      highlightNav("recalls");
      await renderRecall(section, ctx, arg, signal);
    } else if (page === "ops") {
      highlightNav("ops");
      await renderOps(section, ctx, params, signal);
    } else if (!ctx.can("read")) {
      ctx.navigate("#/ops");
    } else {
      highlightNav("search");
      await renderSearch(section, ctx, params, signal);
    }
  } catch (error) {
    if (signal.aborted) return;
    section.append(notice(error.message, "error"));
  }
}

// ---- sign-in -------------------------------------------------------------------------

const dialog = document.getElementById("signin-dialog");

function openSignIn() {
  document.getElementById("signin-error").textContent = "";
  document.getElementById("signin-key").value = "";
  if (!dialog.open) dialog.showModal();
}

document.getElementById("signin-button").addEventListener("click", openSignIn);
document.getElementById("signin-cancel").addEventListener("click", () => dialog.close());
document.getElementById("signout-button").addEventListener("click", async () => {
  setKey(null);
  await loadWho();
  route();
});
document.getElementById("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const previous = getKey();
  setKey(document.getElementById("signin-key").value.trim());
  await loadWho();
  if (ctx.who === null) {
    setKey(previous);
    document.getElementById("signin-error").textContent = "This key is not valid on this hub.";
    await loadWho();
    return;
  }
  dialog.close();
  route();
});
window.addEventListener("lothub:unauthorized", () => {
  if (getKey()) setKey(null);
  loadWho().then(() => route());
});

window.addEventListener("hashchange", route);

async function start() {
  ctx.features = await apiFeatures();
  try {
    await loadWho();
  } catch (error) {
    replace(view, notice(`The hub's API does not answer: ${error.message}`, "error"));
    return;
  }
  await route();
  document.body.dataset.ready = "true";
}

start();
