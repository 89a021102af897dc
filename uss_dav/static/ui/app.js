// uss_dav gallery: one key's collection through the REST API (../api/v1/), nothing else.
// The key lives in sessionStorage and travels only in the Authorization header. Every name
// and value reaches the page as text (createElement/textContent, never an HTML string).

const API = new URL("../api/v1/", document.baseURI);
const KEY_SLOT = "uss_dav.key";
const PAGE_SIZE = 60;          // tiles rendered at once: 10,000 images are 167 pages, not 10,000 nodes
const LIST_LIMIT = 1000;       // the REST API's largest page
const THUMB_SIZE = 256;
const PREVIEW_SIZE = 512;
const THUMB_CACHE = 400;       // object URLs kept; older ones are revoked
const PARALLEL_THUMBS = 6;
const PARALLEL_UPLOADS = 3;

const $ = (id) => document.getElementById(id);
const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

const state = {
  key: null,
  images: new Map(),     // name -> record, as listed
  view: [],              // the records shown, filtered and sorted
  page: 0,
  usage: null,
  listing: null,         // AbortController of the running listing
  loaded: false,         // the whole listing has arrived
  session: 0,            // bumped by forget(): answers to an older session are dropped
  current: null,         // name shown in the details dialog
  previewUrl: null,
};

// --- small helpers -----------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("aria-") || name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  node.append(...children); // strings become text nodes
  return node;
}

const enc = encodeURIComponent;

function fmtBytes(n) {
  if (n == null) return "—";
  const sign = n < 0 ? "−" : "";
  let value = Math.abs(n);
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (value >= 1024 && i < units.length - 1) { value /= 1024; i++; }
  return `${sign}${i ? value.toFixed(value < 10 ? 1 : 0) : value} ${units[i]}`;
}

function savedOf(r) {
  if (r.uploaded_size == null || !r.uploaded_size) return null;
  return { bytes: r.uploaded_size - r.stored_size, percent: (100 * (r.uploaded_size - r.stored_size)) / r.uploaded_size };
}

const fmtPercent = (p) => `${p.toFixed(Math.abs(p) < 10 || (Math.abs(p) > 99 && Math.abs(p) < 100) ? 1 : 0)} %`;
const fmtDate = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
const isImage = (r) => (r.content_type || "").startsWith("image/");
const kindOf = (r) => (r.format || (r.content_type || "").split("/").pop() || "file").toUpperCase();

function debounce(fn, ms) {
  let timer;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// --- the REST API ------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail, retryAfter = null) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }
}

function authHeaders(extra = {}) {
  return { ...extra, Authorization: `Bearer ${state.key}` };
}

// credentials "omit": the server's 401 carries a Basic challenge, which must never open a login dialog.
async function api(path, { method = "GET", body, headers, signal } = {}) {
  if (!state.key) throw new DOMException("no key", "AbortError");
  let response;
  try {
    response = await fetch(new URL(path, API), {
      method, body, signal, headers: authHeaders(headers), credentials: "omit", referrerPolicy: "no-referrer",
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "cannot reach the server");
  }
  if (!response.ok) throw await problemOf(response.status, () => response.text(), response.headers.get("Retry-After"));
  return response;
}

async function problemOf(status, readText, retryAfter) {
  let detail = "";
  try {
    const problem = JSON.parse(await readText());
    detail = String(problem.detail || problem.title || "");
  } catch { /* not problem+json: keep the status alone */ }
  return new ApiError(status, detail, retryAfter);
}

function explain(err) {
  const detail = err.detail ? `: ${err.detail}` : "";
  switch (err.status) {
    case 0: return "Cannot reach the server. Check the connection and try again.";
    case 401: return "The key was not accepted.";
    case 403: return `Not allowed with this key${detail}`;
    case 404: return `Not found${detail}`;
    case 409: return `Name already taken${detail}`;
    case 413: return `Too large${detail}`;
    case 415: return `Not an image${detail}`;
    case 429: return `Too many failed attempts; try again in ${err.retryAfter || "a few"} seconds.`;
    case 507: return `Over quota or out of space${detail}`;
    default: return `Failed (HTTP ${err.status})${detail}`;
  }
}

// Anything answered 401 after the key was accepted: it was revoked or rotated meanwhile.
function failed(err, show) {
  if (err.name === "AbortError") return;
  if (err.status === 401 && state.key) { forget("This key is no longer accepted. Enter a current key."); return; }
  show(explain(err));
}

// --- key handling ------------------------------------------------------------------

const loginForm = $("login-form");
const keyInput = $("key");

loginForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (!key) { $("login-error").textContent = "Enter your API key."; return; }
  if (/[^\x21-\x7e]/.test(key)) { $("login-error").textContent = "A key has no spaces or accented letters: check what was pasted."; return; }
  openCollection(key, false);
});

$("forget").addEventListener("click", () => forget(""));

async function openCollection(key, remembered) {
  state.key = key;
  $("login-error").textContent = "";
  loginForm.querySelector("button").disabled = true;
  try {
    state.usage = await (await api("usage")).json();
  } catch (err) {
    state.key = null;
    if (remembered) sessionStorage.removeItem(KEY_SLOT);
    const message = err.status === 401 ? "That key was not accepted. Check it and try again." : explain(err);
    showLogin(message);
    return;
  } finally {
    loginForm.querySelector("button").disabled = false;
  }
  sessionStorage.setItem(KEY_SLOT, key);
  keyInput.value = "";
  $("login").hidden = true;
  $("gallery").hidden = false;
  $("forget").hidden = false;
  $("filter").focus();
  loadAll();
}

function showLogin(message) {
  $("gallery").hidden = true;
  $("forget").hidden = true;
  $("login").hidden = false;
  $("summary").textContent = "";
  $("login-error").textContent = message;
  keyInput.focus();
}

function forget(message) {
  state.listing?.abort();
  stopUploads();
  sessionStorage.removeItem(KEY_SLOT);
  state.key = null;
  state.session++;
  state.images.clear();
  state.view = [];
  state.usage = null;
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  observer.disconnect();
  tiles.clear();
  $("grid").replaceChildren();
  $("empty").textContent = "";
  $("uploads").replaceChildren();
  $("status").textContent = "";
  thumbs.clear();
  showLogin(message);
}

// --- listing -----------------------------------------------------------------------

async function loadAll() {
  state.listing?.abort();
  const listing = new AbortController();
  state.listing = listing;
  state.images.clear();
  state.loaded = false;
  let cursor = null;
  setStatus("Loading…");
  try {
    do {
      const query = new URLSearchParams({ limit: LIST_LIMIT });
      if (cursor) query.set("cursor", cursor);
      const body = await (await api(`images?${query}`, { signal: listing.signal })).json();
      for (const record of body.images) state.images.set(record.name, record);
      cursor = body.next_cursor;
      if (cursor) setStatus(`Loading… ${state.images.size} images so far`);
      refresh();
    } while (cursor);
    state.loaded = true;
    setStatus("");
    refresh();
  } catch (err) {
    failed(err, setStatus);
  }
}

const refreshUsage = debounce(async () => {
  if (!state.key) return;
  try {
    state.usage = await (await api("usage")).json();
    renderSummary();
  } catch (err) {
    failed(err, setStatus);
  }
}, 250);

function setStatus(text) { $("status").textContent = text; }

// --- filter, sort, pages -------------------------------------------------------------

const ORDERS = {
  name: (a, b) => collator.compare(a.name, b.name),
  date: (a, b) => (b.modified || "").localeCompare(a.modified || "") || collator.compare(a.name, b.name),
  size: (a, b) => b.size - a.size || collator.compare(a.name, b.name),
};

function refresh() {
  const needle = $("filter").value.trim().toLowerCase();
  const all = [...state.images.values()];
  state.view = (needle ? all.filter((r) => r.name.toLowerCase().includes(needle)) : all).sort(ORDERS[$("sort").value]);
  const pages = Math.max(1, Math.ceil(state.view.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  renderGrid();
  renderPager(pages);
  renderSummary();
  let empty = "";
  if (!state.images.size) empty = state.loaded ? "No images yet: drop some on the page or use “Add images…”." : "";
  else if (!state.view.length) empty = "No image name contains that text.";
  $("empty").textContent = empty;
}

$("filter").addEventListener("input", debounce(() => { state.page = 0; refresh(); }, 120));
$("sort").addEventListener("change", () => { state.page = 0; refresh(); });
$("prev").addEventListener("click", () => turnPage(-1));
$("next").addEventListener("click", () => turnPage(1));

function turnPage(delta) {
  const pages = Math.max(1, Math.ceil(state.view.length / PAGE_SIZE));
  const page = Math.min(pages - 1, Math.max(0, state.page + delta));
  if (page === state.page) return;
  state.page = page;
  refresh();
  $("grid").querySelector("button")?.focus();
}

function renderPager(pages) {
  $("pager").hidden = pages < 2;
  const first = state.page * PAGE_SIZE;
  $("page-info").textContent = `Page ${state.page + 1} of ${pages} (${first + 1}–${Math.min(first + PAGE_SIZE, state.view.length)} of ${state.view.length})`;
  $("prev").disabled = state.page === 0;
  $("next").disabled = state.page >= pages - 1;
}

function renderSummary() {
  if (!state.key) return;
  let uploaded = 0;
  let stored = 0;
  for (const r of state.images.values()) {
    if (r.uploaded_size == null) continue;
    uploaded += r.uploaded_size;
    stored += r.stored_size;
  }
  const usage = state.usage || {};
  const quota = usage.quota?.bytes ? ` of ${fmtBytes(usage.quota.bytes)} quota` : "";
  const parts = [`${state.images.size} image${state.images.size === 1 ? "" : "s"}`];
  if (usage.bytes != null) parts.push(`${fmtBytes(usage.bytes)} stored${quota}`);
  parts.push(uploaded
    ? `compression saved ${fmtBytes(uploaded - stored)} (${fmtPercent((100 * (uploaded - stored)) / uploaded)} of ${fmtBytes(uploaded)} uploaded)`
    : "compression saved nothing yet");
  $("summary").textContent = parts.join(" · ");
}

// --- the grid ------------------------------------------------------------------------

const tiles = new Map(); // name -> <li> rendered now

function renderGrid() {
  const grid = $("grid");
  const focused = document.activeElement?.closest?.(".tile")?.dataset.name;
  const shown = state.view.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE);
  const next = new Map();
  for (const record of shown) {
    const old = tiles.get(record.name);
    next.set(record.name, old && old.dataset.etag === record.etag ? old : makeTile(record));
  }
  for (const [name, tile] of tiles) if (next.get(name) !== tile) observer.unobserve(tile);
  tiles.clear();
  for (const [name, tile] of next) tiles.set(name, tile);
  grid.replaceChildren(...next.values());
  if (focused) tiles.get(focused)?.querySelector("button").focus();
}

function makeTile(r) {
  const dims = r.width && r.height ? `${r.width}×${r.height}` : kindOf(r);
  const img = el("img", { alt: r.name, decoding: "async", hidden: true });
  const label = el("span", { class: "kind" }, isImage(r) ? "" : kindOf(r));
  const button = el(
    "button",
    { type: "button", title: r.name, "aria-label": `${r.name}, ${dims}, ${fmtBytes(r.size)}` },
    el("span", { class: "thumb" }, img, label),
    el("span", { class: "caption" },
      el("span", { class: "name" }, r.name),
      el("span", { class: "sub" }, `${dims} · ${fmtBytes(r.size)}`)),
  );
  const tile = el("li", { class: "tile", "data-name": r.name, "data-etag": r.etag || "" }, button);
  if (isImage(r)) observer.observe(tile);
  return tile;
}

$("grid").addEventListener("click", (event) => {
  const tile = event.target.closest(".tile");
  if (tile) openDetails(tile.dataset.name);
});

$("grid").addEventListener("keydown", (event) => {
  const tile = event.target.closest(".tile");
  if (!tile) return;
  const list = [...tiles.values()];
  const index = list.indexOf(tile);
  const columns = Math.max(1, list.filter((t) => t.offsetTop === list[0].offsetTop).length);
  const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns, Home: -index, End: list.length - 1 - index };
  if (event.key in moves) {
    event.preventDefault();
    list[Math.min(list.length - 1, Math.max(0, index + moves[event.key]))]?.querySelector("button").focus();
  } else if (event.key === "PageDown" || event.key === "PageUp") {
    event.preventDefault();
    turnPage(event.key === "PageDown" ? 1 : -1);
  } else if (event.key === "Delete") {
    event.preventDefault();
    confirmDelete(tile.dataset.name);
  }
});

// --- thumbnails: fetched with the key, shown through object URLs, when scrolled near ------

const thumbs = {
  urls: new Map(), // name\netag -> object URL, oldest first
  queue: [],
  active: 0,
  get(key) {
    const url = this.urls.get(key);
    if (url) { this.urls.delete(key); this.urls.set(key, url); }
    return url;
  },
  put(key, url) {
    this.urls.set(key, url);
    for (const [old, oldUrl] of this.urls) {
      if (this.urls.size <= THUMB_CACHE) break;
      if (tiles.has(old.split("\n")[0])) continue; // still on screen
      URL.revokeObjectURL(oldUrl);
      this.urls.delete(old);
    }
  },
  rename(from, to, etag) {
    const url = this.urls.get(`${from}\n${etag}`);
    if (!url) return;
    this.urls.delete(`${from}\n${etag}`);
    this.urls.set(`${to}\n${etag}`, url);
  },
  clear() {
    for (const url of this.urls.values()) URL.revokeObjectURL(url);
    this.urls.clear();
    this.queue = [];
  },
};

const observer = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    observer.unobserve(entry.target);
    thumbs.queue.push(entry.target);
  }
  pumpThumbs();
}, { rootMargin: "400px" });

function pumpThumbs() {
  while (thumbs.active < PARALLEL_THUMBS && thumbs.queue.length) {
    const tile = thumbs.queue.shift();
    if (!tile.isConnected) continue;
    thumbs.active++;
    loadThumb(tile).finally(() => { thumbs.active--; pumpThumbs(); });
  }
}

async function loadThumb(tile) {
  const { name, etag } = tile.dataset;
  const key = `${name}\n${etag}`;
  const img = tile.querySelector("img");
  const session = state.session;
  let url = thumbs.get(key);
  if (!url) {
    try {
      const blob = await (await api(`images/${enc(name)}/thumbnail?size=${THUMB_SIZE}`)).blob();
      if (session !== state.session) return;
      url = URL.createObjectURL(blob);
      thumbs.put(key, url);
    } catch (err) {
      failed(err, () => { tile.querySelector(".kind").textContent = "no preview"; });
      return;
    }
  }
  img.src = url;
  img.hidden = false;
}

// --- details, rename, download, delete ------------------------------------------------

const details = $("details");

function fact(term, value, mono = false) {
  return [el("dt", {}, term), el("dd", mono ? { class: "mono" } : {}, value)];
}

function fillDetails(r) {
  $("d-name").textContent = r.name;
  const saved = savedOf(r);
  $("d-facts").replaceChildren(
    ...fact("Type", `${r.content_type || "unknown"}${r.format ? ` (${r.format})` : ""}`),
    ...fact("Dimensions", r.width && r.height ? `${r.width} × ${r.height} px` : "—"),
    ...fact("Uploaded size", fmtBytes(r.uploaded_size)),
    ...fact("Stored size", fmtBytes(r.stored_size)),
    ...fact("Saved", saved ? `${fmtBytes(saved.bytes)} (${fmtPercent(saved.percent)})` : "—"),
    ...fact("Size when downloaded", fmtBytes(r.size)),
    ...fact("SHA-1", r.sha1 || "—", true),
    ...fact("Modified", fmtDate(r.modified)),
  );
  $("d-img").alt = r.name;
  $("rename-input").value = r.name;
}

async function openDetails(name) {
  const record = state.images.get(name);
  if (!record) return;
  state.current = name;
  $("d-error").textContent = "";
  fillDetails(record);
  setPreview(thumbs.get(`${name}\n${record.etag}`) || null, false);
  if (!details.open) details.showModal();
  $("d-close").focus();
  try {
    const fresh = await (await api(`images/${enc(name)}/meta`)).json();
    if (state.current !== name) return;
    state.images.set(name, fresh);
    fillDetails(fresh);
    if (!isImage(fresh)) return;
    const blob = await (await api(`images/${enc(name)}/thumbnail?size=${PREVIEW_SIZE}`)).blob();
    if (state.current === name) setPreview(URL.createObjectURL(blob), true);
  } catch (err) {
    if (err.status === 404) { dropImage(name); details.close(); setStatus(`“${name}” no longer exists.`); return; }
    failed(err, (text) => { $("d-error").textContent = text; });
  }
}

function setPreview(url, owned) {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = owned ? url : null;
  const img = $("d-img");
  img.hidden = !url;
  if (url) img.src = url; else img.removeAttribute("src");
}

details.addEventListener("close", () => {
  const name = state.current;
  state.current = null;
  setPreview(null, false);
  tiles.get(name)?.querySelector("button").focus();
});
$("d-close").addEventListener("click", () => details.close());
$("d-delete").addEventListener("click", () => confirmDelete(state.current));
$("d-download").addEventListener("click", () => download(state.current));

$("rename-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const from = state.current;
  const to = $("rename-input").value.trim();
  if (!from || !to || to === from) return;
  if (/[/\\]/.test(to)) { $("d-error").textContent = "A name cannot contain / or \\."; return; }
  $("d-error").textContent = "";
  try {
    const response = await api(`images/${enc(from)}/rename`, {
      method: "POST", body: JSON.stringify({ name: to }), headers: { "Content-Type": "application/json" },
    });
    const record = await response.json();
    const old = state.images.get(from);
    if (old) thumbs.rename(from, record.name, old.etag);
    state.images.delete(from);
    state.images.set(record.name, record);
    state.current = record.name;
    fillDetails(record);
    refresh();
    setStatus(`Renamed “${from}” to “${record.name}”.`);
  } catch (err) {
    failed(err, (text) => { $("d-error").textContent = text; });
  }
});

async function download(name) {
  if (!name) return;
  try {
    const blob = await (await api(`images/${enc(name)}`)).blob();
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (err) {
    failed(err, (text) => { (details.open ? $("d-error") : $("status")).textContent = text; });
  }
}

const confirmDialog = $("confirm");

function confirmDelete(name) {
  if (!name || !state.images.has(name)) return;
  $("confirm-text").textContent = `Delete “${name}”? This cannot be undone.`;
  confirmDialog.returnValue = "";
  confirmDialog.addEventListener("close", () => {
    if (confirmDialog.returnValue === "ok") remove(name);
  }, { once: true });
  confirmDialog.showModal();
}

async function remove(name) {
  const list = [...tiles.keys()];
  const neighbour = list[list.indexOf(name) + 1] || list[list.indexOf(name) - 1];
  try {
    await api(`images/${enc(name)}`, { method: "DELETE" });
  } catch (err) {
    if (err.status !== 404) { failed(err, (text) => { (details.open ? $("d-error") : $("status")).textContent = text; }); return; }
  }
  if (details.open) details.close();
  dropImage(name);
  setStatus(`Deleted “${name}”.`);
  (tiles.get(neighbour)?.querySelector("button") || $("filter")).focus();
}

function dropImage(name) {
  state.images.delete(name);
  refresh();
  refreshUsage();
}

// --- uploads: a file per request, so each has its own progress bar and error ------------

const uploads = { queue: [], active: new Set() };

async function upload(files) {
  if (!state.key || !files.length) return;
  for (const file of files) {
    const bar = el("progress", { max: 1, value: 0, "aria-label": `Uploading ${file.name}` });
    const msg = el("span", { class: "msg" }, "waiting…");
    const dismiss = el("button", { type: "button", class: "quiet", hidden: true, "aria-label": `Dismiss ${file.name}` }, "×");
    const row = el("li", {}, el("span", { class: "name", title: file.name }, file.name), bar, dismiss, msg);
    dismiss.addEventListener("click", () => row.remove());
    $("uploads").append(row);
    uploads.queue.push({ file, row, bar, msg });
  }
  // Check the key with fetch() first: a same-origin XMLHttpRequest answered 401 with a Basic
  // challenge could open the browser's login dialog, a fetch() with credentials "omit" cannot.
  try {
    state.usage = await (await api("usage")).json();
  } catch (err) {
    failed(err, setStatus);
    if (!state.key) return;
  }
  pumpUploads();
}

function pumpUploads() {
  while (uploads.active.size < PARALLEL_UPLOADS && uploads.queue.length) {
    const job = uploads.queue.shift();
    const xhr = new XMLHttpRequest(); // fetch() cannot report upload progress
    uploads.active.add(xhr);
    send(xhr, job).finally(() => { uploads.active.delete(xhr); pumpUploads(); });
  }
}

function send(xhr, { file, row, bar, msg }) {
  return new Promise((resolve) => {
    const finish = (ok, text) => {
      row.className = ok ? "done" : "failed";
      msg.textContent = text;
      row.querySelector("button").hidden = false;
      if (ok) setTimeout(() => row.remove(), 8000);
      resolve();
    };
    xhr.open("POST", new URL("images", API));
    xhr.setRequestHeader("Authorization", `Bearer ${state.key}`);
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; });
    xhr.upload.addEventListener("load", () => { msg.textContent = "compressing…"; });
    xhr.addEventListener("load", async () => {
      if (xhr.status === 201) {
        const body = JSON.parse(xhr.responseText);
        for (const record of body.images) state.images.set(record.name, record);
        refresh();
        refreshUsage();
        const saved = savedOf(body.images[0] || {});
        finish(true, saved ? `uploaded, compression saved ${fmtPercent(saved.percent)}` : "uploaded");
        return;
      }
      const err = await problemOf(xhr.status, async () => xhr.responseText, xhr.getResponseHeader("Retry-After"));
      if (err.status === 401) { finish(false, explain(err)); failed(err, () => {}); return; }
      finish(false, explain(err));
    });
    xhr.addEventListener("error", () => finish(false, explain(new ApiError(0, ""))));
    xhr.addEventListener("abort", () => finish(false, "cancelled"));
    msg.textContent = "uploading…";
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

function stopUploads() {
  uploads.queue = [];
  for (const xhr of uploads.active) xhr.abort();
}

$("picker").addEventListener("change", (event) => {
  upload([...event.target.files]);
  event.target.value = "";
});

// Drop anywhere: the browser must never navigate to a dropped file, even before login.
let dragDepth = 0;
const carriesFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
document.addEventListener("dragenter", (event) => {
  if (!carriesFiles(event)) return;
  dragDepth++;
  document.body.classList.toggle("dragging", Boolean(state.key));
});
document.addEventListener("dragleave", () => {
  if (--dragDepth <= 0) { dragDepth = 0; document.body.classList.remove("dragging"); }
});
document.addEventListener("dragover", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = state.key ? "copy" : "none";
});
document.addEventListener("drop", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth = 0;
  document.body.classList.remove("dragging");
  upload([...event.dataTransfer.files]);
});

// --- start ---------------------------------------------------------------------------

const remembered = sessionStorage.getItem(KEY_SLOT);
if (remembered) openCollection(remembered, true);
else showLogin("");
