// Live streams of the live service (--live-api): streams added by URL, the latest frame, figures, prompts added
// by clicking.

import { $, POLL_MS, api, guarded, loadImage, showMessage, sleep, state } from "./common.js";
import { Stage, watchMouse } from "./stage.js";

export function watchLive() {
  $("live").hidden = false;
  $("live-form").addEventListener("submit", guarded(addStream));
  pollLive();
}

// The live API checks the URL (its scheme policy) and the id; its refusal is shown as the page's message.
async function addStream(event) {
  event.preventDefault();
  showMessage("");
  const id = $("live-id").value.trim();
  const answer = await api("POST", "/api/live/streams", { source: $("live-url").value.trim(), ...(id && { id }) });
  showMessage(`stream ${answer.stream_id} added`, "info");
}

async function pollLive() {
  while (true) {
    try {
      const answer = await api("GET", "/api/live/streams");
      renderLive(answer.streams);
    } catch (error) {
      showMessage(`live: ${error.message}`);
    }
    await sleep(2 * POLL_MS);
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
    const id = String(stream.stream_id);
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
    + `</canvas><canvas class="marks"></canvas></div><p class="frame-state"></p><p class="figures"></p>`
    + `<ol class="live-prompts"></ol>`;
  element.querySelector("h3").textContent = id;
  container.append(element);
  // specs: what this page sent for each prompt id the live API gave back (its report lists ids only)
  const view = { id, element, stage: new Stage(element.querySelector(".stage")), closed: false, info: {}, specs: {} };
  const send = guarded(async (spec) => {
    showMessage("");
    const answer = await api("POST", `/api/live/streams/${encodeURIComponent(id)}/prompts`, { prompts: [spec] });
    for (const promptId of answer.added || []) view.specs[promptId] = spec;
    showMessage(`stream ${id}: prompt ${spec} added`, "info");
  });
  const marks = view.stage.marks.getContext("2d");
  watchMouse(view.stage, {
    onPoint: ([x, y]) => send(`point:${x},${y}`),
    onBox: (box) => { marks.clearRect(0, 0, marks.canvas.width, marks.canvas.height); send(`box:${box.join(",")}`); },
    onDrag: (drag) => {  // the box being drawn
      const [x0, y0] = drag.points[0];
      const [x1, y1] = drag.points[drag.points.length - 1];
      marks.clearRect(0, 0, marks.canvas.width, marks.canvas.height);
      marks.strokeStyle = "#fff";
      marks.lineWidth = Math.max(2, marks.canvas.width / 500);
      marks.strokeRect(x0, y0, x1 - x0, y1 - y0);
    },
  });
  refreshLiveFrame(view);
  return view;
}

// The latest annotated frame, again and again, while the stream is listed.
async function refreshLiveFrame(view) {
  const frameState = view.element.querySelector(".frame-state");
  while (!view.closed) {
    try {
      const blob = await api("GET", `/api/live/streams/${encodeURIComponent(view.id)}/frame.jpg?t=${Date.now()}`);
      view.stage.showFrame(await loadImage(blob));
      view.frames = (view.frames || 0) + 1;
      frameState.textContent = "";
    } catch (error) {
      frameState.textContent = error.message;
    }
    await sleep(POLL_MS);
  }
}

function renderLivePrompts(view) {
  const list = view.element.querySelector(".live-prompts");
  list.replaceChildren();
  for (const id of view.info.prompt_ids || []) {
    const item = document.createElement("li");
    item.dataset.promptId = id;
    item.textContent = `prompt ${id} ${view.specs[id] || ""} `;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.title = `remove prompt ${id}`;
    remove.addEventListener("click", guarded(async () => {
      await api("DELETE", `/api/live/streams/${encodeURIComponent(view.id)}/prompts/${encodeURIComponent(id)}`);
      showMessage(`stream ${view.id}: prompt ${id} removed`, "info");
    }));
    item.append(remove);
    list.append(item);
  }
}
