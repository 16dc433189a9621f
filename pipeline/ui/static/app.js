// xsam-pipeline ui: place prompts on a frame, preview, run a job, read its results, prompt live streams.
// Plain browser JavaScript modules, no build step; the server's JSON API is in pipeline/ui/server.py.

import { $, api, guarded, latestOnly, loadImage, showMessage, state } from "./common.js";
import { watchLive } from "./live.js";
import { drawPrompt, pagePrompts, paintScribble, paintedName, promptColour, shellQuote } from "./prompts.js";
import { chooseResult, listJobs, openJob, showResultFrame, startJob } from "./results.js";
import { Stage, watchMouse } from "./stage.js";

const promptStage = new Stage($("prompt-stage"));

// ---------------------------------------------------------------- prompts

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

function renderPrompts() {
  const list = $("prompt-list");
  list.replaceChildren();
  const specs = pagePrompts(state.prompts).map((p) => p.spec);
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

const loadFrame = latestOnly(async (index) => {
  const blob = await api("GET", `/api/frame?path=${encodeURIComponent(state.source.path)}&index=${index}`);
  promptStage.showFrame(await loadImage(blob));
  state.frame = index;
  promptStage.clearOverlay();
  if (state.preview && state.preview.frame === index) await drawPreview();
  drawMarks();
  promptStage.frame.dataset.frame = index;
});

async function showFrame(index) {
  if (!state.source) return;
  index = Math.max(0, Math.min(index, state.source.lastFrame));
  $("frame-slider").value = $("frame-number").value = index;
  await loadFrame(index);
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
    { path: state.source.path, frame: state.frame, prompts: pagePrompts(state.prompts) });
  state.preview = result;
  await drawPreview();
  const others = state.prompts.length - result.prompt_ids.length;
  $("preview-info").textContent = `${result.objects.length} instance(s) on frame ${result.frame} in `
    + `${result.seconds.toFixed(2)} s` + (others ? `; ${others} prompt(s) on other frames not previewed` : "");
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
  if (state.config.live_api) watchLive();
  document.body.dataset.ready = "true";
})();
