// Run: a job on the source or its folder, its progress, then its result frame by frame.

import { $, POLL_MS, api, latestOnly, loadImage, showMessage, sleep, state } from "./common.js";
import { pagePrompts } from "./prompts.js";
import { Stage } from "./stage.js";

export async function startJob(event) {
  event.preventDefault();
  if (!state.source) throw new Error("pick a source first");
  showMessage("");
  const job = await api("POST", "/api/jobs", {
    name: $("job-name").value, path: state.source.path, scope: $("job-scope").value,
    prompts: pagePrompts(state.prompts), keyframe_every: Number($("keyframe-every").value),
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
      await sleep(POLL_MS);
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
export async function listJobs() {
  const { jobs } = await api("GET", "/api/jobs");
  const select = $("job-list");
  select.replaceChildren(new Option(jobs.length ? "a job…" : "no jobs yet", ""), ...jobs.map((n) => new Option(n, n)));
  if (state.job) select.value = state.job.name;
}

export async function openJob(name) {
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

export async function chooseResult(streamId) {
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

export const showResultFrame = latestOnly(async (index) => {
  const [record, blob] = await Promise.all([
    api("GET", `${state.result.base}/records/${index}`), api("GET", `${state.result.base}/frame?index=${index}`)]);
  resultStage.showFrame(await loadImage(blob));
  await resultStage.showOverlay(record.overlay, record.objects,
    (o) => `#${o.track_id} p${o.prompt_id} ${o.score.toFixed(2)}`);
  Object.assign(state.result, { frame: index, frames: record.frames, record });
  $("result-slider").max = record.frames - 1;
  $("result-slider").value = index;
  $("result-frame-info").textContent = `frame ${index} (${record.kind}${record.reason ? `: ${record.reason}` : ""})`
    + `, tracks ${record.objects.map((o) => o.track_id).join(", ") || "none"}`;
  resultStage.frame.dataset.frame = index;
});
