// ganserve front end: a framework-free ES module that talks only to the service that served it.
//
// Flow: poll /readyz until the models are warm → list /models → show the chosen model's card
// (/models/{model}) → draw images with /generate (or the /models/{m}/seeds/{s}.png permalink
// for one image) and animations with /interpolate. Everything on screen is mirrored in the
// page's #hash (reload = same view) and in a permalink + curl command for the image itself.
// Images are fetched at scale=1 and upscaled on screen by CSS (image-rendering: pixelated);
// the permalink, curl command and downloads keep the chosen scale and name the model's version.
// The interpolation plays from the API's PNG strip (format=png) in a canvas; the GIF is the download.
// "Morph two real images" projects two uploads (POST /models/{m}/encode) and plays from_z → to_z.

const SEED_MAX = 4294967295;
const READY_POLL_MS = 1000;
const TRUNCATION_DEBOUNCE_MS = 200;  // the slider re-renders once it rests this long
const PADDING = 2;  // pixels between the images of a grid or strip (app/imaging.py)
const $ = (id) => document.getElementById(id);

const el = {
  status: $("status"),
  error: $("error"), errorTitle: $("error-title"), errorText: $("error-text"), errorClose: $("error-close"),
  model: $("model"), card: $("card"),
  genForm: $("generate-form"), label: $("label"), labelField: $("label-field"), n: $("n"), seed: $("seed"),
  truncation: $("truncation"), truncationValue: $("truncation-value"), scale: $("scale"),
  tileAction: $("tile-action"), downloadPng: $("download-png"), generate: $("generate"), newSeed: $("new-seed"),
  image: $("image"), imagePlaceholder: $("image-placeholder"), imageCaption: $("image-caption"),
  permalink: $("permalink"), curl: $("curl"),
  interpForm: $("interp-form"), modeMorph: $("mode-morph"), seedsRow: $("seeds-row"), morphRow: $("morph-row"),
  fromSeed: $("from-seed"), toSeed: $("to-seed"), interpLabel: $("interp-label"),
  interpLabelField: $("interp-label-field"), fromLabel: $("from-label"), toLabel: $("to-label"),
  morphSeed: $("morph-seed"), frames: $("frames"), fps: $("fps"), method: $("method"), loop: $("loop"),
  interpTruncation: $("interp-truncation"), interpTruncationValue: $("interp-truncation-value"),
  interpScale: $("interp-scale"), interpolate: $("interpolate"), download: $("download"),
  player: $("player"), playerControls: $("player-controls"), play: $("play"), frame: $("frame"),
  frameValue: $("frame-value"), speed: $("speed"), animationPlaceholder: $("animation-placeholder"),
  animationCaption: $("animation-caption"), interpLink: $("interp-link"), interpCurl: $("interp-curl"),
};

const state = {
  ready: false,
  models: [],       // summaries from /models
  card: null,       // /models/{model} of the selected model
  imageUrl: null,   // object URL we own (revoked when replaced)
  shown: null,      // what the image shows: {seed, n, label} (for clicks on a grid tile)
  genToken: 0,      // newest request wins; stale answers are dropped
  interpToken: 0,
};

// ------------------------------------------------------------------ messages

function setStatus(text, kind = "ok") {
  el.status.textContent = text;
  el.status.dataset.state = kind;
}

function showError(title, text) {
  el.errorTitle.textContent = title;
  el.errorText.textContent = text;
  el.error.hidden = false;
}

function clearError() {
  el.error.hidden = true;
  el.errorText.textContent = "";
}

el.errorClose.addEventListener("click", clearError);

class ApiError extends Error {
  constructor(status, detail, retryAfter) {
    super(detail);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** The `detail` of a JSON error body as one readable sentence. */
function describeDetail(body, status) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {  // FastAPI's default validation error shape
    return detail.map((d) => `${(d.loc || []).filter((p) => p !== "query").join(".")}: ${d.msg}`).join("; ");
  }
  return `the service answered HTTP ${status}`;
}

/** fetch() that turns HTTP errors into ApiError(status, detail) and network failures into status 0. */
async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new ApiError(0, "cannot reach the service (is it running?)");
  }
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    throw new ApiError(response.status, describeDetail(body, response.status), response.headers.get("Retry-After"));
  }
  return response;
}

function reportError(err, what) {
  if (!(err instanceof ApiError)) {
    console.error(err);
    showError(`${what} failed:`, String(err));
    return;
  }
  const title = err.status === 0 ? `${what} failed:` : `${what} failed (HTTP ${err.status}):`;
  showError(title, err.message);
  if (err.status === 503 || err.status === 0) waitUntilReady();  // not ready / busy: watch /readyz again
}

// ------------------------------------------------------------------ readiness

let readyTimer = null;

/** /readyz's 503 body ({status: starting|loading|no models, models, refused}) as a sentence. */
function readinessText(body, status) {
  if (!body) return `HTTP ${status}`;
  if (typeof body.detail === "string") return body.detail;
  const loaded = typeof body.models === "number" ? ` (${body.models} loaded${body.refused ? `, ${body.refused} refused` : ""})` : "";
  switch (body.status) {
    case "starting": return "the service is starting…";
    case "loading": return `loading and warming up the models${loaded}…`;
    case "no models": return `no model can be served yet${loaded}; add a checkpoint to the checkpoints folder`;
    default: return `${body.status || `HTTP ${status}`}${loaded}`;
  }
}

async function checkReady() {
  try {
    const response = await fetch("/readyz", { cache: "no-store" });
    if (response.ok) return { ready: true };
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    return { ready: false, detail: readinessText(body, response.status) };
  } catch (e) {
    return { ready: false, detail: "cannot reach the service", offline: true };
  }
}

function setBusy(disabled) {
  for (const b of [el.generate, el.newSeed, el.interpolate]) b.disabled = disabled;
}

/** Poll /readyz every second, showing "warming up", until the service is ready; then load the models. */
function waitUntilReady() {
  if (readyTimer !== null) return;
  state.ready = false;
  setBusy(true);
  const tick = async () => {
    const r = await checkReady();
    if (r.ready) {
      readyTimer = null;
      state.ready = true;
      setBusy(false);
      setStatus("Ready", "ok");
      await onReady();
      return;
    }
    setStatus(r.offline ? "Offline: cannot reach the service, retrying…" : `Warming up: ${r.detail}`, "wait");
    readyTimer = setTimeout(tick, READY_POLL_MS);
  };
  readyTimer = setTimeout(tick, 0);
}

// ------------------------------------------------------------------ models and cards

/** /models may answer a list or {models: [...]}; each entry a name or an object with `name`. */
function modelList(body) {
  const list = Array.isArray(body) ? body : (body && (body.models || body.data)) || [];
  return list.map((m) => (typeof m === "string" ? { name: m } : m)).filter((m) => m && m.name);
}

function classNames(card) {
  if (!card) return [];
  if (Array.isArray(card.class_names)) return card.class_names;
  if (Array.isArray(card.classes)) return card.classes.map((c) => (typeof c === "string" ? c : c.name));
  return [];
}

function isConditional(card) {
  return classNames(card).length > 0;
}

function isSampleable(m) {
  return m.sampleable !== false;
}

let onReadyDone = false;

async function onReady() {
  if (onReadyDone) return;
  let body;
  try {
    body = await (await api("/models")).json();
  } catch (err) {
    reportError(err, "Listing the models");
    return;
  }
  onReadyDone = true;
  state.models = modelList(body);
  renderRefused(body && Array.isArray(body.refused) ? body.refused : []);
  el.model.replaceChildren(...state.models.map((m) => {
    const why = canTranslate(m) ? "a translator: see Draw" : "not sampleable";
    const o = new Option(isSampleable(m) ? m.name : `${m.name} (${why})`, m.name);
    o.disabled = !isSampleable(m);
    return o;
  }));
  el.model.disabled = state.models.length === 0;
  setupDraw(state.models);
  if (state.models.length === 0) {
    showError("No models:", "the service has no model loaded.");
    return;
  }
  const fromHash = readHash();
  const wanted = fromHash.model
    || (body && typeof body.default === "string" ? body.default : null)
    || (state.models.find(isSampleable) || state.models[0]).name;
  await selectModel(wanted, fromHash);
}

/** Checkpoints the service refused to load, with its reason (so a missing model is explained). */
function renderRefused(refused) {
  const box = $("refused");
  if (!refused.length) {
    box.hidden = true;
    return;
  }
  const h = document.createElement("h3");
  h.textContent = `Refused checkpoints (${refused.length})`;
  const ul = document.createElement("ul");
  for (const r of refused) {
    const li = document.createElement("li");
    const b = document.createElement("strong");
    b.textContent = r.name;
    li.append(b, `: ${r.reason}${r.still_serving ? " (the previous version is still served)" : ""}`);
    ul.append(li);
  }
  box.replaceChildren(h, ul);
  box.hidden = false;
}

function fmtNumber(v, digits = 3) {
  if (typeof v !== "number" || !Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return v.toLocaleString("en");
  return Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(digits);
}

/** KID (× 1000, as the evaluator reports it) with its spread over the subsets; within two spreads
 *  of zero it cannot be told from zero, and the card says so. */
function fmtKid(kid, std) {
  const text = `${fmtNumber(kid)} ± ${fmtNumber(std)}`;
  return Math.abs(kid) < 2 * std ? `${text} (within its noise: not distinguishable from 0)` : text;
}

function fmtSeconds(s) {
  if (typeof s !== "number") return "";
  if (s < 120) return `${s.toFixed(0)} s`;
  if (s < 7200) return `${(s / 60).toFixed(0)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/** A <dt>/<dd> pair; `value` may be a string or a Node. */
function pair(dl, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  if (value instanceof Node) dd.append(value); else dd.textContent = value;
  dl.append(dt, dd);
}

const METRICS = [
  ["accuracy", "Class accuracy", (v) => `${(v * 100).toFixed(1)} %`],
  ["fid", "FID", fmtNumber],
  ["fid_floor", "FID floor (real vs real)", fmtNumber],
  ["kid", "KID", null],  // with its spread (kid_std), or not at all: see fmtKid
  ["precision", "Precision", fmtNumber],
  ["recall", "Recall", fmtNumber],
  ["density", "Density", fmtNumber],
  ["coverage", "Coverage", fmtNumber],
];

/** The quality bars of the model card (`bars`: name → true cleared, false missed, null not judged):
 *  a one-line verdict, then one item per bar. Null when the service judged none. */
function renderBars(bars) {
  if (!bars || typeof bars !== "object") return null;
  const entries = Object.entries(bars);
  if (!entries.length) return null;
  const box = document.createElement("div");
  box.className = "bars";
  const missed = entries.filter(([, ok]) => ok === false).map(([name]) => name);
  const unjudged = entries.filter(([, ok]) => ok !== true && ok !== false).length;
  const verdict = document.createElement("p");
  verdict.className = "verdict";
  if (missed.length) {
    verdict.dataset.state = "missed";
    verdict.textContent = `Misses ${missed.length} of ${entries.length} quality bars: ${missed.join(", ")}.`;
  } else if (unjudged) {
    verdict.dataset.state = "unjudged";
    verdict.textContent = `Not judged against the quality bars (measured on fewer than ${fmtNumber(10000)} samples, or not measured).`;
  } else {
    verdict.dataset.state = "cleared";
    verdict.textContent = `Clears all ${entries.length} quality bars.`;
  }
  const ul = document.createElement("ul");
  for (const [name, ok] of entries) {
    const li = document.createElement("li");
    li.dataset.state = ok === true ? "cleared" : ok === false ? "missed" : "unjudged";
    li.textContent = `${ok === true ? "✓" : ok === false ? "✗" : "?"} ${name}`;
    li.title = ok === true ? "cleared" : ok === false ? "missed" : "not judged";
    ul.append(li);
  }
  box.append(verdict, ul);
  return box;
}

/** The card's image-in numbers (`evaluate-encoding`): reconstruction PSNR on the test split, and how well
 * `encode` (an encoder, or projection) keeps 200 held-out images; null when neither was measured. */
function renderImagesIn(metrics) {
  const rec = metrics.reconstruction && typeof metrics.reconstruction === "object" ? metrics.reconstruction : null;
  const enc = metrics.encoding && typeof metrics.encoding === "object" ? metrics.encoding : null;
  const num = (v) => typeof v === "number";
  if (!(rec && num(rec.psnr)) && !(enc && num(enc.class_accuracy))) return null;
  const box = document.createElement("div");
  box.className = "images-in";
  const h = document.createElement("h4");
  h.textContent = "Images in";
  const dl = document.createElement("dl");
  dl.className = "metrics";
  if (rec && num(rec.psnr)) {
    pair(dl, "Reconstruction PSNR", `${rec.psnr.toFixed(2)} dB${num(rec.images) ? ` (${fmtNumber(rec.images)} test images)` : ""}`);
  }
  if (enc && num(enc.class_accuracy)) {
    const how = enc.method === "projection"
      ? `projection, ${enc.steps} steps${enc.label_given ? ", label given" : ""}` : "its encoder";
    pair(dl, "Encode by", how);
    const real = num(enc.evaluator_on_originals) ? ` (originals: ${enc.evaluator_on_originals.toFixed(3)})` : "";
    pair(dl, "Class kept", `${enc.class_accuracy.toFixed(3)}${real}`);
    if (num(enc.psnr)) pair(dl, "Encode PSNR", `${enc.psnr.toFixed(1)} dB`);
  }
  const p = document.createElement("p");
  p.className = "muted small";
  p.textContent = enc && num(enc.images)
    ? `Class kept: how often the evaluator gives the image an encoded latent draws the original's class, on ${fmtNumber(enc.images)} held-out test images.`
    : "Measured on the test split.";
  box.append(h, dl, p);
  return box;
}

function renderCard(card) {
  const frag = document.createDocumentFragment();
  const title = document.createElement("h3");
  title.textContent = card.name;
  frag.append(title);
  if (card.description) {
    const p = document.createElement("p");
    p.textContent = card.description;
    frag.append(p);
  }
  const dl = document.createElement("dl");
  if (card.family) pair(dl, "Family", card.family);
  const ds = card.dataset;
  if (ds) {
    const name = typeof ds === "string" ? ds : ds.name;
    const count = typeof ds === "object" && typeof ds.num_images === "number" ? `, ${fmtNumber(ds.num_images)} images` : "";
    pair(dl, "Trained on", `${name}${count}`);
  }
  const img = card.image;
  if (img && img.height) pair(dl, "Image", `${img.width} × ${img.height}, ${img.channels === 3 ? "RGB" : "grey"}`);
  const names = classNames(card);
  if (names.length) {
    const ul = document.createElement("ul");
    ul.className = "classes";
    for (const n of names) {
      const li = document.createElement("li");
      li.textContent = n;
      ul.append(li);
    }
    pair(dl, `Classes (${names.length})`, ul);
  } else {
    pair(dl, "Classes", "none (unconditional)");
  }
  const tr = card.training;
  if (tr && typeof tr === "object") {
    const bits = [];
    if (typeof tr.epochs === "number") bits.push(`${tr.epochs} epochs`);
    if (typeof tr.seconds === "number") bits.push(fmtSeconds(tr.seconds));
    if (typeof tr.world_size === "number" && tr.world_size > 1) bits.push(`${tr.world_size} processes`);
    if (bits.length) pair(dl, "Training", bits.join(", "));
  }
  if (card.device) pair(dl, "Device", String(card.device));
  frag.append(dl);

  const h4 = document.createElement("h4");
  h4.textContent = "Measured quality";
  frag.append(h4);
  const metrics = (card.metrics && typeof card.metrics === "object") ? card.metrics : {};
  const has = (k) => metrics[k] !== undefined && metrics[k] !== null;
  if (METRICS.some(([key]) => has(key))) {
    const mdl = document.createElement("dl");
    mdl.className = "metrics";
    for (const [key, label, fmt] of METRICS) {
      if (key === "kid") {
        if (has(key) && typeof metrics.kid_std === "number") pair(mdl, label, fmtKid(metrics.kid, metrics.kid_std));
        continue;  // a KID without its spread says nothing at these sample sizes
      }
      pair(mdl, label, has(key) ? fmt(metrics[key]) : "not measured");
      if (!has(key)) mdl.lastElementChild.classList.add("muted");
    }
    frag.append(mdl);
  } else {
    const p = document.createElement("p");
    p.className = "muted not-measured";
    p.textContent = "Not measured: no evaluator has scored this checkpoint yet (accuracy, FID, coverage…).";
    frag.append(p);
  }
  if (metrics.num_samples || metrics.samples) {
    const p = document.createElement("p");
    p.className = "muted small";
    const psi = typeof metrics.truncation === "number" && metrics.truncation !== 1
      ? `, drawn at truncation ψ ${metrics.truncation} (what the service serves by default)` : "";
    p.textContent = `Measured on ${fmtNumber(metrics.num_samples || metrics.samples)} samples${psi} with the project's evaluator.`;
    frag.append(p);
  }
  const bars = renderBars(card.bars);
  if (bars) frag.append(bars);
  const imagesIn = renderImagesIn(metrics);
  if (imagesIn) frag.append(imagesIn);
  if (card.links && card.links.samples) {
    const fig = document.createElement("figure");
    fig.className = "samples";
    const img = document.createElement("img");
    img.src = card.links.samples;
    img.alt = `Sample grid saved when ${card.name} was trained${names.length ? " (one row per class)" : ""}`;
    img.loading = "lazy";
    const cap = document.createElement("figcaption");
    cap.className = "muted";
    cap.textContent = `Samples from training${names.length ? ", one row per class" : ""}`;
    fig.append(img, cap);
    frag.append(fig);
  }
  if (tr && tr.command) {
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "How it was trained";
    const parts = Array.isArray(tr.parts) ? tr.parts : [];
    if (parts.length > 1) {  // a run stopped and resumed with other options: every command, from its epoch
      const list = document.createElement("ol");
      list.className = "parts";
      for (const part of parts) {
        const item = document.createElement("li");
        const code = document.createElement("code");
        code.textContent = part.command;
        const from = part.from_epoch === null
          ? "earlier (the epoch it took over at is not recorded)"
          : `from epoch ${part.from_epoch}`;
        item.append(`${from}: `, code);
        list.append(item);
      }
      details.append(summary, list);
    } else {
      const code = document.createElement("code");
      code.textContent = tr.command;
      details.append(summary, code);
    }
    frag.append(details);
  }
  el.card.replaceChildren(frag);
}

function fillClassSelect(select, names, withRandom) {
  const options = names.map((n, i) => new Option(`${n} (${i})`, n));
  if (withRandom) options.unshift(new Option("any (random)", ""));
  select.replaceChildren(...options);
}

/** The ψ the model is served at when a request names none (its metrics were measured there). */
function modelTruncation(card) {
  return typeof card.truncation === "number" ? card.truncation : 1;
}

/** Fill a scale <select> with 1×–8× (the pixel size of one image at each), choosing `chosen`. */
function fillScaleSelect(select, card, chosen) {
  const w = (card.image && card.image.width) || 28;
  const h = (card.image && card.image.height) || 28;
  select.replaceChildren(...[1, 2, 3, 4, 5, 6, 7, 8].map((k) => new Option(`${k}× (${w * k}×${h * k} px)`, String(k))));
  select.value = String(Math.max(1, Math.min(8, Number(chosen) || 1)));
}

function setSlider(input, output, value) {
  input.value = String(value);
  output.textContent = Number(input.value).toFixed(2);
}

async function selectModel(name, restore = {}) {
  clearError();
  let card;
  try {
    card = await (await api(`/models/${encodeURIComponent(name)}`)).json();
  } catch (err) {
    reportError(err, `Loading model “${name}”`);
    return;
  }
  state.card = card;
  if ([...el.model.options].some((o) => o.value === card.name)) el.model.value = card.name;
  renderCard(card);
  const names = classNames(card);
  const conditional = names.length > 0;
  fillClassSelect(el.label, names, true);
  fillClassSelect(el.interpLabel, names, false);
  fillClassSelect(el.fromLabel, names, false);
  fillClassSelect(el.toLabel, names, false);
  if (names.length > 1) el.toLabel.selectedIndex = 1;
  el.labelField.hidden = !conditional;
  el.interpLabelField.hidden = !conditional;
  el.modeMorph.disabled = !conditional;
  if (!conditional) {
    el.interpForm.querySelector('input[name="mode"][value="seeds"]').checked = true;
  }
  if (restore.label !== undefined && names.includes(restore.label)) el.label.value = restore.label;
  else if (conditional) el.label.value = names[0];
  if (restore.n && [...el.n.options].some((o) => o.value === restore.n)) el.n.value = restore.n;
  if (restore.seed !== undefined && restore.seed !== "") el.seed.value = restore.seed;
  setSlider(el.truncation, el.truncationValue, restore.truncation || modelTruncation(card));
  fillScaleSelect(el.scale, card, restore.scale || pickScale(card, Number(el.n.value)));
  setSlider(el.interpTruncation, el.interpTruncationValue, restore.itruncation || modelTruncation(card));
  const h = (card.image && card.image.height) || 28;
  fillScaleSelect(el.interpScale, card, restore.iscale || Math.floor(256 / h));
  restoreInterpolation(restore, names);
  syncMode();
  player.stop(true);
  setupMorph(card);
  await generate();
}

el.model.addEventListener("change", () => selectModel(el.model.value));

// ------------------------------------------------------------------ generate

function randomSeed(count = 1) {
  const buf = new Uint32Array(1);
  crypto.getRandomValues(buf);
  return buf[0] % (SEED_MAX - count + 2);
}

/** A scale at which the PNG is about 512 px wide (the default download size). */
function pickScale(card, n, target = 512) {
  const w = (card.image && card.image.width) || 28;
  const side = Math.ceil(Math.sqrt(n));
  const px = n === 1 ? w : side * (w + PADDING) + PADDING;
  return Math.max(1, Math.min(8, Math.floor(target / px)));
}

/** The truncation to send: none when the slider sits at the model's own ψ (the service's default). */
function truncationParam(input, card) {
  const v = Number(input.value);
  return Math.abs(v - modelTruncation(card)) < 1e-9 ? null : input.value;
}

/** The request for what the controls say at `scale` (a permalink for one image, /generate for a grid);
 *  `pin` adds the model's version, a drawn seed and a drawn class so that the URL names one image. */
function generateRequest(scale, pin = null) {
  const card = state.card;
  const n = Number(el.n.value);
  const seed = pin && pin.seed !== undefined ? pin.seed : el.seed.value.trim();
  const q = new URLSearchParams();
  const label = isConditional(card) ? (el.label.value || (pin && pin.label) || "") : "";
  const truncation = truncationParam(el.truncation, card);
  let path;
  if (n === 1 && /^\d+$/.test(seed)) {
    if (label) q.set("label", label);
    if (truncation) q.set("truncation", truncation);
    q.set("scale", String(scale));
    path = `/models/${encodeURIComponent(card.name)}/seeds/${seed}.png`;
  } else {
    q.set("model", card.name);
    if (label) q.set("label", label);
    if (seed !== "") q.set("seed", seed);  // empty: the service draws one (and says which in X-Seed)
    q.set("n", String(n));
    if (truncation) q.set("truncation", truncation);
    q.set("scale", String(scale));
    path = "/generate";
  }
  if (pin && card.version) q.set("version", card.version);
  return `${path}?${q}`;
}

function absolute(path) {
  return new URL(path, location.href).href;
}

function shellQuote(s) {
  return `'${s.replaceAll("'", "'\\''")}'`;
}

function interpMode() {
  return el.interpForm.querySelector('input[name="mode"]:checked').value;
}

/** The page's #hash: the generator's controls and the interpolation's, so that a shared link
 *  (or a reload) shows the same view. */
function writeHash() {
  const q = new URLSearchParams();
  const card = state.card;
  if (card) q.set("model", card.name);
  if (card && isConditional(card) && el.label.value) q.set("label", el.label.value);
  q.set("seed", el.seed.value.trim());
  q.set("n", el.n.value);
  if (card && truncationParam(el.truncation, card)) q.set("truncation", el.truncation.value);
  q.set("scale", el.scale.value);
  q.set("mode", interpMode());
  if (interpMode() === "morph") {
    q.set("from_label", el.fromLabel.value);
    q.set("to_label", el.toLabel.value);
    q.set("morph_seed", el.morphSeed.value.trim());
  } else {
    q.set("from_seed", el.fromSeed.value.trim());
    q.set("to_seed", el.toSeed.value.trim());
    if (card && isConditional(card)) q.set("interp_label", el.interpLabel.value);
  }
  q.set("frames", el.frames.value.trim());
  q.set("fps", el.fps.value.trim());
  q.set("method", el.method.value);
  if (card && truncationParam(el.interpTruncation, card)) q.set("interp_truncation", el.interpTruncation.value);
  if (el.loop.checked) q.set("loop", "true");
  q.set("interp_scale", el.interpScale.value);
  if (el.speed.value !== "1") q.set("speed", el.speed.value);
  history.replaceState(null, "", `#${q}`);
}

const HASH_KEYS = {
  model: "model", label: "label", seed: "seed", n: "n", truncation: "truncation", scale: "scale", mode: "mode",
  from_seed: "fromSeed", to_seed: "toSeed", interp_label: "interpLabel", from_label: "fromLabel",
  to_label: "toLabel", morph_seed: "morphSeed", frames: "frames", fps: "fps", method: "method",
  interp_truncation: "itruncation", loop: "loop", interp_scale: "iscale", speed: "speed",
};

function readHash() {
  const q = new URLSearchParams(location.hash.slice(1));
  const out = {};
  for (const [k, name] of Object.entries(HASH_KEYS)) if (q.has(k)) out[name] = q.get(k);
  return out;
}

/** The interpolation's controls from the page's #hash (values the controls cannot take are left out). */
function restoreInterpolation(r, names) {
  const setIf = (input, v, ok = true) => { if (v !== undefined && v !== "" && ok) input.value = v; };
  if (r.mode === "morph" && names.length > 1) el.modeMorph.checked = true;
  else if (r.mode === "seeds") el.interpForm.querySelector('input[name="mode"][value="seeds"]').checked = true;
  setIf(el.fromSeed, r.fromSeed, /^\d+$/.test(r.fromSeed || ""));
  setIf(el.toSeed, r.toSeed, /^\d+$/.test(r.toSeed || ""));
  setIf(el.morphSeed, r.morphSeed, /^\d+$/.test(r.morphSeed || ""));
  setIf(el.interpLabel, r.interpLabel, names.includes(r.interpLabel));
  setIf(el.fromLabel, r.fromLabel, names.includes(r.fromLabel));
  setIf(el.toLabel, r.toLabel, names.includes(r.toLabel));
  setIf(el.frames, r.frames, /^\d+$/.test(r.frames || ""));
  setIf(el.fps, r.fps, /^\d+$/.test(r.fps || ""));
  setIf(el.method, r.method, ["slerp", "lerp"].includes(r.method));
  setIf(el.speed, r.speed, [...el.speed.options].some((o) => o.value === r.speed));
  if (r.loop !== undefined) el.loop.checked = r.loop === "true";
}

function setImage(blob) {
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.imageUrl = URL.createObjectURL(blob);
  el.image.src = state.imageUrl;
  el.image.hidden = false;
  el.imagePlaceholder.hidden = true;
}

async function generate() {
  if (!state.card) return;
  if (!state.ready) {
    setStatus("Warming up: images will appear when the service is ready", "wait");
    return;
  }
  clearError();
  const path = generateRequest(1);  // on screen: 1 px per pixel, upscaled by CSS
  const token = ++state.genToken;
  el.generate.setAttribute("aria-busy", "true");
  setStatus("Generating…", "busy");
  try {
    const response = await api(path);
    const blob = await response.blob();
    if (token !== state.genToken) return;
    const seed = response.headers.get("X-Seed");
    const labelName = response.headers.get("X-Label-Name");
    const label = labelName ? decodeURIComponent(labelName) : response.headers.get("X-Label");
    if (seed && el.seed.value.trim() === "") el.seed.value = seed;  // a drawn seed is pinned
    // The links name this exact image: the version, the seed, and the class when it was drawn.
    const linkPath = generateRequest(Number(el.scale.value), { seed, label });
    setImage(blob);
    el.image.dataset.src = path;
    const n = Number(el.n.value);
    state.shown = { seed: Number(seed), n, label };
    const what = n === 1 ? `seed ${seed}` : `seeds ${seed}–${Number(seed) + n - 1}`;
    const cls = label ? `, class ${label}` : "";
    el.image.alt = `${n === 1 ? "Image" : `Grid of ${n} images`} from ${state.card.name}, ${what}${cls}`;
    el.image.title = n > 1 ? "Click an image of the grid: see “Clicking a grid image”" : "";
    el.imageCaption.textContent = `${state.card.name} · ${what}${cls}`;
    el.permalink.value = absolute(linkPath);
    const file = `${state.card.name}-${seed}${n > 1 ? `-n${n}` : ""}.png`;
    el.curl.value = `curl -o ${file} ${shellQuote(absolute(linkPath))}`;
    el.downloadPng.href = linkPath;
    el.downloadPng.download = file;
    el.downloadPng.hidden = false;
    writeHash();
    setStatus("Ready", "ok");
  } catch (err) {
    if (token !== state.genToken) return;
    setStatus(state.ready ? "Ready" : "Warming up", state.ready ? "ok" : "wait");
    reportError(err, "Generating");
  } finally {
    if (token === state.genToken) el.generate.removeAttribute("aria-busy");
  }
}

el.genForm.addEventListener("submit", (e) => {
  e.preventDefault();
  generate();
});

function newSeed() {
  el.seed.value = String(randomSeed(Number(el.n.value)));
  generate();
}
el.newSeed.addEventListener("click", newSeed);
for (const input of [el.label, el.n]) input.addEventListener("change", generate);
el.scale.addEventListener("change", generate);

// Truncation: the number follows the slider at once; the image once it rests (debounced).
let truncationTimer = null;
el.truncation.addEventListener("input", () => {
  el.truncationValue.textContent = Number(el.truncation.value).toFixed(2);
  clearTimeout(truncationTimer);
  truncationTimer = setTimeout(generate, TRUNCATION_DEBOUNCE_MS);
});
el.interpTruncation.addEventListener("input", () => {
  el.interpTruncationValue.textContent = Number(el.interpTruncation.value).toFixed(2);
});

/** Seed ± delta, kept in range (a grid's last seed too). */
function stepSeed(delta) {
  const n = Number(el.n.value);
  const current = /^\d+$/.test(el.seed.value.trim()) ? Number(el.seed.value.trim()) : 0;
  el.seed.value = String(Math.max(0, Math.min(SEED_MAX - n + 1, current + delta)));
  generate();
}

// Keyboard shortcuts (listed on the page), only while no field or control has the focus.
document.addEventListener("keydown", (e) => {
  if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey || !state.card || !state.ready) return;
  const t = e.target;
  if (t instanceof HTMLElement && t.closest("input, select, textarea, button, a, summary, [contenteditable]")) return;
  if (e.key === "r" || e.key === "R") newSeed();
  else if (e.key === "ArrowLeft") stepSeed(-1);
  else if (e.key === "ArrowRight") stepSeed(1);
  else return;
  e.preventDefault();
});

/** The index of the grid image under a click on the <img> (null on the padding between images). */
function tileAt(img, clientX, clientY) {
  const shown = state.shown;
  const card = state.card;
  if (!shown || shown.n < 2 || !card.image) return null;
  const rect = img.getBoundingClientRect();
  const px = (clientX - rect.left) * (img.naturalWidth / rect.width);  // in the PNG's own pixels
  const py = (clientY - rect.top) * (img.naturalHeight / rect.height);
  const w = card.image.width, h = card.image.height;
  const side = Math.ceil(Math.sqrt(shown.n));
  const col = Math.floor((px - PADDING) / (w + PADDING));
  const row = Math.floor((py - PADDING) / (h + PADDING));
  const index = row * side + col;
  if (col < 0 || col >= side || row < 0 || index >= shown.n) return null;
  return index;
}

el.image.addEventListener("click", (e) => {
  const index = tileAt(el.image, e.clientX, e.clientY);
  if (index === null) return;
  const seed = String(state.shown.seed + index);
  const label = state.shown.label;
  const action = el.tileAction.value;
  if (action === "show") {
    if (label && !el.label.value) el.label.value = label;  // a drawn class stays the one shown
    el.seed.value = seed;
    el.n.value = "1";
    generate();
    return;
  }
  if (interpMode() === "morph") {
    el.morphSeed.value = seed;
  } else {
    (action === "from" ? el.fromSeed : el.toSeed).value = seed;
    if (label && isConditional(state.card)) el.interpLabel.value = label;
  }
  writeHash();
  setStatus(`Seed ${seed} set as the interpolation's ${action === "from" ? "start" : "end"}`, "ok");
});

// Size an image or canvas to a whole multiple of its pixels that fits the frame (crisp, never blurred).
function fitPixels(node) {
  const frame = node.parentElement;
  const style = getComputedStyle(frame);
  const box = frame.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const w = node.naturalWidth || node.width;
  if (!w || !box) return;
  const cap = Math.min(box, Math.max(w, 512));
  node.style.width = w <= cap ? `${w * Math.floor(cap / w)}px` : `${box}px`;  // whole multiples, or fit
}
el.image.addEventListener("load", () => fitPixels(el.image));
window.addEventListener("resize", () => {
  for (const node of [el.image, el.player, draw.canvas, draw.result]) fitPixels(node);
});

// ------------------------------------------------------------------ interpolate

function syncMode() {
  const morph = interpMode() === "morph";
  el.seedsRow.hidden = morph;
  el.morphRow.hidden = !morph;
}
for (const r of el.interpForm.querySelectorAll('input[name="mode"]')) r.addEventListener("change", syncMode);

/** The /interpolate request for the controls: `format` png (the player's strip) or gif (the download). */
function interpolateRequest(format, scale, pinVersion) {
  const card = state.card;
  const q = new URLSearchParams({ model: card.name });
  if (interpMode() === "morph") {
    q.set("from_label", el.fromLabel.value);
    q.set("to_label", el.toLabel.value);
    q.set("from_seed", el.morphSeed.value.trim());
    q.set("to_seed", el.morphSeed.value.trim());
  } else {
    if (isConditional(card)) q.set("label", el.interpLabel.value);
    q.set("from_seed", el.fromSeed.value.trim());
    q.set("to_seed", el.toSeed.value.trim());
  }
  q.set("frames", el.frames.value.trim());
  q.set("fps", el.fps.value.trim());
  q.set("method", el.method.value);
  const truncation = truncationParam(el.interpTruncation, card);
  if (truncation) q.set("truncation", truncation);
  if (el.loop.checked) q.set("loop", "true");
  q.set("scale", String(scale));
  if (format === "png") q.set("format", "png");
  if (pinVersion && card.version) q.set("version", card.version);
  return `/interpolate?${q}`;
}

function filenameOf(response, fallback) {
  const cd = response.headers.get("Content-Disposition") || "";
  const m = /filename="?([^";]+)"?/.exec(cd);
  return m ? m[1] : fallback;
}

const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

/**
 * A player of an /interpolate PNG strip (frames in one row, PADDING px apart) on a canvas: draw a frame,
 * play, pause, clear. `parts`: canvas, controls, placeholder, play (button), frame (slider), frameValue,
 * download, caption; `speed()`: the playback speed's factor.
 */
function makeStripPlayer(parts, speed = () => 1) {
  const p = { strip: null, index: 0, timer: null };
  p.playing = () => p.timer !== null;
  p.draw = (i) => {
    const s = p.strip;
    if (!s) return;
    p.index = ((i % s.frames) + s.frames) % s.frames;
    const ctx = parts.canvas.getContext("2d");
    ctx.clearRect(0, 0, s.width, s.height);
    ctx.drawImage(s.bitmap, PADDING + p.index * (s.width + PADDING), PADDING, s.width, s.height,
                  0, 0, s.width, s.height);
    parts.frame.value = String(p.index);
    parts.frameValue.textContent = `${p.index + 1} / ${s.frames}`;
    parts.frame.setAttribute("aria-valuetext", `frame ${p.index + 1} of ${s.frames}`);
    parts.canvas.dataset.frame = String(p.index);
  };
  const delay = () => 1000 / ((p.strip ? p.strip.fps : 12) * speed());
  p.start = () => {
    if (!p.strip) return;
    p.stop();
    const tick = () => {
      p.draw(p.index + 1);
      p.timer = setTimeout(tick, delay());
    };
    p.timer = setTimeout(tick, delay());
    parts.play.textContent = "Pause";
    parts.play.setAttribute("aria-pressed", "true");
  };
  p.stop = (clear = false) => {
    clearTimeout(p.timer);
    p.timer = null;
    parts.play.textContent = "Play";
    parts.play.setAttribute("aria-pressed", "false");
    if (clear) {
      p.strip = null;
      parts.canvas.hidden = true;
      parts.controls.hidden = true;
      parts.placeholder.hidden = false;
      parts.download.hidden = true;
      parts.caption.textContent = "";
    }
  };
  /** Show a strip of `fps` frames of width × height: the first frame, the controls, no play yet. */
  p.show = (bitmap, width, height, fps) => {
    p.stop();
    const frames = Math.max(1, Math.round((bitmap.width - PADDING) / (width + PADDING)));
    p.strip = { bitmap, frames, width, height, fps };
    parts.canvas.width = width;
    parts.canvas.height = height;
    parts.canvas.hidden = false;
    parts.controls.hidden = false;
    parts.placeholder.hidden = true;
    parts.frame.max = String(frames - 1);
    p.draw(0);
    fitPixels(parts.canvas);
    return frames;
  };
  parts.play.addEventListener("click", () => (p.playing() ? p.stop() : p.start()));
  parts.frame.addEventListener("input", () => {
    p.stop();
    p.draw(Number(parts.frame.value));
  });
  return p;
}

const player = makeStripPlayer({
  canvas: el.player, controls: el.playerControls, placeholder: el.animationPlaceholder, play: el.play,
  frame: el.frame, frameValue: el.frameValue, download: el.download, caption: el.animationCaption,
}, () => Number(el.speed.value));

el.speed.addEventListener("change", () => {
  if (player.playing()) player.start();
  writeHash();
});

async function interpolate() {
  if (!state.card || !state.ready) return;
  clearError();
  const path = interpolateRequest("png", 1, false);
  const token = ++state.interpToken;
  el.interpolate.setAttribute("aria-busy", "true");
  setStatus("Making the animation…", "busy");
  try {
    const response = await api(path);
    const blob = await response.blob();
    const bitmap = await createImageBitmap(blob);
    if (token !== state.interpToken) return;
    const card = state.card;
    const width = card.image.width, height = card.image.height;
    const count = player.show(bitmap, width, height, Number(el.fps.value.trim()) || 12);  // frames in the strip
    const gifPath = interpolateRequest("gif", Number(el.interpScale.value), true);
    const name = filenameOf(response, `${card.name}-interpolation.png`).replace(/\.png$/, ".gif");
    el.player.setAttribute("aria-label", `Animation of ${count} frames from ${card.name}`);
    const psi = new URLSearchParams(path.split("?")[1]).get("truncation") || modelTruncation(card);
    el.animationCaption.textContent = `${name} · ${count} frames at ${el.fps.value.trim()} fps · `
      + `${el.method.value}${Number(psi) !== 1 ? ` · ψ ${psi}` : ""}`;
    el.download.href = gifPath;
    el.download.download = name;
    el.download.hidden = false;
    el.interpLink.value = absolute(gifPath);
    el.interpCurl.value = `curl -OJ ${shellQuote(absolute(gifPath))}`;
    writeHash();
    if (!reducedMotion.matches) player.start();  // no autoplay when the user asks for less motion
    setStatus("Ready", "ok");
  } catch (err) {
    if (token !== state.interpToken) return;
    setStatus(state.ready ? "Ready" : "Warming up", state.ready ? "ok" : "wait");
    reportError(err, "Interpolating");
  } finally {
    if (token === state.interpToken) el.interpolate.removeAttribute("aria-busy");
  }
}

el.interpForm.addEventListener("submit", (e) => {
  e.preventDefault();
  interpolate();
});

// ------------------------------------------------------------------ morph two real images
//
// Each upload goes to POST /models/{m}/encode (multipart: `image`, plus `label` on conditional
// models); its reconstruction (the answer's reconstruction_url, scale 1) is shown upscaled by CSS.
// Once both latents are known, /interpolate?from_z=…&to_z=… plays as a PNG strip in its own canvas;
// the GIF download and the permalink name the model's version.

const morph = {
  form: $("morph-form"), label: $("morph-label"), labelField: $("morph-label-field"), frames: $("morph-frames"),
  fps: $("morph-fps"), scale: $("morph-scale"), make: $("morph-make"), download: $("morph-download"),
  player: $("morph-player"), placeholder: $("morph-animation-placeholder"), caption: $("morph-caption"),
  controls: $("morph-controls"), play: $("morph-play"), frame: $("morph-frame"), frameValue: $("morph-frame-value"),
  link: $("morph-link"),
  slots: {},
  token: 0,
};
for (const key of ["a", "b"]) {
  morph.slots[key] = {
    key, name: key === "a" ? "first" : "second", drop: $(`morph-drop-${key}`), input: $(`morph-file-${key}`),
    img: $(`morph-rec-${key}`), placeholder: $(`morph-placeholder-${key}`), state: $(`morph-state-${key}`),
    file: null, encoded: null, token: 0, url: null,
  };
}

function morphSlotState(slot, text, kind = "") {
  slot.state.textContent = text;
  if (kind) slot.state.dataset.state = kind; else delete slot.state.dataset.state;
}

/** Forget both images and the animation (a new model: its latents mean nothing to another). */
function resetMorph() {
  morphPlayer.stop(true);
  morph.token++;
  for (const slot of Object.values(morph.slots)) {
    slot.token++;
    slot.file = null;
    slot.encoded = null;
    slot.input.value = "";
    slot.drop.removeAttribute("aria-busy");
    if (slot.url) URL.revokeObjectURL(slot.url);
    slot.url = null;
    slot.img.hidden = true;
    slot.img.removeAttribute("src");
    slot.placeholder.hidden = false;
    morphSlotState(slot, "");
  }
  morph.make.disabled = true;
  morph.link.value = "";
}

/** Fill the morph panel's controls for `card` (called when a model is selected). */
function setupMorph(card) {
  const names = classNames(card);
  fillClassSelect(morph.label, names, false);
  morph.labelField.hidden = names.length === 0;
  const h = (card.image && card.image.height) || 28;
  fillScaleSelect(morph.scale, card, Math.floor(256 / h));
  const ds = card.dataset && (typeof card.dataset === "string" ? card.dataset : card.dataset.name);
  $("morph-trained").textContent = ds ? `; ${card.name} was trained on ${ds}` : "";
  resetMorph();
}

/** The API's words for a failed request, with what to do about a busy service. */
function morphErrorText(err) {
  if (!(err instanceof ApiError)) return String(err);
  if (err.status === 503) {
    const wait = err.retryAfter ? ` in ${err.retryAfter} s` : " in a moment";
    return `${err.message} — the service is busy: retry${wait} (choose the file again).`;
  }
  return err.status === 0 ? err.message : `HTTP ${err.status}: ${err.message}`;
}

async function encodeSlot(slot) {
  const card = state.card;
  if (!card || !slot.file) return;
  clearError();
  morphPlayer.stop(true);
  const token = ++slot.token;
  slot.encoded = null;
  morph.make.disabled = true;
  slot.drop.setAttribute("aria-busy", "true");
  morphSlotState(slot, `Projecting “${slot.file.name}” into ${card.name}… (a few seconds)`);
  const body = new FormData();
  body.append("image", slot.file, slot.file.name);
  if (isConditional(card)) body.append("label", morph.label.value);
  try {
    const encoded = await (await api(`/models/${encodeURIComponent(card.name)}/encode`,
                                     { method: "POST", body })).json();
    if (token !== slot.token) return;
    const blob = await (await api(encoded.reconstruction_url)).blob();  // scale 1, upscaled by CSS
    if (token !== slot.token) return;
    if (slot.url) URL.revokeObjectURL(slot.url);
    slot.url = URL.createObjectURL(blob);
    slot.img.src = slot.url;
    slot.img.dataset.src = encoded.reconstruction_url;
    slot.img.alt = `Reconstruction of the ${slot.name} image (${slot.file.name}) by ${encoded.model}`;
    slot.img.hidden = false;
    slot.placeholder.hidden = true;
    slot.encoded = encoded;
    const psnr = encoded.mse > 0 ? `, PSNR ${(10 * Math.log10(4 / encoded.mse)).toFixed(1)} dB` : "";
    morphSlotState(slot, `Reconstructed “${slot.file.name}” (${encoded.steps} steps${psnr}).`, "ok");
    if (morph.slots.a.encoded && morph.slots.b.encoded) {
      morph.make.disabled = false;
      await morphInterpolate();
    }
  } catch (err) {
    if (token !== slot.token) return;
    const text = morphErrorText(err);
    morphSlotState(slot, `Not reconstructed: ${text}`, "bad");
    showError(`Encoding the ${slot.name} image failed:`, text);
  } finally {
    if (token === slot.token) slot.drop.removeAttribute("aria-busy");
  }
}

function takeFile(slot, file) {
  if (!file) return;
  slot.file = file;
  encodeSlot(slot);
}

for (const slot of Object.values(morph.slots)) {
  slot.input.addEventListener("change", () => takeFile(slot, slot.input.files && slot.input.files[0]));
  slot.drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
    slot.drop.dataset.over = "true";
  });
  slot.drop.addEventListener("dragleave", () => { delete slot.drop.dataset.over; });
  slot.drop.addEventListener("drop", (e) => {
    e.preventDefault();
    delete slot.drop.dataset.over;
    takeFile(slot, e.dataTransfer.files && e.dataTransfer.files[0]);
  });
  slot.img.addEventListener("load", () => fitPixels(slot.img));
}
// A new class: both images are projected again, into that class.
morph.label.addEventListener("change", () => { for (const slot of Object.values(morph.slots)) encodeSlot(slot); });

/** The /interpolate request from the first latent to the second (`label` as the encode answers gave it). */
function morphRequest(format, scale) {
  const card = state.card;
  const a = morph.slots.a.encoded, b = morph.slots.b.encoded;
  const q = new URLSearchParams({ model: card.name, from_z: a.z, to_z: b.z });
  if (a.label !== null && a.label !== undefined) {
    if (a.label === b.label) q.set("label", String(a.label));
    else { q.set("from_label", String(a.label)); q.set("to_label", String(b.label)); }
  }
  q.set("frames", morph.frames.value.trim());
  q.set("fps", morph.fps.value.trim());
  q.set("scale", String(scale));
  if (format === "png") q.set("format", "png");
  q.set("version", a.version);  // the latents belong to this version
  return `/interpolate?${q}`;
}

const morphPlayer = makeStripPlayer({
  canvas: morph.player, controls: morph.controls, placeholder: morph.placeholder, play: morph.play,
  frame: morph.frame, frameValue: morph.frameValue, download: morph.download, caption: morph.caption,
});

async function morphInterpolate() {
  const card = state.card;
  if (!card || !morph.slots.a.encoded || !morph.slots.b.encoded) return;
  clearError();
  const path = morphRequest("png", 1);
  const token = ++morph.token;
  morph.make.setAttribute("aria-busy", "true");
  setStatus("Making the morph…", "busy");
  try {
    const response = await api(path);
    const bitmap = await createImageBitmap(await response.blob());
    if (token !== morph.token) return;
    const width = card.image.width, height = card.image.height;
    const count = morphPlayer.show(bitmap, width, height, Number(morph.fps.value.trim()) || 12);
    const gifPath = morphRequest("gif", Number(morph.scale.value));
    const name = filenameOf(response, `${card.name}-morph.png`).replace(/\.png$/, ".gif");
    const files = `${morph.slots.a.file.name} → ${morph.slots.b.file.name}`;
    morph.player.setAttribute("aria-label", `Morph of ${count} frames from ${files} by ${card.name}`);
    morph.caption.textContent = `${name} · ${files} · ${count} frames at ${morph.fps.value.trim()} fps`;
    morph.download.href = gifPath;
    morph.download.download = name;
    morph.download.hidden = false;
    morph.link.value = absolute(gifPath);
    if (!reducedMotion.matches) morphPlayer.start();
    setStatus("Ready", "ok");
  } catch (err) {
    if (token !== morph.token) return;
    setStatus(state.ready ? "Ready" : "Warming up", state.ready ? "ok" : "wait");
    showError("Making the morph failed:", morphErrorText(err));
  } finally {
    if (token === morph.token) morph.make.removeAttribute("aria-busy");
  }
}

morph.form.addEventListener("submit", (e) => {
  e.preventDefault();
  morphInterpolate();
});

// ------------------------------------------------------------------ draw (translators)
//
// The canvas is the translator's input at its own size (the card's `input`, e.g. 64 × 64), upscaled
// on screen: what you see is the PNG the model gets, pixel for pixel. Strokes are rasterised on the
// input's pixel grid (squares of the line width along each segment, no anti-aliasing), so they look
// like the edge maps pix2pix was trained on (training/pairs.py): black lines, 1 px wide, on white.
// While the user draws, the canvas's PNG goes to POST /models/{m}/translate, debounced (once the
// drawing rests DRAW_DEBOUNCE_MS, at least every DRAW_MAX_WAIT_MS during a long stroke, at once when
// a stroke ends) and latest-wins (a newer drawing aborts the older request); the answer (scale 1) is
// shown beside it, upscaled by CSS. An upload is drawn into the canvas (scaled to the input size)
// and translated the same way: the keyboard's way in.

const DRAW_DEBOUNCE_MS = 150;
const DRAW_MAX_WAIT_MS = 500;
const DRAW_INK = "#000000", DRAW_PAPER = "#ffffff";  // the edge maps' colours: black lines on white

const draw = {
  model: $("draw-model"), width: $("draw-width"), file: $("draw-file"), undo: $("draw-undo"),
  clear: $("draw-clear"), download: $("draw-download"), canvas: $("draw-canvas"),
  placeholder: $("draw-placeholder"), result: $("draw-result"), resultPlaceholder: $("draw-result-placeholder"),
  caption: $("draw-caption"), inputCaption: $("draw-input-caption"), state: $("draw-state"),
  trained: $("draw-trained"), measured: $("draw-measured"),
  translators: [],  // cards of the loaded translators (from /models)
  card: null,       // the chosen one
  layers: [],       // what is drawn, oldest first: {points: [[x, y, width], …]} or {bitmap, name}
  current: null,    // the stroke under the pointer: {pointerId, points}
  timer: null, pendingSince: 0,  // the debounce
  controller: null, token: 0, url: null,  // the request in flight, and the object URL we own
};

/** Whether a model card says it translates: its capabilities (a list or a map), else its family. */
function canTranslate(m) {
  const c = m.capabilities !== undefined ? m.capabilities : m.answers;
  if (Array.isArray(c)) return c.includes("translate");
  if (c && typeof c === "object") return Boolean(c.translate);
  return m.family === "pix2pix";
}

/** A translator's input: channels, size and the transform it was trained on (its card's `input`). */
function inputOf(card) {
  const i = card.input && typeof card.input === "object" ? card.input : {};
  const img = card.image || {};
  return { width: i.width || img.width || 28, height: i.height || img.height || 28,
           channels: i.channels || img.channels || 1, transform: i.transform || null };
}

function drawState(text, kind = "") {
  draw.state.textContent = text;
  if (kind) draw.state.dataset.state = kind; else delete draw.state.dataset.state;
}

/** Fill the panel for the translators among `models` (called once the models are listed). */
function setupDraw(models) {
  draw.translators = models.filter(canTranslate);
  draw.model.replaceChildren(...draw.translators.map((m) => new Option(m.name, m.name)));
  const none = draw.translators.length === 0;
  for (const c of [draw.model, draw.file]) c.disabled = none;
  if (none) {
    draw.card = null;
    draw.canvas.hidden = true;
    draw.placeholder.hidden = false;
    draw.placeholder.textContent = "No translator is loaded.";
    drawState("No translator is loaded: drawing needs a pix2pix checkpoint (such as fashion-edges2fashion or "
              + "emoji-edges2emoji) in the service's checkpoints folder.", "bad");
    syncDrawButtons();
    return;
  }
  selectTranslator(draw.translators[0].name);
}

/** What `evaluate` measured of a translator on held-out pairs (its card's metrics), in one line; "" when
 * it was not measured. */
function translatorMeasured(card) {
  const m = (card.metrics && typeof card.metrics === "object") ? card.metrics : {};
  const num = (v) => typeof v === "number";
  if (!num(m.fid)) return "";
  const parts = [`FID ${m.fid.toFixed(1)}${num(m.fid_floor) ? ` (real: ${m.fid_floor.toFixed(2)})` : ""}`];
  if (num(m.l1)) parts.push(`L1 ${m.l1.toFixed(3)}`);
  if (num(m.accuracy)) {
    parts.push(`class accuracy ${m.accuracy.toFixed(3)}${num(m.sample_accuracy_real) ? ` (targets: ${m.sample_accuracy_real.toFixed(3)})` : ""}`);
  }
  const pairs = num(m.num_pairs) ? ` on ${fmtNumber(m.num_pairs)} held-out pairs` : "";
  let text = `Measured${pairs}: ${parts.join(", ")}.`;
  const b = m.baseline;
  if (b && typeof b === "object" && num(b.fid)) {
    text += ` The L1-only baseline, trained as long: FID ${b.fid.toFixed(1)}${num(b.l1) ? `, L1 ${b.l1.toFixed(3)}` : ""}.`;
  }
  return text;
}

function selectTranslator(name) {
  const card = draw.translators.find((m) => m.name === name);
  if (!card) return;
  const before = draw.card ? inputOf(draw.card) : null;
  const input = inputOf(card);
  draw.card = card;
  draw.model.value = card.name;
  const ds = card.dataset && (typeof card.dataset === "string" ? card.dataset : card.dataset.name);
  const transform = input.transform ? ` (${input.transform} of ${ds || "its dataset"})` : "";
  draw.trained.textContent = transform;
  draw.measured.textContent = translatorMeasured(card);
  draw.inputCaption.textContent = `Input: ${input.width} × ${input.height}${transform ? `, ${input.transform}` : ""}`;
  draw.placeholder.hidden = true;
  draw.canvas.hidden = false;
  drawState("");
  if (!before || before.width !== input.width || before.height !== input.height) {
    draw.canvas.width = input.width;  // the drawing's coordinates belong to the old size: start again
    draw.canvas.height = input.height;
    clearDrawing();
  } else {
    renderDrawing();
    if (draw.layers.length) flushTranslate();
  }
  fitPixels(draw.canvas);
}

draw.model.addEventListener("change", () => selectTranslator(draw.model.value));
draw.result.addEventListener("load", () => fitPixels(draw.result));

/** One square of `width` pixels of ink centred on pixel (x, y). */
function dab(ctx, x, y, width) {
  const o = Math.floor((width - 1) / 2);
  ctx.fillRect(x - o, y - o, width, width);
}

/** The pixels of the segment a → b (Bresenham), each a dab of b's width. */
function plotSegment(ctx, a, b) {
  let [x0, y0] = a;
  const [x1, y1, width] = b;
  const dx = Math.abs(x1 - x0), dy = -Math.abs(y1 - y0);
  const sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
  let err = dx + dy;
  ctx.fillStyle = DRAW_INK;
  for (;;) {
    dab(ctx, x0, y0, width);
    if (x0 === x1 && y0 === y1) return;
    const e2 = 2 * err;
    if (e2 >= dy) { err += dy; x0 += sx; }
    if (e2 <= dx) { err += dx; y0 += sy; }
  }
}

/** Paint every layer again on white (after an undo, a clear or a new translator of the same size). */
function renderDrawing() {
  const c = draw.canvas, ctx = c.getContext("2d");
  ctx.fillStyle = DRAW_PAPER;  // opaque, so that the PNG is exactly what is shown
  ctx.fillRect(0, 0, c.width, c.height);
  for (const layer of draw.layers) {
    if (layer.bitmap) {
      ctx.imageSmoothingEnabled = true;
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(layer.bitmap, 0, 0, c.width, c.height);
      continue;
    }
    const pts = layer.points;
    for (let i = 0; i < pts.length; i++) plotSegment(ctx, pts[Math.max(0, i - 1)], pts[i]);
  }
}

function syncDrawButtons() {
  const empty = draw.layers.length === 0;
  draw.undo.disabled = empty || !draw.card;
  draw.clear.disabled = empty || !draw.card;
  const strokes = draw.layers.filter((l) => l.points).length;
  const image = draw.layers.find((l) => l.bitmap);
  const what = empty ? "empty" : [image ? `the image “${image.name}”` : "", strokes ? `${strokes} stroke${strokes > 1 ? "s" : ""}` : ""]
    .filter(Boolean).join(" and ");
  draw.canvas.setAttribute("aria-label", `Drawing area (${what})`);
}

/** The output's frame is busy from the moment a translation is due until the latest one is shown. */
function drawBusy(busy) {
  const frame = draw.result.parentElement;
  if (busy) frame.setAttribute("aria-busy", "true"); else frame.removeAttribute("aria-busy");
}

/** Forget the translation shown and any request in flight. */
function resetDrawResult() {
  clearTimeout(draw.timer);
  draw.timer = null;
  draw.token++;
  if (draw.controller) draw.controller.abort();
  draw.controller = null;
  drawBusy(false);
  if (draw.url) URL.revokeObjectURL(draw.url);
  draw.url = null;
  draw.result.hidden = true;
  draw.result.removeAttribute("src");
  draw.resultPlaceholder.hidden = false;
  draw.download.hidden = true;
  draw.caption.textContent = "Output";
}

function clearDrawing() {
  draw.layers = [];
  draw.current = null;
  renderDrawing();
  resetDrawResult();
  syncDrawButtons();
}

/** The layers changed: new buttons' state, and a translation soon. An empty canvas is not sent. */
function drawingChanged(now = false) {
  syncDrawButtons();
  if (!draw.layers.length) {
    resetDrawResult();
    return;
  }
  if (now) flushTranslate(); else scheduleTranslate();
}

/** Debounced: send once the drawing rests DRAW_DEBOUNCE_MS, and at least every DRAW_MAX_WAIT_MS. */
function scheduleTranslate() {
  const t = performance.now();
  if (draw.timer === null) draw.pendingSince = t;
  clearTimeout(draw.timer);
  const wait = Math.max(0, Math.min(DRAW_DEBOUNCE_MS, draw.pendingSince + DRAW_MAX_WAIT_MS - t));
  draw.timer = setTimeout(sendDrawing, wait);
  drawBusy(true);
}

function flushTranslate() {
  clearTimeout(draw.timer);
  sendDrawing();
}

async function sendDrawing() {
  draw.timer = null;
  const card = draw.card;
  if (!card || !draw.layers.length) {
    drawBusy(false);
    return;
  }
  drawBusy(true);
  if (draw.controller) draw.controller.abort();  // latest wins: the older drawing's answer is not wanted
  const controller = new AbortController();
  draw.controller = controller;
  const token = ++draw.token;
  const upload = draw.layers.length === 1 && draw.layers[0].bitmap ? draw.layers[0].name : null;
  const drawn = await new Promise((resolve) => draw.canvas.toBlob(resolve, "image/png"));
  const png = new Uint8Array(await drawn.arrayBuffer());  // bytes, not a Blob: the same upload, inspectable
  if (token !== draw.token) return;  // a newer drawing is on its way
  const started = performance.now();
  try {
    const response = await api(`/models/${encodeURIComponent(card.name)}/translate`, {
      method: "POST", body: png, headers: { "Content-Type": "image/png" }, signal: controller.signal });
    const blob = await response.blob();
    if (token !== draw.token) return;
    if (draw.url) URL.revokeObjectURL(draw.url);
    draw.url = URL.createObjectURL(blob);
    draw.result.src = draw.url;
    draw.result.alt = `${card.name}'s translation of ${draw.canvas.getAttribute("aria-label").replace(/^Drawing area \((.*)\)$/, "$1")}`;
    draw.result.hidden = false;
    draw.resultPlaceholder.hidden = true;
    draw.download.href = draw.url;
    draw.download.download = `${card.name}-drawing.png`;
    draw.download.hidden = false;
    draw.caption.textContent = `Output of ${card.name} · ${Math.round(performance.now() - started)} ms`;
    if (upload) drawState(`Translated “${upload}” with ${card.name}.`, "ok");
    else if (draw.state.dataset.state === "bad") drawState("");
  } catch (err) {
    if (controller.signal.aborted || token !== draw.token) return;  // a newer drawing took over
    drawState(`Not translated: ${morphErrorText(err)}`, "bad");
  } finally {
    if (token === draw.token && draw.timer === null) {
      draw.controller = null;
      drawBusy(false);
    }
  }
}

/** The input pixel under a pointer event, clamped to the canvas. */
function drawPixel(e) {
  const c = draw.canvas, r = c.getBoundingClientRect();
  const x = Math.floor(((e.clientX - r.left) / r.width) * c.width);
  const y = Math.floor(((e.clientY - r.top) / r.height) * c.height);
  const width = Number(draw.width.value) + (e.pointerType === "pen" && e.pressure > 0.6 ? 1 : 0);
  return [Math.max(0, Math.min(c.width - 1, x)), Math.max(0, Math.min(c.height - 1, y)), width];
}

draw.canvas.addEventListener("pointerdown", (e) => {
  if (!draw.card || !e.isPrimary || e.button !== 0 || draw.current) return;
  e.preventDefault();
  try { draw.canvas.setPointerCapture(e.pointerId); } catch (err) { /* not an active pointer: draw uncaptured */ }
  const p = drawPixel(e);
  draw.current = { pointerId: e.pointerId, points: [p] };
  draw.layers.push({ points: draw.current.points });
  plotSegment(draw.canvas.getContext("2d"), p, p);
  drawingChanged();
});

draw.canvas.addEventListener("pointermove", (e) => {
  const stroke = draw.current;
  if (!stroke || e.pointerId !== stroke.pointerId) return;
  const ctx = draw.canvas.getContext("2d");
  const events = (e.getCoalescedEvents && e.getCoalescedEvents()) || [];
  let moved = false;
  for (const ev of events.length ? events : [e]) {
    const p = drawPixel(ev);
    const last = stroke.points[stroke.points.length - 1];
    if (p[0] === last[0] && p[1] === last[1] && p[2] === last[2]) continue;
    plotSegment(ctx, last, p);
    stroke.points.push(p);
    moved = true;
  }
  if (moved) drawingChanged();
});

for (const type of ["pointerup", "pointercancel"]) {
  draw.canvas.addEventListener(type, (e) => {
    if (!draw.current || e.pointerId !== draw.current.pointerId) return;
    draw.current = null;
    drawingChanged(true);  // the stroke is done: no need to wait for the debounce
  });
}

draw.undo.addEventListener("click", () => {
  if (draw.current) return;
  draw.layers.pop();
  renderDrawing();
  drawingChanged(true);
  drawState(draw.layers.length ? "Undone: the last stroke is gone." : "Undone: the canvas is empty.");
});

draw.clear.addEventListener("click", () => {
  clearDrawing();
  drawState("Cleared: the canvas is empty.");
});

draw.file.addEventListener("change", async () => {
  const file = draw.file.files && draw.file.files[0];
  if (!file || !draw.card) return;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (e) {
    drawState(`Not translated: “${file.name}” could not be read as an image; upload a PNG, JPEG or WebP image.`,
              "bad");
    return;
  }
  draw.layers = [{ bitmap, name: file.name }];  // an upload starts a new drawing (undo takes it away)
  draw.current = null;
  renderDrawing();
  drawingChanged(true);
});

// ------------------------------------------------------------------ copy buttons

/** Copy `text`; where the async clipboard is missing (plain-HTTP origins), copy `input`'s selection. */
async function copyText(text, input = null) {
  if (!text) return false;
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (e) {
    if (!input) return false;
    input.focus();
    input.select();
    try { return document.execCommand("copy"); } catch (e2) { return false; }
  }
}

for (const button of document.querySelectorAll("[data-copy]")) {
  button.addEventListener("click", async () => {
    const input = $(button.dataset.copy);
    const ok = await copyText(input.value, input);
    setStatus(ok ? `Copied: ${input.value}` : "Nothing copied: select the text and copy it by hand", ok ? "ok" : "wait");
  });
}

$("copy-page").addEventListener("click", async () => {
  // The page's own URL: its #hash holds model, class, seed, grid size and truncation.
  const ok = await copyText(location.href);
  setStatus(ok ? `Copied: ${location.href}` : "Nothing copied: copy the address bar instead", ok ? "ok" : "wait");
});

// ------------------------------------------------------------------ start

el.seed.value = String(readHash().seed ?? randomSeed(16));
el.fromSeed.value = el.seed.value;
el.toSeed.value = String(randomSeed());
el.morphSeed.value = el.seed.value;
el.downloadPng.setAttribute("download", "");
el.download.setAttribute("download", "");
morph.download.setAttribute("download", "");
syncMode();
waitUntilReady();
