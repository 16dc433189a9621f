// What every part of the page shares: its state, messages, the API and image loading.

export const POLL_MS = 500;

export const $ = (id) => document.getElementById(id);

// Everything the page knows, in one place (the tests read it too).
export const state = {
  config: null, source: null, frame: 0, prompts: [], preview: null,
  job: null, result: null, liveStreams: {},
};
window.uiState = state;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A function of a frame index that loads only the latest index asked for, one load at a time, so scrubbing
// never queues a request per slider step; load's errors are shown on the page.
export function latestOnly(load) {
  let wanted = null;
  let loading = false;
  return async (index) => {
    wanted = index;
    if (loading) return;
    loading = true;
    try {
      while (wanted !== null) {
        const next = wanted;
        wanted = null;
        await load(next);
      }
    } catch (error) {
      showMessage(error.message);
    } finally {
      loading = false;
    }
  };
}


export function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

export async function api(method, url, body) {
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
export function guarded(action) {
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

export function loadImage(blob) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => { URL.revokeObjectURL(image.src); resolve(image); };
    image.onerror = () => reject(new Error("the server sent an image the browser cannot read"));
    image.src = blob instanceof Blob ? URL.createObjectURL(blob) : blob;
  });
}

