// A stage: the frame, the masks laid over it and the prompts drawn on it, in source pixels.

import { loadImage } from "./common.js";


export class Stage {
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
export function watchMouse(stage, { onPoint, onBox, onStroke, onDrag }) {
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

export function currentTool() {
  return document.querySelector("input[name=tool]:checked").value;
}

