// A hand-drawn SVG line chart of two rates over time (no chart library).
const NS = "http://www.w3.org/2000/svg";
const H = 160;

/** Draws `points` ([{t, pub, del}], oldest first) over the last `span` ms into `svg`. */
export function drawRates(svg, points, span, now) {
  // One user unit per CSS pixel, so lines and labels are not stretched.
  const W = Math.max(200, Math.round(svg.clientWidth || 600));
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const max = Math.max(1, ...points.map((p) => Math.max(p.pub, p.del)));
  const top = niceCeil(max);
  const x = (t) => ((t - (now - span)) / span) * W;
  const y = (v) => H - 14 - (v / top) * (H - 24);
  const parts = [];
  for (const f of [0, 0.5, 1]) {
    const v = top * f;
    parts.push(line(0, y(v), W, y(v), "grid"), text(2, y(v) - 2, `${round(v)}/s`));
  }
  for (const [key, cls] of [["pub", "pub"], ["del", "del"]]) {
    if (points.length < 2) continue;
    const el = document.createElementNS(NS, "polyline");
    el.setAttribute("class", cls);
    el.setAttribute("points", points.map((p) => `${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" "));
    parts.push(el);
  }
  parts.push(text(W - 24, H - 2, "now"), text(40, H - 2, `-${Math.round(span / 60000)} min`));
  svg.replaceChildren(...parts);
}

function line(x1, y1, x2, y2, cls) {
  const el = document.createElementNS(NS, "line");
  for (const [k, v] of Object.entries({ x1, y1, x2, y2 })) el.setAttribute(k, String(v));
  el.setAttribute("class", cls);
  return el;
}

function text(xp, yp, content) {
  const el = document.createElementNS(NS, "text");
  el.setAttribute("x", String(xp));
  el.setAttribute("y", String(yp));
  el.textContent = content;
  return el;
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function round(v) {
  return v >= 10 ? Math.round(v) : Math.round(v * 10) / 10;
}
