// calcomp curate: one card per component, labels saved as you go, refit and apply.
"use strict";
(function () {
  const KEYS = { "1": "neuron", "2": "process", "3": "noise", "4": "doubtful", "n": "non_neuron" };
  const SVG = "http://www.w3.org/2000/svg";
  const page = { state: null, items: [], focus: 0, undo: [], cards: new Map(), version: -1, request: 0, shown: 0, sentinel: null };
  const $ = (id) => document.getElementById(id);
  const TRACE = { width: 332, height: 90, axis: 66 };  // the trace panel: plot above y = axis
  const UNCERTAINTY = "uncertainty: normalised entropy of the four probabilities, 0 = one class " +
    "certain, 1 = all four equally likely; uncertain cards come first, one of each look-alike " +
    "group, across files and classes (a label there teaches a refit the most)";

  function message(text) { $("message").textContent = text || ""; }

  // the server's token for this session, written into the page: every API call carries it
  const TOKEN = document.querySelector("meta[name='calcomp-token']").content;

  async function api(path, body) {
    const headers = { "X-Calcomp-Token": TOKEN };
    const options = body === undefined ? { headers: headers } : {
      method: "POST", headers: { ...headers, "Content-Type": "application/json" }, body: JSON.stringify(body),
    };
    const response = await fetch(path, options);
    let data;
    try { data = await response.json(); } catch (err) { throw new Error(`${response.status} ${response.statusText}`); }
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  function el(tag, attrs, parent, ns) {
    const node = ns ? document.createElementNS(SVG, tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v; else node.setAttribute(k, v);
    }
    if (parent) parent.appendChild(node);
    return node;
  }

  function key(item) { return item.file + ":" + item.component; }

  function contradicts(label, predicted) {
    if (!label) return false;
    if (label === "non_neuron") return predicted === "neuron" || predicted === "doubtful";
    return label !== predicted;
  }

  // ------------------------------------------------------------------ state and list

  async function loadState() {
    const state = await api("/api/state");
    page.state = state;
    $("model").textContent = "model " + state.model + (state.refitted ? " (refitted)" : "");
    $("labels-path").textContent = state.labels_path;
    const ood = $("ood");
    ood.innerHTML = "";
    for (const f of state.files) {
      if (f.unreliable) {  // the model's reliability map warns, in place of the OOD score
        el("div", { class: "warning", text:
          `${f.name}: the classes may be unreliable here (expected error ${f.expected_error.toFixed(2)} > ` +
          `${state.unreliable_above.toFixed(2)}); label ~${f.advice} components and refit.` }, ood);
      } else if (f.ood && f.expected_error === null) {
        el("div", { class: "warning", text:
          `${f.name}: out of distribution (score ${f.ood_score.toFixed(3)} > ${state.ood_threshold.toFixed(3)}): ` +
          `the classes may be unreliable here; label ~${f.advice} components with \`calcomp curate\` and refit.` }, ood);
      } else if (f.ood_score === null && state.ood_threshold === null) {
        el("div", { class: "ok", text: `${f.name}: no out-of-distribution reference for this model` }, ood);
      }
    }
    showRefit(state.refit);
    $("auto-refit").textContent = state.auto_refit ? ` \u00b7 the model refits by itself every ${state.auto_refit} labels` : "";
    if (!state.can_refit) {
      $("refit").disabled = true;
      $("refit").title = `model ${state.model} has no fusion head to refit (a model v2 has one); ` +
        "fine-tune it on the labels CSV with `calcomp finetune --labels` instead";
    }
    return state;
  }

  function fillFilters(state) {
    const cls = $("filter-class");
    for (const name of state.classes) el("option", { value: name, text: name }, cls);
    const files = $("filter-file");
    for (const f of state.files) el("option", { value: f.index, text: `${f.name} (${f.components})` }, files);
  }

  async function loadList() {
    const params = new URLSearchParams();
    if ($("filter-class").value) params.set("predicted", $("filter-class").value);
    if ($("filter-file").value !== "") params.set("file", $("filter-file").value);
    if ($("filter-disagree").checked) params.set("disagreements", "1");
    const current = page.items[page.focus];
    const request = ++page.request;
    const data = await api("/api/components?" + params.toString());
    if (request !== page.request) return;  // a newer filter was chosen meanwhile
    page.items = data.items;
    page.version = data.version;
    const at = current ? page.items.findIndex((it) => key(it) === key(current)) : -1;
    page.focus = at >= 0 ? at : 0;
    render();
  }

  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (entry.isIntersecting) { observer.unobserve(entry.target); loadCard(entry.target); }
    }
  }, { rootMargin: "400px" });

  const BATCH = 150;  // cards are added to the page as you get near the end
  const more = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) showUpTo(page.shown + BATCH);
  }, { rootMargin: "800px" });

  function render() {
    const root = $("cards");
    root.innerHTML = "";
    page.cards.clear();
    page.shown = 0;
    page.sentinel = el("div", { class: "sentinel" }, root);
    more.observe(page.sentinel);
    showUpTo(Math.max(BATCH, page.focus + 1));
    $("count").textContent = `${page.items.length} components`;
    setFocus(page.focus, false);
  }

  function showUpTo(n) {
    const root = $("cards");
    for (let i = page.shown; i < Math.min(n, page.items.length); i++) {
      const card = makeCard(page.items[i], i);
      root.insertBefore(card, page.sentinel);
      page.cards.set(key(page.items[i]), card);
      observer.observe(card);
    }
    page.shown = Math.max(page.shown, Math.min(n, page.items.length));
  }

  function makeCard(item, i) {
    const name = page.state.files[item.file].name;
    const card = el("div", { class: "card", "data-file": item.file, "data-component": item.component,
                              "data-index": i, "data-predicted": item.predicted });
    const head = el("div", { class: "head" }, card);
    el("span", { text: `${name} #${item.component}` }, head);
    el("span", { class: "pred", text: item.predicted }, head);
    el("span", { class: "uncertainty", title: UNCERTAINTY, text: `uncertainty ${item.uncertainty.toFixed(2)}` }, head);
    el("span", { class: "caiman", hidden: "" }, head);
    const images = el("div", { class: "images" }, card);
    const footprint = el("figure", {}, images);
    el("svg", { class: "panel footprint", viewBox: "0 0 1 1" }, footprint, true);
    el("figcaption", { text: "footprint (yellow outline)" }, footprint);
    const local = el("figure", {}, images);
    el("svg", { class: "panel local", viewBox: "0 0 1 1" }, local, true);
    el("figcaption", { text: "local image" }, local);
    const traces = el("figure", {}, card);
    el("svg", { class: "trace", viewBox: `0 0 ${TRACE.width} ${TRACE.height}`, preserveAspectRatio: "none" }, traces, true);
    el("figcaption", { text: "traces: raw C + YrA (grey), denoised C (orange)" }, traces);
    const probs = el("div", { class: "probs" }, card);
    const top = item.probs.indexOf(Math.max(...item.probs));
    page.state.classes.forEach((cls, c) => {
      el("span", { text: cls }, probs);
      const bar = el("div", { class: "bar" }, probs);
      el("span", { class: c === top ? "top" : "", style: `width:${(100 * item.probs[c]).toFixed(1)}%` }, bar);
      el("span", { text: item.probs[c].toFixed(2) }, probs);
    });
    el("div", { class: "label" }, card);
    const buttons = el("div", { class: "buttons" }, card);
    for (const [k, label] of Object.entries(KEYS)) {
      const b = el("button", { title: label, "data-label": label, text: `${k} ${label === "non_neuron" ? "not neuron" : label}` }, buttons);
      b.addEventListener("click", (ev) => { ev.stopPropagation(); setFocus(i); label_(label); });
    }
    card.addEventListener("click", () => setFocus(i));
    showLabel(card, item);
    return card;
  }

  function showLabel(card, item) {
    const text = card.querySelector(".label");
    text.textContent = item.label ? "label: " + item.label : "";
    if (item.label) card.setAttribute("data-label", item.label); else card.removeAttribute("data-label");
    card.classList.toggle("disagree", contradicts(item.label, item.predicted));
  }

  async function loadCard(card) {
    const data = await api(`/api/card/${card.dataset.file}/${card.dataset.component}`);
    const s = data.size;
    for (const [cls, png, outlines] of [["footprint", data.footprint_png, []], ["local", data.image_png, data.neighbours]]) {
      const svg = card.querySelector("svg." + cls);
      svg.setAttribute("viewBox", `-0.5 -0.5 ${s} ${s}`);
      el("image", { href: png, x: -0.5, y: -0.5, width: s, height: s }, svg, true);
      for (const line of outlines) polyline(svg, line, "#3cf", 0.35, "1 0.6");
      for (const line of data.outline) polyline(svg, line, cls === "local" ? "#f33" : "#fc3", 0.45, "");
      if (cls === "local") el("title", { text: data.image_name + ": red = this component, blue = neighbours" }, svg, true);
    }
    card.querySelectorAll("figcaption")[1].textContent = `${data.image_name}: red = this component, blue dashed = neighbours`;
    const trace = card.querySelector("svg.trace");
    if (data.traces) {
      drawTrace(trace, data.traces.raw, "#999", data.traces);
      drawTrace(trace, data.traces.C, "#e67e22", data.traces);
      drawTimeAxis(trace, data.traces.frames, data.traces.frame_rate);
      const rate = data.traces.frame_rate ? ` at ${data.traces.frame_rate} Hz` : "";
      el("title", { text: `raw (C + YrA) grey, denoised C orange; ${data.traces.frames} frames${rate}` }, trace, true);
    } else {
      el("text", { x: 6, y: 40, "font-size": 12, fill: "#999", text: "no traces in this file" }, trace, true);
    }
    showCaiman(card.querySelector(".caiman"), data.caiman);
    card.classList.add("loaded");
  }

  // CaImAn's own view of the component, where the file holds it
  function showCaiman(node, caiman) {
    const parts = [];
    if (caiman && caiman.accepted !== null) parts.push(caiman.accepted ? "kept" : "rejected");
    if (caiman && caiman.snr !== null) parts.push(`SNR ${caiman.snr.toFixed(1)}`);
    if (!parts.length) return;
    node.textContent = "CaImAn: " + parts.join(", ");
    node.title = "CaImAn's own selection (idx_components) and trace SNR (SNR_comp) stored in the file";
    node.hidden = false;
  }

  // ticks under the traces: seconds when the frame rate is known, else frames
  function drawTimeAxis(svg, frames, rate) {
    const span = Math.max(frames - 1, 1) / (rate || 1);  // the last frame's time
    const raw = span / 4;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
    const digits = Math.max(0, -Math.floor(Math.log10(step)));
    const axis = el("g", { class: "axis" }, svg, true);
    el("line", { x1: 0, y1: TRACE.axis, x2: TRACE.width, y2: TRACE.axis }, axis, true);
    for (let t = 0; t <= span + 1e-9; t += step) {
      const x = TRACE.width * t / span;
      el("line", { x1: x, y1: TRACE.axis, x2: x, y2: TRACE.axis + 3 }, axis, true);
      const anchor = x < 10 ? "start" : x > TRACE.width - 10 ? "end" : "middle";
      el("text", { x: x, y: TRACE.axis + 12, "text-anchor": anchor, text: t.toFixed(digits) }, axis, true);
    }
    el("text", { x: TRACE.width / 2, y: TRACE.height - 2, "text-anchor": "middle", text: rate ? "time (s)" : "frame" }, axis, true);
  }

  function polyline(svg, line, colour, width, dash) {
    el("polyline", { points: line.map((p) => p.join(",")).join(" "), fill: "none", stroke: colour,
                     "stroke-width": width, "stroke-dasharray": dash }, svg, true);
  }

  function drawTrace(svg, values, colour, traces) {
    const all = traces.raw.concat(traces.C);
    const low = Math.min(...all), high = Math.max(...all), span = high - low || 1;
    const step = TRACE.width / Math.max(values.length - 1, 1);
    const bottom = TRACE.axis - 3, top = 4;
    const points = values.map((v, i) => `${(i * step).toFixed(1)},${(bottom - (bottom - top) * (v - low) / span).toFixed(1)}`);
    el("polyline", { points: points.join(" "), fill: "none", stroke: colour, "stroke-width": 1 }, svg, true);
  }

  // ------------------------------------------------------------------ focus and labels

  function setFocus(i, scroll = true) {
    if (!page.items.length) return;
    page.focus = Math.max(0, Math.min(page.items.length - 1, i));
    if (page.focus >= page.shown) showUpTo(page.focus + BATCH);
    for (const card of document.querySelectorAll(".card.focus")) card.classList.remove("focus");
    const card = page.cards.get(key(page.items[page.focus]));
    if (card) {
      card.classList.add("focus");
      if (scroll) card.scrollIntoView({ block: "nearest" });
    }
  }

  // labels are sent one after the other, in the order they were typed
  let chain = Promise.resolve();

  function send(item, label) {
    const job = chain.then(async () => {
      const reply = await api("/api/label", { file: item.file, component: item.component, label: label });
      item.label = label;
      const card = page.cards.get(key(item));
      if (card) showLabel(card, item);
      return reply.previous;
    });
    chain = job.catch(() => undefined);
    return job;
  }

  function label_(label) {
    const item = page.items[page.focus];
    if (!item) return;
    setFocus(page.focus + 1);  // at once: the next key press is for the next card
    send(item, label)
      .then((previous) => { page.undo.push({ item: item, previous: previous }); message(""); watchRefit(); })
      .catch((err) => { message(`not saved (${page.state.files[item.file].name} #${item.component}): ` + err.message); });
  }

  function undo() {
    chain.then(() => {
      const last = page.undo.pop();
      if (!last) { message("nothing to undo"); return; }
      const at = page.items.indexOf(last.item);
      if (at >= 0) setFocus(at);
      return send(last.item, last.previous)
        .then(() => message(`undone: ${page.state.files[last.item.file].name} #${last.item.component}`))
        .catch((err) => { page.undo.push(last); message("undo failed: " + err.message); });
    });
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.target.closest && ev.target.closest("select, input, textarea")) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const k = ev.key.toLowerCase();
    if (k in KEYS) label_(KEYS[k]);
    else if (k === "u" || ev.key === "ArrowRight" || ev.key === "ArrowDown") setFocus(page.focus + 1);
    else if (ev.key === "ArrowLeft" || ev.key === "ArrowUp") setFocus(page.focus - 1);
    else if (k === "z") undo();
    else return;
    ev.preventDefault();
  });

  // ------------------------------------------------------------------ refit and apply

  function fmt(value) {
    if (typeof value === "number") return value.toFixed(3);
    if (value && typeof value === "object") {
      if (typeof value.accuracy === "number") return value.accuracy.toFixed(3);
      return JSON.stringify(value);
    }
    return String(value);
  }

  function changedText(changed) {
    if (!changed) return "";
    return `${changed.class} of ${changed.components} components changed class, ${changed.acceptance} acceptance`;
  }

  function showRefit(status) {
    const bar = $("refit-progress"), text = $("refit-status"), changed = $("refit-changed");
    if (!status || status.state === "idle") {
      bar.hidden = true; text.textContent = ""; changed.textContent = "";
      text.removeAttribute("data-applied");
      return;
    }
    bar.hidden = !(status.state === "starting" || status.state === "running");
    bar.value = status.progress || 0;
    const report = status.report;
    if (status.state === "scheduled") {
      text.textContent = `refit when labelling pauses (${status.new_labels} new labels)`;
    } else if (status.state === "done" && report) {
      const measured = `${report.validation}: accuracy ${fmt(report.before)} \u2192 ${fmt(report.after)}`;
      const agreement = report.agreement
        ? `; on the ${report.labels} labels ${fmt(report.agreement.before)} \u2192 ${fmt(report.agreement.after)}` : "";
      if (report.applied) {
        text.textContent = `refit applied on ${report.labels} labels: ${report.summary}; ${measured}${agreement}`;
      } else {
        text.textContent = `refit NOT applied (${report.labels} labels): ${report.summary}; the model is kept as loaded`;
      }
      text.setAttribute("data-applied", report.applied ? "1" : "0");
      text.classList.toggle("not-applied", !report.applied);
      changed.textContent = changedText(report.changed);
    } else if (status.state === "failed") {
      text.textContent = "refit failed: " + status.error;
      text.setAttribute("data-applied", "0");
    } else {
      text.textContent = `refitting on ${status.labels} labels\u2026 ${Math.round(100 * (status.progress || 0))}%`;
    }
    $("refit").disabled = !bar.hidden || (page.state && !page.state.can_refit);
  }

  // a refit runs in the background (by itself after every few labels, or on Refit): the
  // page watches it until it ends, then shows the new probabilities in the new order
  let watching = false;

  async function watchRefit(first) {
    if (watching) return;
    watching = true;
    try {
      let status = first || await api("/api/refit");
      while (status.state === "scheduled" || status.state === "starting" || status.state === "running") {
        showRefit(status);
        await new Promise((resolve) => setTimeout(resolve, 400));
        status = await api("/api/refit");
      }
      showRefit(status);
      if (status.version !== page.version) { await loadState(); await loadList(); setFocus(0); }
    } catch (err) { message(err.message); } finally { watching = false; }
  }

  async function refit() {
    let status;
    try {
      status = await api("/api/refit", {});
      message("");
    } catch (err) { message(err.message); return; }
    await watchRefit(status);
  }

  async function apply() {
    $("apply").disabled = true;
    $("apply-status").textContent = "writing\u2026";
    try {
      const result = await api("/api/apply", {});
      const fit = result.threshold || {};
      const how = typeof fit.cv_agreement === "number" ? `cross-validated agreement ${fmt(fit.cv_agreement)}`
        : typeof fit.agreement === "number" ? `agreement ${fmt(fit.agreement)} on ${fit.labels} labels, fitted with the refit` : "";
      const cut = fit.min_prob !== undefined ? ` min_prob ${fit.min_prob}${how ? ` (${how})` : ""}` : "";
      $("apply-status").textContent = `written to ${result.files.length} file(s); model saved to ${result.model_folder};${cut}`;
    } catch (err) {
      $("apply-status").textContent = "";
      message("apply failed: " + err.message);
    } finally { $("apply").disabled = false; }
  }

  $("refit").addEventListener("click", refit);
  $("apply").addEventListener("click", apply);
  for (const id of ["filter-class", "filter-file", "filter-disagree"]) $(id).addEventListener("change", () => loadList().then(() => { setFocus(0); $(id).blur(); }));

  window.curate = {
    order: () => page.items.map(key),
    focused: () => (page.items[page.focus] ? key(page.items[page.focus]) : null),
    version: () => page.version,
    settled: () => chain.then(() => true),
  };

  loadState().then((state) => { fillFilters(state); return loadList(); })
    .then(() => document.body.setAttribute("data-ready", "1"))
    .catch((err) => message(err.message));
})();
