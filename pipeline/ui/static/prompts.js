// Prompts as the CLI writes them (pipeline/prompts.py), and as the page paints them.

const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                 "#fabed4", "#469990", "#dcbeff", "#9a6324"];
export const POINT_RADIUS = 10;  // source pixels: X-SAM draws a point prompt as a disk of this radius
export const BRUSH = 8;          // scribble stroke width, source pixels

// The CLI's spec string (pipeline/prompts.py): ids are the prompts' order, 0, 1, 2 ...
export function promptSpec(prompt, id) {
  const at = `@${prompt.frame}`;
  if (prompt.kind === "point") return `point:${prompt.points.map((p) => p.join(",")).join(";")}${at}`;
  if (prompt.kind === "box") return `box:${prompt.box.join(",")}${at}`;
  return `scribble:${paintedName(id)}${at}`;
}

export const paintedName = (id) => `prompt-${id}.png`;
export const promptColour = (id) => COLOURS[id % COLOURS.length];

// The prompts as the server takes them: specs, and the PNG of each painted one.
export function pagePrompts(prompts) {
  return prompts.map((prompt, id) => ({ spec: promptSpec(prompt, id), png: prompt.png || null }));
}

// A scribble as the CLI's scribble PNG: the frame's size, white strokes on black.
export function paintScribble(strokes, width, height) {
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

export function drawPrompt(context, prompt, colour, active) {
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

export function shellQuote(text) {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, "'\\''")}'`;
}

