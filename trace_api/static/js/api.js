// The JSON API client: the user's key from session storage, problem details as errors,
// and what this hub's API offers (read once from /openapi.json).

const KEY = "lothub.apiKey";

export class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

function headers(extra = {}) {
  const key = getKey();
  return key ? { "X-API-Key": key, ...extra } : extra;
}

async function fail(response, quiet = false) {
  let title = response.statusText;
  let detail = "";
  try {
    const body = await response.json();
    title = body.title || title;
    detail = body.detail || "";
  } catch {
    // not a problem document: keep the status line
  }
  const error = new ApiError(response.status, title, detail);
  if (response.status === 401 && !quiet) window.dispatchEvent(new CustomEvent("lothub:unauthorized"));
  throw error;
}

/** GET (or another method with a JSON body) an API path; the parsed JSON answer. */
export async function api(path, { method = "GET", body, params, quiet = false } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, v);
  }
  const init = { method, headers: headers({ Accept: "application/json" }) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(url, init);
  if (!response.ok) await fail(response, quiet);
  return response.json();
}

/** Fetch a file (exports need the key header, so a plain link cannot do) as a Blob. */
export async function fetchFile(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) await fail(response);
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="?([^";]+)"?/.exec(disposition);
  return { blob: await response.blob(), filename: match ? match[1] : null };
}

let features = null;
let openapi = { paths: {}, components: {} };

function resolveRef(schema) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return openapi.components?.schemas?.[name] || {};
  }
  return schema || {};
}

/** The allowed values of a query parameter, as the API's OpenAPI document states them. */
export function paramEnum(path, name, method = "get") {
  const param = (openapi.paths[path]?.[method]?.parameters || []).find((p) => p.name === name);
  if (!param) return [];
  const schema = resolveRef(param.schema);
  if (schema.enum) return schema.enum;
  for (const option of schema.anyOf || []) {
    const resolved = resolveRef(option);
    if (resolved.enum) return resolved.enum;
  }
  return [];
}

/** What this API offers, feature-detected from its OpenAPI document (cached). */
export async function apiFeatures() {
  if (features) return features;
  try {
    const response = await fetch("/openapi.json");
    if (response.ok) openapi = await response.json();
  } catch {
    // an API without the document: assume only what every version has
  }
  const paths = openapi.paths || {};
  const params = (path, method = "get") => JSON.stringify(paths[path]?.[method]?.parameters || []);
  features = {
    alerts: "/api/v1/alerts" in paths,
    alertAck: "/api/v1/alerts/{alert_id}/ack" in paths,
    alertResolve: "/api/v1/alerts/{alert_id}/resolve" in paths,
    recallPdf: params("/api/v1/recalls/{recall_id}/export").includes('"pdf"'),
    connectors: "/api/v1/connectors" in paths,
    stats: "/api/v1/stats" in paths,
    kpis: "/api/v1/kpis" in paths,
    epcisExport: "/api/v1/exports/epcis" in paths,
    fsma204: "/api/v1/exports/fsma204" in paths,
  };
  return features;
}
