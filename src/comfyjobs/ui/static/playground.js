// The playground: the workflows of the active catalog, a form generated from each one's parameters,
// and a live panel for the job it submits. Text from the API is only ever set as text, never as HTML.
import { ApiError, apiKey, followTask, request, setApiKey } from "./api.js";
import { asCurl, asPython } from "./snippets.js";

const MEDIA = new Set(["image", "mask", "video", "audio", "file"]);
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

// --- The key -------------------------------------------------------------------------------------
function askForKey(message) {
  $("key-panel").hidden = false;
  $("workflows").hidden = true;
  $("workflow-panel").hidden = true;
  if (message) $("key-title").textContent = message;
  $("api-key").focus();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setApiKey($("api-key").value.trim());
  $("key-panel").hidden = true;
  $("workflows").hidden = false;
  start();
});
$("change-key").addEventListener("click", () => askForKey("Your API key"));

// --- The workflows -------------------------------------------------------------------------------
async function start() {
  let workflows;
  try {
    workflows = await request("GET", "/workflows");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return askForKey(apiKey() ? "That key was refused: your API key" : "Your API key");
    $("workflows").replaceChildren(el("p", { class: "error", role: "alert", text: `Cannot list workflows: ${err.message}` }));
    return;
  }
  $("change-key").hidden = !apiKey();
  const nav = $("workflows");
  nav.replaceChildren(el("h2", { text: "Workflows" }));
  for (const w of workflows) {
    const button = el("button", { type: "button", "data-workflow": w.id }, el("span", { text: w.id }), el("small", { text: w.description || "" }));
    button.addEventListener("click", () => openWorkflow(w.id));
    nav.append(button);
  }
  const wanted = new URLSearchParams(location.search).get("workflow");
  if (wanted && workflows.some((w) => w.id === wanted)) openWorkflow(wanted);
  history();
}

let current = null; // {workflow, fields: Map(name -> {param, input, error, ...})}

async function openWorkflow(id, values) {
  const workflow = await request("GET", `/workflows/${encodeURIComponent(id)}`);
  for (const b of document.querySelectorAll("nav button")) b.setAttribute("aria-current", String(b.dataset.workflow === id));
  $("workflow-title").textContent = workflow.id;
  $("workflow-description").textContent = workflow.description || "";
  const fields = new Map();
  const box = $("fields");
  box.replaceChildren();
  for (const param of workflow.parameters) {
    const field = control(param);
    fields.set(param.name, field);
    box.append(field.wrapper);
  }
  current = { workflow, fields };
  if (values) fill(values);
  $("form-error").hidden = true;
  $("workflow-panel").hidden = false;
  snippets();
}

// The form set to a job's parameters (history, "run again").
function fill(values) {
  for (const [name, value] of Object.entries(values)) {
    const f = current.fields.get(name);
    if (!f || f.media || !f.input) continue;
    if (f.random) {
      f.random.checked = value === "random";
      f.input.disabled = f.random.checked;
    }
    if (f.input.type === "checkbox") f.input.checked = Boolean(value);
    else if (value !== "random") f.input.value = value === null ? "" : String(value);
  }
}

// The request as it stands, without uploading anything (a media file shows as its name).
function plainParams() {
  const params = {};
  for (const [name, f] of current.fields) {
    const value = f.media ? f.describe() : f.value();
    if (value !== undefined) params[name] = value;
  }
  return params;
}

function snippets() {
  if (!current) return;
  const body = { workflow_id: current.workflow.id, params: plainParams(), priority: Number($("priority").value) };
  $("as-curl").value = asCurl(location.origin, body, Boolean(apiKey()));
  $("as-python").value = asPython(location.origin, body);
}
$("job-form").addEventListener("input", snippets);
$("job-form").addEventListener("change", snippets);

// --- One control per parameter -------------------------------------------------------------------
function control(param) {
  const id = `param-${param.name}`;
  const help = el("p", { class: "help", id: `${id}-help`, text: param.description || "" });
  const error = el("p", { class: "error", id: `${id}-error`, role: "alert", hidden: true });
  const label = el("label", { for: id, text: param.name + (param.required ? " (required)" : "") });
  const wrapper = el("div", { class: "field", "data-param": param.name }, label);
  const described = `${id}-help ${id}-error`;
  const field = { param, error, wrapper, value: () => undefined };

  if (MEDIA.has(param.type)) return mediaControl(param, id, described, field, help, error);

  let input;
  if (param.type === "choice") {
    input = el("select", { id, name: param.name, "aria-describedby": described, required: param.required });
    if (param.nullable || !param.required) input.append(el("option", { value: "", text: param.nullable ? "(none)" : "(default)" }));
    for (const choice of param.choices || []) input.append(el("option", { value: choice, text: choice }));
    if (param.default !== undefined && param.default !== null) input.value = String(param.default);
    field.value = () => (input.value === "" ? (param.nullable ? null : undefined) : input.value);
  } else if (param.type === "boolean") {
    input = el("input", { id, name: param.name, type: "checkbox", "aria-describedby": described });
    input.checked = Boolean(param.default);
    field.value = () => input.checked;
  } else if (param.type === "integer" || param.type === "number") {
    const integer = param.type === "integer";
    input = el("input", {
      id, name: param.name, type: "number", inputmode: integer ? "numeric" : "decimal",
      min: param.min, max: param.max, step: integer ? 1 : "any", required: param.required,
      "aria-describedby": described,
    });
    if (typeof param.default === "number") input.value = String(param.default);
    field.value = () => (input.value === "" ? undefined : Number(input.value));
    if (param.default === "random") {
      const random = el("input", { id: `${id}-random`, type: "checkbox", checked: true });
      input.disabled = true;
      random.addEventListener("change", () => { input.disabled = random.checked; if (!random.checked) input.focus(); });
      field.value = () => (random.checked ? "random" : input.value === "" ? undefined : Number(input.value));
      field.random = random;
      wrapper.append(input, el("div", { class: "inline" }, random, el("label", { for: `${id}-random`, text: "random" })), help, error);
      field.input = input;
      return field;
    }
    if (!integer && param.min !== undefined && param.max !== undefined) {
      const slider = el("input", { type: "range", min: param.min, max: param.max, step: "any", "aria-label": `${param.name} slider`, value: input.value });
      slider.addEventListener("input", () => { input.value = slider.value; });
      input.addEventListener("input", () => { slider.value = input.value; });
      wrapper.append(input, slider, help, error);
      field.input = input;
      return field;
    }
  } else {
    const long = /prompt/.test(param.name) || (param.max_length || 0) > 200;
    input = el(long ? "textarea" : "input", {
      id, name: param.name, maxlength: param.max_length, required: param.required,
      placeholder: param.example, "aria-describedby": described,
    });
    if (typeof param.default === "string") input.value = param.default;
    field.value = () => (input.value === "" && !param.required ? undefined : input.value);
  }
  field.input = input;
  wrapper.append(input, help, error);
  return field;
}

function mediaControl(param, id, described, field, help, error) {
  const file = el("input", { id, name: param.name, type: "file", accept: param.type === "mask" ? "image/*" : `${param.type === "file" ? "" : param.type}/*`, "aria-describedby": described });
  const urlId = `${id}-url`;
  const url = el("input", { id: urlId, type: "url", placeholder: "https://…" });
  const preview = el("img", { class: "preview", alt: `${param.name} preview`, hidden: true });
  const drop = el("div", { class: "drop" }, file, el("p", { class: "help", text: "or drop a file here" }), preview);
  let chosen = null;
  const choose = (f) => {
    chosen = f;
    if (f && f.type.startsWith("image/")) {
      preview.src = URL.createObjectURL(f);
      preview.hidden = false;
      if (param.type === "image") document.dispatchEvent(new CustomEvent("image-chosen", { detail: preview.src }));
    }
  };
  file.addEventListener("change", () => choose(file.files[0] || null));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); choose(e.dataTransfer.files[0] || null); });
  field.wrapper.append(drop, el("label", { for: urlId, text: `${param.name}: or a URL` }), url);
  const painter = param.type === "mask" ? maskPainter(param, id) : null;
  if (painter) field.wrapper.append(painter.box);
  field.wrapper.append(help, error);
  field.input = file;
  field.media = true;
  field.value = async () => {
    let blob = chosen;
    if (!blob && painter && painter.painted()) blob = await painter.blob();
    if (blob) {
      const form = new FormData();
      form.append("file", blob, blob.name || `${param.name}.png`);
      const asset = await request("POST", "/assets", form);
      return asset.id;
    }
    return url.value || undefined;
  };
  field.required = param.required;
  field.describe = () => (chosen ? `@${chosen.name}` : painter && painter.painted() ? "@mask.png" : url.value || undefined);
  return field;
}

// A mask painted over the chosen image: white where to repaint, on black (the mask sent is the image's
// size; the canvas shows the image with the mask over it).
function maskPainter(param, id) {
  const canvas = el("canvas", { id: `${id}-canvas`, class: "mask-canvas", width: 1, height: 1, "aria-label": `${param.name}: paint over the image` });
  const size = el("input", { id: `${id}-brush`, type: "range", min: 1, max: 128, value: 16 });
  const eraser = el("input", { id: `${id}-eraser`, type: "checkbox" });
  const clear = el("button", { type: "button", text: "Clear the mask" });
  const box = el(
    "div",
    { class: "painter", hidden: true },
    el("p", { class: "help", text: "Or paint it over the image: white is repainted." }),
    canvas,
    el("label", { for: `${id}-brush`, text: "Brush size" }),
    size,
    el("div", { class: "inline" }, eraser, el("label", { for: `${id}-eraser`, text: "Eraser" })),
    clear,
  );
  const mask = document.createElement("canvas");
  const image = new Image();
  let strokes = 0;
  const redraw = () => {
    const ctx = canvas.getContext("2d");
    ctx.globalAlpha = 1;
    ctx.drawImage(image, 0, 0);
    ctx.globalAlpha = 0.55;
    ctx.drawImage(mask, 0, 0);
    ctx.globalAlpha = 1;
  };
  const reset = () => {
    const m = mask.getContext("2d");
    m.fillStyle = "#000";
    m.fillRect(0, 0, mask.width, mask.height);
    strokes = 0;
    redraw();
  };
  image.addEventListener("load", () => {
    canvas.width = mask.width = image.naturalWidth;
    canvas.height = mask.height = image.naturalHeight;
    box.hidden = false;
    reset();
  });
  document.addEventListener("image-chosen", (e) => { image.src = e.detail; });
  const paint = (e) => {
    const r = canvas.getBoundingClientRect();
    const x = ((e.clientX - r.left) * canvas.width) / r.width;
    const y = ((e.clientY - r.top) * canvas.height) / r.height;
    const m = mask.getContext("2d");
    m.fillStyle = eraser.checked ? "#000" : "#fff";
    m.beginPath();
    m.arc(x, y, Number(size.value) / 2, 0, 2 * Math.PI);
    m.fill();
    if (!eraser.checked) strokes += 1;
    redraw();
  };
  let down = false;
  canvas.addEventListener("pointerdown", (e) => { down = true; canvas.setPointerCapture(e.pointerId); paint(e); });
  canvas.addEventListener("pointermove", (e) => { if (down) paint(e); });
  canvas.addEventListener("pointerup", () => { down = false; });
  clear.addEventListener("click", reset);
  return {
    box,
    painted: () => strokes > 0,
    blob: () => new Promise((resolve) => mask.toBlob((b) => resolve(new File([b], "mask.png", { type: "image/png" })), "image/png")),
  };
}

// --- Submitting and following a job --------------------------------------------------------------
function showErrors(err) {
  for (const f of current.fields.values()) f.error.hidden = true;
  const general = [];
  for (const { field, reason } of err.fields) {
    const name = String(field).replace(/^params\./, "").split(".")[0];
    const target = current.fields.get(name);
    if (target) {
      target.error.textContent = reason;
      target.error.hidden = false;
    } else general.push(`${field}: ${reason}`);
  }
  if (!err.fields.length) general.push(err.message);
  $("form-error").textContent = general.join("; ");
  $("form-error").hidden = general.length === 0;
  const first = [...current.fields.values()].find((f) => !f.error.hidden);
  if (first && first.input) first.input.focus();
}

$("job-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!current) return;
  const form = event.currentTarget;
  if (!form.noValidate && !form.reportValidity()) return;
  const params = {};
  try {
    for (const [name, f] of current.fields) {
      const value = await f.value();
      if (f.media && f.required && value === undefined) throw new ApiError(422, { error: { message: "", fields: [{ field: `params.${name}`, reason: "choose a file or give a URL" }] } });
      if (value !== undefined) params[name] = value;
    }
    const body = { workflow_id: current.workflow.id, params, priority: Number($("priority").value) };
    await submit(body);
  } catch (err) {
    if (err instanceof ApiError) showErrors(err);
    else { $("form-error").textContent = String(err); $("form-error").hidden = false; }
  }
});

let following = null;
let last = null; // the last request sent: "run again"

async function submit(body) {
  const accepted = await request("POST", "/generate", body);
  for (const f of current.fields.values()) f.error.hidden = true;
  $("form-error").hidden = true;
  last = body;
  follow(accepted.task_id);
  history();
}

async function again(newSeed) {
  if (!last) return;
  const params = { ...last.params };
  if (newSeed) params.seed = "random";
  try {
    await submit({ ...last, params });
  } catch (err) {
    $("run-status").textContent = err.message;
  }
}
$("run-again").addEventListener("click", () => again(false));
$("new-seed").addEventListener("click", () => again(true));

function follow(taskId) {
  if (following) following.abort();
  following = new AbortController();
  $("run-panel").hidden = false;
  $("run-title").textContent = `Job ${taskId}`;
  $("outputs").replaceChildren();
  $("run-progress").value = 0;
  const cancel = $("cancel");
  cancel.hidden = false;
  $("run-again").hidden = true;
  $("new-seed").hidden = true;
  cancel.onclick = async () => {
    try { await request("DELETE", `/tasks/${encodeURIComponent(taskId)}`); } catch (err) { $("run-status").textContent = err.message; }
  };
  followTask(taskId, (event) => show(event.data), following.signal).catch((err) => {
    if (err.name !== "AbortError") $("run-status").textContent = `Lost the job's events: ${err.message}`;
  });
}

function show(task) {
  if (!task || !task.status) return;
  const status = $("run-status");
  if (task.status === "PENDING") {
    const q = task.queue;
    status.textContent = q ? `Waiting: position ${q.position} of ${q.waiting}` : "Waiting";
  } else if (task.status === "STARTED" || task.status === "PROGRESS") {
    const p = task.progress;
    status.textContent = p && p.stage === "downloading" ? "Downloading models" : "Running";
    if (p && p.max) {
      $("run-progress").max = p.max;
      $("run-progress").value = p.value;
    }
    $("run-node").textContent = p && p.node_type ? `Node ${p.node} (${p.node_type})` : "";
  } else {
    status.textContent = task.status === "SUCCESS" ? "Done" : task.status === "FAILURE" ? `Failed: ${(task.error && task.error.message) || ""}` : "Cancelled";
    $("cancel").hidden = true;
    history(); // (its state there too)
    $("run-again").hidden = !last;
    $("new-seed").hidden = !last || !current || !current.fields.has("seed");
    if (task.status === "SUCCESS") {
      $("run-progress").value = $("run-progress").max;
      outputs(task.outputs || []);
    }
  }
}

function outputs(list) {
  const box = $("outputs");
  box.replaceChildren();
  for (const out of list) {
    const name = out.filename || "output";
    let media;
    if (out.kind === "image") media = el("img", { src: out.url, alt: name });
    else if (out.kind === "video") media = el("video", { src: out.url, controls: true });
    else if (out.kind === "audio") media = el("audio", { src: out.url, controls: true });
    box.append(el("figure", {}, media, el("figcaption", {}, el("a", { href: out.url, download: name, text: name }))));
  }
}

// The key is asked for first where the API needs one (and kept for the tab); with auth off, never.
let config = { keys_required: false, max_priority: 9, default_priority: 5 };
request("GET", "/ui/config").then(
  (found) => {
    config = found;
    priorities();
    return config.keys_required && !apiKey() ? askForKey("Your API key") : start();
  },
  () => {
    priorities();
    start();
  },
);

function priorities() {
  const select = $("priority");
  select.replaceChildren();
  for (let p = 0; p <= config.max_priority; p += 1) select.append(el("option", { value: p, text: String(p) }));
  select.value = String(Math.min(config.default_priority, config.max_priority));
}

// --- The caller's own jobs (GET /api/v2/jobs: this key's tenant, newest first) ------------------------
let cursor = null;

async function history(more = false) {
  let page;
  try {
    page = await request("GET", `/api/v2/jobs?limit=10${more && cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
  } catch {
    return; // (the history is a convenience: the playground works without it)
  }
  const list = $("history");
  if (!more) list.replaceChildren();
  for (const job of page.jobs) {
    const open = el("button", { type: "button", "data-task": job.id, text: `${job.id.slice(0, 8)} ${job.status}` });
    open.addEventListener("click", () => reopen(job.id));
    list.append(el("li", {}, open, el("span", { class: "help", text: ` ${job.create_time || ""}` })));
  }
  cursor = page.next_cursor;
  $("history-more").hidden = !cursor;
  $("history-panel").hidden = list.children.length === 0;
}
$("history-more").addEventListener("click", () => history(true));

async function reopen(taskId) {
  const task = await request("GET", `/tasks/${encodeURIComponent(taskId)}`);
  await openWorkflow(task.workflow_id, task.params || {});
  last = { workflow_id: task.workflow_id, params: task.params || {}, priority: task.priority };
  follow(taskId);
}
