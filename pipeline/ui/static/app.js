// xsam-pipeline ui: place prompts on a frame, preview, run a job, read its results, prompt live streams.
// Plain browser JavaScript, no build step; the server's JSON API is in pipeline/ui/server.py.
"use strict";

const POINT_RADIUS = 10;  // source pixels: X-SAM draws a point prompt as a disk of this radius
const BRUSH = 8;          // scribble stroke width, source pixels
const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                 "#fabed4", "#469990", "#dcbeff", "#9a6324"];
const POLL_MS = 500;

const $ = (id) => document.getElementById(id);

// Everything the page knows, in one place (the tests read it too).
const state = {
  config: null, source: null, frame: 0, prompts: [], preview: null,
  job: null, result: null, liveStreams: {},
};
window.uiState = state;

// ---------------------------------------------------------------- messages and the API

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

async function api(method, url, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers["Content-Type"] = "application/json";
  }
  let answer;
  try {
    answer = await fetch(url, options);
  } catch (error) {
    throw new Error(`the server does not answer (${error.message})`);
  }
  const type = answer.headers.get("Content-Type") || "";
  if (!answer.ok) {
    const reason = type.includes("json") ? (await answer.json()).message : `HTTP ${answer.status}`;
    throw new Error(reason);
  }
  return type.includes("json") ? answer.json() : answer.blob();
}

// Runs an action; its error is shown on the page, never lost in the console.
function guarded(action) {
  return async (...args) => {
    try {
      return await action(...args);
    } catch (error) {
      showMessage(error.message);
    }
  };
}

window.addEventListener("error", (event) => showMessage(`page error: ${event.message}`));
window.addEventListener("unhandledrejection", (event) => showMessage(`page error: ${event.reason}`));

function loadImage(blob) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => { URL.revokeObjectURL(image.src); resolve(image); };
    image.onerror = () => reject(new Error("the server sent an image the browser cannot read"));
    image.src = blob instanceof Blob ? URL.createObjectURL(blob) : blob;
  });
}

// ---------------------------------------------------------------- a stage: frame, overlay and marks

class Stage {
  constructor(element) {
    [this.frame, this.overlay, this.marks] = element.querySelectorAll("canvas");
  }

  setSize(width, height) {
    for (const canvas of [this.frame, this.overlay, this.marks]) {
      if (canvas.width !== width || canvas.height !== height) {
        canvas.width = width;
        canvas.height = height;
      }
    }
  }

  showFrame(image) {
    this.setSize(image.naturalWidth, image.naturalHeight);
    this.frame.getContext("2d").drawImage(image, 0, 0);
  }

  clearOverlay() {
    this.overlay.getContext("2d").clearRect(0, 0, this.overlay.width, this.overlay.height);
  }

  // The server's transparent mask PNG, then each object's box and label.
  async showOverlay(pngUrl, objects, label) {
    const image = await loadImage(pngUrl);
    const context = this.overlay.getContext("2d");
    context.clearRect(0, 0, this.overlay.width, this.overlay.height);
    context.drawImage(image, 0, 0);
    context.lineWidth = Math.max(2, this.overlay.width / 640);
    context.font = `${Math.round(Math.max(12, this.overlay.width / 70))}px sans-serif`;
    for (const object of objects) {
      const [x, y, w, h] = object.bbox;
      context.strokeStyle = object.color;
      context.strokeRect(x, y, w, h);
      const text = label(object);
      const textWidth = context.measureText(text).width + 6;
      const textHeight = parseInt(context.font, 10) + 4;
      const top = y >= textHeight ? y - textHeight : y;
      context.fillStyle = object.color;
      context.fillRect(x, top, textWidth, textHeight);
      context.fillStyle = "#fff";
      context.fillText(text, x + 3, top + textHeight - 4);
    }
  }

  // A mouse event's position in source pixels, whatever size the canvas is shown at.
  sourcePoint(event) {
    const rect = this.marks.getBoundingClientRect();
    const x = (event.clientX - rect.left) * this.marks.width / rect.width;
    const y = (event.clientY - rect.top) * this.marks.height / rect.height;
    return [Math.min(Math.max(Math.round(x), 0), this.marks.width - 1),
            Math.min(Math.max(Math.round(y), 0), this.marks.height - 1)];
  }
}

// Calls onPoint(point, event) for a click, onBox([x0,y0,x1,y1]) for a drag with the box tool and
// onStroke(points) for a drag with the scribble tool; onDrag(points) while dragging.
function watchMouse(stage, { onPoint, onBox, onStroke, onDrag }) {
  let dragging = null;
  stage.marks.addEventListener("mousedown", (event) => {
    dragging = { points: [stage.sourcePoint(event)], tool: currentTool() };
    event.preventDefault();
  });
  stage.marks.addEventListener("mousemove", (event) => {
    if (!dragging) return;
    dragging.points.push(stage.sourcePoint(event));
    if (onDrag) onDrag(dragging);
  });
  window.addEventListener("mouseup", (event) => {
    if (!dragging) return;
    const drag = dragging;
    dragging = null;
    const [x0, y0] = drag.points[0];
    const [x1, y1] = drag.points[drag.points.length - 1];
    const moved = Math.max(...drag.points.map(([x, y]) => Math.hypot(x - x0, y - y0)));
    if (moved < 4) {
      onPoint(drag.points[0], event);
    } else if (drag.tool === "scribble" && onStroke) {
      onStroke(drag.points);
    } else if (drag.tool !== "scribble" && onBox) {
      onBox([Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)]);
    }
  });
}

function currentTool() {
  return document.querySelector("input[name=tool]:checked").value;
}

// ---------------------------------------------------------------- prompts and their specs

// The CLI's spec string (pipeline/prompts.py): ids are the prompts' order, 0, 1, 2 ...
function promptSpec(prompt, id) {
  const at = `@${prompt.frame}`;
  if (prompt.kind === "point") return `point:${prompt.points.map((p) => p.join(",")).join(";")}${at}`;
  if (prompt.kind === "box") return `box:${prompt.box.join(",")}${at}`;
  return `scribble:${paintedName(id)}${at}`;
}

const paintedName = (id) => `prompt-${id}.png`;
const promptColour = (id) => COLOURS[id % COLOURS.length];

// The prompts as the server takes them: specs, and the PNG of each painted one.
function pagePrompts(prompts = state.prompts) {
  return prompts.map((prompt, id) => ({ spec: promptSpec(prompt, id), png: prompt.png || null }));
}

// A scribble as the CLI's scribble PNG: the frame's size, white strokes on black.
function paintScribble(strokes, width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, width, height);
  context.strokeStyle = "#fff";
  context.lineWidth = BRUSH;
  context.lineCap = context.lineJoin = "round";
  context.beginPath();
  strokes.forEach(([x, y], i) => (i ? context.lineTo(x, y) : context.moveTo(x, y)));
  context.stroke();
  return canvas.toDataURL("image/png");
}

function drawPrompt(context, prompt, colour, active) {
  context.strokeStyle = context.fillStyle = colour;
  context.lineWidth = Math.max(2, context.canvas.width / 500);
  context.globalAlpha = active ? 1 : 0.35;
  if (prompt.kind === "box") {
    const [x0, y0, x1, y1] = prompt.box;
    context.strokeRect(x0, y0, x1 - x0, y1 - y0);
  } else if (prompt.kind === "point") {
    for (const [x, y] of prompt.points) {
      context.beginPath();
      context.arc(x, y, POINT_RADIUS, 0, 2 * Math.PI);
      context.fill();
    }
  } else {
    context.lineWidth = BRUSH;
    context.lineCap = context.lineJoin = "round";
    context.beginPath();
    prompt.strokes.forEach(([x, y], i) => (i ? context.lineTo(x, y) : context.moveTo(x, y)));
    context.stroke();
  }
  context.globalAlpha = 1;
}

function drawMarks(drag) {
  const context = promptStage.marks.getContext("2d");
  context.clearRect(0, 0, context.canvas.width, context.canvas.height);
  state.prompts.forEach((prompt, id) => drawPrompt(context, prompt, promptColour(id), prompt.frame === state.frame));
  if (drag) {
    const id = state.prompts.length;
    const [x0, y0] = drag.points[0];
    const [x1, y1] = drag.points[drag.points.length - 1];
    const sketch = drag.tool === "scribble" ? { kind: "scribble", strokes: drag.points }
      : { kind: "box", box: [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)] };
    drawPrompt(context, sketch, promptColour(id), true);
  }
}

function shellQuote(text) {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, "'\\''")}'`;
}

function renderPrompts() {
  const list = $("prompt-list");
  list.replaceChildren();
  const specs = pagePrompts().map((p) => p.spec);
  specs.forEach((spec, id) => {
    const item = document.createElement("li");
    item.dataset.promptId = id;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = promptColour(id);
    const text = document.createElement("code");
    text.textContent = `${id}  ${spec}`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.title = `remove prompt ${id}`;
    remove.addEventListener("click", () => { state.prompts.splice(id, 1); promptsChanged(); });
    const go = document.createElement("button");
    go.type = "button";
    go.textContent = `frame ${state.prompts[id].frame}`;
    go.addEventListener("click", () => showFrame(state.prompts[id].frame));
    item.append(swatch, text, go, remove);
    list.append(item);
  });
  const source = state.source ? `${state.config.root}/${state.source.path}` : "VIDEO";
  $("command-text").value = ["xsam-pipeline", "run", source, ...specs.flatMap((s) => ["--prompt", s]), "--out", "OUT"]
    .map(shellQuote).join(" ");
  const key = state.source ? state.source.name : "*";
  $("prompts-json").value = JSON.stringify({ [key]: specs }, null, 1);
  const painted = $("painted-files");
  painted.replaceChildren();
  state.prompts.forEach((prompt, id) => {
    if (!prompt.png) return;
    const link = document.createElement("a");
    link.href = prompt.png;
    link.download = paintedName(id);
    link.textContent = `save ${paintedName(id)}`;
    painted.append(link, " ");
  });
  drawMarks();
}

function promptsChanged() {
  state.preview = null;
  promptStage.clearOverlay();
  $("preview-info").textContent = "";
  renderPrompts();
}

function addPrompt(prompt) {
  state.prompts.push({ ...prompt, frame: state.frame });
  promptsChanged();
}

// ---------------------------------------------------------------- source and frames

const promptStage = new Stage($("prompt-stage"));
let frameWanted = null;   // the frame the slider asks for
let frameLoading = false; // one request at a time: scrubbing asks only for the latest

async function showFrame(index) {
  if (!state.source) return;
  index = Math.max(0, Math.min(index, state.source.lastFrame));
  frameWanted = index;
  $("frame-slider").value = $("frame-number").value = index;
  if (frameLoading) return;
  frameLoading = true;
  try {
    while (frameWanted !== null) {
      const wanted = frameWanted;
      frameWanted = null;
      const blob = await api("GET", `/api/frame?path=${encodeURIComponent(state.source.path)}&index=${wanted}`);
      promptStage.showFrame(await loadImage(blob));
      state.frame = wanted;
      promptStage.clearOverlay();
      if (state.preview && state.preview.frame === wanted) await drawPreview();
      drawMarks();
      promptStage.frame.dataset.frame = wanted;
    }
  } catch (error) {
    showMessage(error.message);
  } finally {
    frameLoading = false;
  }
}

async function chooseSource(path) {
  showMessage("");
  state.prompts = [];
  state.preview = null;
  if (!path) { state.source = null; renderPrompts(); return; }
  const info = await api("GET", `/api/source?path=${encodeURIComponent(path)}`);
  state.source = { ...info, lastFrame: info.frame_count ? info.frame_count - 1 : 100000 };
  $("source-info").textContent = `${info.width}×${info.height}, ${info.fps.toFixed(2)} fps, `
    + `${info.frame_count ?? "?"} frames`;
  $("frame-slider").max = state.source.lastFrame;
  $("frame-number").max = state.source.lastFrame;
  $("job-name").value = info.name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_.-]/g, "_") || "job";
  state.frame = 0;
  renderPrompts();
  await showFrame(0);
}

// ---------------------------------------------------------------- preview

async function drawPreview() {
  await promptStage.showOverlay(state.preview.overlay, state.preview.objects,
    (o) => `p${o.prompt_id} ${o.score.toFixed(2)}`);
}

async function preview() {
  if (!state.source) throw new Error("pick a source first");
  showMessage("");
  $("preview-info").textContent = "segmenting…";
  const result = await api("POST", "/api/preview",
    { path: state.source.path, frame: state.frame, prompts: pagePrompts() });
  state.preview = result;
  await drawPreview();
  const others = state.prompts.length - result.prompt_ids.length;
  $("preview-info").textContent = `${result.objects.length} instance(s) on frame ${result.frame} in `
    + `${result.seconds.toFixed(2)} s` + (others ? `; ${others} prompt(s) on other frames not previewed` : "");
}

// ---------------------------------------------------------------- run and results

async function startJob(event) {
  event.preventDefault();
  if (!state.source) throw new Error("pick a source first");
  showMessage("");
  const job = await api("POST", "/api/jobs", {
    name: $("job-name").value, path: state.source.path, scope: $("job-scope").value,
    prompts: pagePrompts(), keyframe_every: Number($("keyframe-every").value),
  });
  state.job = job;
  $("run-button").disabled = true;
  renderJob();
  pollJob(job.name);
}

async function pollJob(name) {
  try {
    while (true) {
      const job = await api("GET", `/api/jobs/${encodeURIComponent(name)}`);
      state.job = job;
      renderJob();
      if (job.state !== "running") break;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    if (state.job.error) showMessage(`the job stopped: ${state.job.error.source}: ${state.job.error.reason}`);
    await listJobs();
    await showResults(state.job);
  } finally {
    $("run-button").disabled = false;
  }
}

function renderJob() {
  const table = $("job-progress");
  table.hidden = false;
  const body = table.querySelector("tbody");
  body.replaceChildren();
  for (const video of state.job.videos) {
    const row = body.insertRow();
    row.dataset.streamId = video.stream_id;
    row.dataset.status = video.status;
    row.insertCell().textContent = video.stream_id;
    const status = row.insertCell();
    status.textContent = video.error ? `${video.status}: ${video.error.reason}` : video.status;
    status.className = video.status === "failed" ? "failed" : "";
    const frames = row.insertCell();
    const bar = document.createElement("progress");
    bar.max = video.expected_frames || 1;
    bar.value = video.expected_frames ? video.frames_done : 0;
    frames.append(bar, ` ${video.frames_done}/${video.expected_frames ?? "?"}`);
  }
}

// This session's jobs and the finished ones found under --out.
async function listJobs() {
  const { jobs } = await api("GET", "/api/jobs");
  const select = $("job-list");
  select.replaceChildren(new Option(jobs.length ? "a job…" : "no jobs yet", ""), ...jobs.map((n) => new Option(n, n)));
  if (state.job) select.value = state.job.name;
}

async function openJob(name) {
  if (!name) return;
  showMessage("");
  state.job = await api("GET", `/api/jobs/${encodeURIComponent(name)}`);
  renderJob();
  if (state.job.state === "running") await pollJob(name);
  else await showResults(state.job);
}

const resultStage = new Stage($("result-stage"));

async function showResults(job) {
  const videos = job.videos.filter((v) => v.browsable && (v.status === "done" || v.status === "skipped"));
  if (!videos.length) return;
  $("results").hidden = false;
  $("result-job").textContent = `of ${job.name}`;
  const select = $("result-video");
  select.replaceChildren(...videos.map((v) => new Option(v.stream_id, v.stream_id)));
  const downloads = $("downloads");
  downloads.replaceChildren("download: ");
  for (const file of job.files) {
    const link = document.createElement("a");
    link.href = `/api/jobs/${encodeURIComponent(job.name)}/files/${file.split("/").map(encodeURIComponent).join("/")}`;
    link.textContent = file;
    link.setAttribute("download", "");
    downloads.append(link, " ");
  }
  await chooseResult(videos[0].stream_id);
}

async function chooseResult(streamId) {
  const base = `/api/jobs/${encodeURIComponent(state.job.name)}/videos/${encodeURIComponent(streamId)}`;
  const video = state.job.videos.find((v) => v.stream_id === streamId);
  state.result = { base, streamId, frame: null, frames: video.frames_done };
  $("result-slider").max = Math.max(video.frames_done - 1, 0);
  $("result-slider").value = 0;
  const { tracks } = await api("GET", `${base}/tracks`);
  const body = $("track-table").querySelector("tbody");
  body.replaceChildren();
  for (const t of tracks) {
    const row = body.insertRow();
    row.dataset.trackId = t.track_id;
    for (const value of [t.track_id, t.prompt_id, t.frames, t.first_frame, t.last_frame, t.mean_area,
                         t.mean_score.toFixed(3)]) row.insertCell().textContent = value;
  }
  await showResultFrame(0);
}

let resultWanted = null;
let resultLoading = false;

async function showResultFrame(index) {
  resultWanted = index;
  if (resultLoading) return;
  resultLoading = true;
  try {
    while (resultWanted !== null) {
      const wanted = resultWanted;
      resultWanted = null;
      const [record, blob] = await Promise.all([
        api("GET", `${state.result.base}/records/${wanted}`), api("GET", `${state.result.base}/frame?index=${wanted}`)]);
      resultStage.showFrame(await loadImage(blob));
      await resultStage.showOverlay(record.overlay, record.objects,
        (o) => `#${o.track_id} p${o.prompt_id} ${o.score.toFixed(2)}`);
      Object.assign(state.result, { frame: wanted, frames: record.frames, record });
      $("result-slider").max = record.frames - 1;
      $("result-slider").value = wanted;
      $("result-frame-info").textContent = `frame ${wanted} (${record.kind}${record.reason ? `: ${record.reason}` : ""})`
        + `, tracks ${record.objects.map((o) => o.track_id).join(", ") || "none"}`;
      resultStage.frame.dataset.frame = wanted;
    }
  } catch (error) {
    showMessage(error.message);
  } finally {
    resultLoading = false;
  }
}

// ---------------------------------------------------------------- live streams

async function pollLive() {
  while (true) {
    try {
      const answer = await api("GET", "/api/live/streams");
      renderLive(Array.isArray(answer) ? answer : answer.streams || []);
    } catch (error) {
      showMessage(`live: ${error.message}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 2 * POLL_MS));
  }
}

// A live stream's figures as the live API reports them (pipeline/live.py LiveStream.report).
function streamFigures(stream) {
  const drops = typeof stream.drops === "object" && stream.drops !== null
    ? Object.values(stream.drops).reduce((a, b) => a + b, 0) : stream.drops;
  const latency = stream.latency || {};
  const figures = [
    stream.status,
    stream.frames_in !== undefined && `${stream.frames_processed ?? "?"}/${stream.frames_in} frames`,
    stream.fps_out !== undefined && `${stream.fps_out} fps`,
    drops !== undefined && `drops ${drops}` + (stream.drop_rate !== undefined ? ` (${(100 * stream.drop_rate).toFixed(1)} %)` : ""),
    latency.p50_ms != null && `latency p50 ${latency.p50_ms} ms, p95 ${latency.p95_ms} ms`,
    stream.reconnects && `reconnects ${stream.reconnects}`,
    stream.track_ids && `tracks ${stream.track_ids.join(", ") || "none"}`,
  ];
  return figures.filter(Boolean).join(" · ");
}

function renderLive(streams) {
  const container = $("live-streams");
  const seen = new Set();
  for (const stream of streams) {
    const id = String(stream.stream_id ?? stream.id);
    seen.add(id);
    let view = state.liveStreams[id];
    if (!view) view = state.liveStreams[id] = createLiveView(id, container);
    view.info = stream;
    view.element.querySelector(".figures").textContent = streamFigures(stream);
    renderLivePrompts(view);
  }
  for (const [id, view] of Object.entries(state.liveStreams)) {
    if (!seen.has(id)) { view.element.remove(); view.closed = true; delete state.liveStreams[id]; }
  }
}

function createLiveView(id, container) {
  const element = document.createElement("div");
  element.className = "live-stream";
  element.dataset.streamId = id;
  element.innerHTML = `<h3></h3><div class="stage"><canvas class="frame"></canvas><canvas class="overlay">`
    + `</canvas><canvas class="marks"></canvas></div><p class="figures"></p><ol class="live-prompts"></ol>`;
  element.querySelector("h3").textContent = id;
  container.append(element);
  const view = { id, element, stage: new Stage(element.querySelector(".stage")), closed: false, info: {} };
  const send = guarded(async (spec) => {
    showMessage("");
    await api("POST", `/api/live/streams/${encodeURIComponent(id)}/prompts`, { prompts: [spec] });
    showMessage(`stream ${id}: prompt ${spec} added`, "info");
  });
  watchMouse(view.stage, {
    onPoint: ([x, y]) => send(`point:${x},${y}`),
    onBox: (box) => send(`box:${box.join(",")}`),
  });
  refreshLiveFrame(view);
  return view;
}

async function refreshLiveFrame(view) {
  while (!view.closed) {
    try {
      const blob = await api("GET", `/api/live/streams/${encodeURIComponent(view.id)}/frame.jpg?t=${Date.now()}`);
      view.stage.showFrame(await loadImage(blob));
      view.frames = (view.frames || 0) + 1;
    } catch (error) {
      view.element.querySelector(".figures").textContent = error.message;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function renderLivePrompts(view) {
  const list = view.element.querySelector(".live-prompts");
  const prompts = view.info.prompts || [];
  list.replaceChildren();
  for (const prompt of prompts) {
    const id = prompt.prompt_id ?? prompt.id;
    const item = document.createElement("li");
    item.dataset.promptId = id;
    item.textContent = `${id} ${prompt.spec ?? prompt.kind ?? ""} `;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.title = `remove prompt ${id}`;
    remove.addEventListener("click", guarded(async () => {
      await api("DELETE", `/api/live/streams/${encodeURIComponent(view.id)}/prompts/${encodeURIComponent(id)}`);
    }));
    item.append(remove);
    list.append(item);
  }
}

// ---------------------------------------------------------------- wiring

watchMouse(promptStage, {
  onPoint: (point, event) => {
    if (!state.source) return;
    const last = state.prompts[state.prompts.length - 1];
    if (event.shiftKey && last && last.kind === "point" && last.frame === state.frame) {
      last.points.push(point);
      promptsChanged();
    } else {
      addPrompt({ kind: "point", points: [point] });
    }
  },
  onBox: (box) => state.source && addPrompt({ kind: "box", box }),
  onStroke: (points) => state.source && addPrompt({
    kind: "scribble", strokes: points,
    png: paintScribble(points, promptStage.marks.width, promptStage.marks.height),
  }),
  onDrag: (drag) => drawMarks(drag),
});

$("source-list").addEventListener("change", guarded((event) => chooseSource(event.target.value)));
$("frame-slider").addEventListener("input", (event) => showFrame(Number(event.target.value)));
$("frame-number").addEventListener("change", (event) => showFrame(Number(event.target.value)));
$("preview-button").addEventListener("click", guarded(preview));
$("run-form").addEventListener("submit", guarded(startJob));
$("job-list").addEventListener("change", guarded((event) => openJob(event.target.value)));
$("result-video").addEventListener("change", guarded((event) => chooseResult(event.target.value)));
$("result-slider").addEventListener("input", (event) => showResultFrame(Number(event.target.value)));
for (const button of document.querySelectorAll("button.copy")) {
  button.addEventListener("click", guarded(async () => {
    const text = $(button.dataset.copy);
    text.select();
    if (navigator.clipboard && window.isSecureContext) await navigator.clipboard.writeText(text.value);
    else document.execCommand("copy");
    showMessage("copied", "info");
  }));
}

guarded(async () => {
  state.config = await api("GET", "/api/config");
  const { sources } = await api("GET", "/api/sources");
  const select = $("source-list");
  select.replaceChildren(new Option(sources.length ? "pick a video…" : `no videos under ${state.config.root}`, ""),
    ...sources.map((s) => new Option(s.kind === "frames" ? `${s.path}/ (frames)` : s.path, s.path)));
  renderPrompts();
  await listJobs();
  if (state.config.live_api) {
    $("live").hidden = false;
    pollLive();
  }
  document.body.dataset.ready = "true";
})();
