// mespot's page: submit forms, the live queue (polls /api/jobs) and the job page (polls
// /api/jobs/ID). Requests carry the cookie the login set plus the x-mespot-page header.
"use strict";
const mespot = (() => {
  const POLL_MS = 1000;
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g,
    (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);

  async function call(method, url, body, type) {
    const headers = {"x-mespot-page": "1"};
    if (body !== undefined && type === undefined) { headers["content-type"] = "application/json"; body = JSON.stringify(body); }
    if (type) headers["content-type"] = type;
    const answer = await fetch(url, {method, headers, body, credentials: "same-origin"});
    const data = (answer.headers.get("content-type") || "").includes("json") ? await answer.json() : await answer.text();
    if (!answer.ok) throw new Error(data.error || `${answer.status} ${answer.statusText}`);
    return data;
  }

  function describe(job) {
    const p = job.params;
    switch (job.kind) {
      case "extract": return `${p.source} → ${p.store}`;
      case "train": return `${[].concat(p.store).join(" + ")} → ${p.run}`;
      case "evaluate": return `${p.run} (${(p.select || ["last"]).join(", ")})`;
      case "predict": return `${p.video || "uploaded video"} with ${p.model}`;
    }
    return "";
  }

  function progressText(job) {
    const pr = job.progress, parts = [`${Math.round(pr.fraction * 100)} %`];
    if (pr.total) parts.push(`${Math.round(pr.done)}/${Math.round(pr.total)} ${pr.unit}`);
    if (pr.rate) parts.push(`${pr.rate.toFixed(1)} ${pr.unit}/s`);
    if (pr.eta_seconds !== null && job.state === "running") parts.push(`${Math.round(pr.eta_seconds)} s left`);
    return parts.join(" · ");
  }

  function row(job) {
    const links = [], id = job.id;
    if (job.files.includes("report.html")) links.push(`<a href="/api/jobs/${id}/files/report.html" target="_blank">report</a>`);
    const intervals = job.files.find((f) => f.endsWith("intervals.csv"));
    if (intervals) links.push(`<a href="/api/jobs/${id}/files/${esc(intervals)}?download=1">intervals</a>`);
    if ((job.state === "queued" || job.state === "running") && !job.cancel_requested)
      links.push(`<button class="cancel" data-job="${id}">cancel</button>`);
    if (job.state === "done" && ["predict", "evaluate"].includes(job.kind))
      links.push(`<a href="/jobs/${id}/review">review</a>`);
    if (["done", "failed", "cancelled"].includes(job.state))
      links.push(`<button class="archive" data-job="${id}">archive</button> ` +
                 `<button class="delete" data-job="${id}">delete</button>`);
    const when = new Date(job.submitted * 1000).toTimeString().slice(0, 8);
    return `<tr data-job="${id}" data-state="${job.state}"><td><a href="/jobs/${id}">#${id}</a></td>` +
      `<td>${esc(job.kind)}${step(job)}</td><td>${esc(describe(job))}</td>` +
      `<td><span class="state ${job.state}">${job.state}</span></td>` +
      `<td><progress max="1" value="${job.progress.fraction}"></progress> ` +
      `<span class="progress-text">${esc(progressText(job))}</span>` +
      `<div class="message">${esc(job.error || job.progress.message)}</div></td>` +
      `<td>${when}${who(job)}<div class="times">${esc(times(job))}</div></td>` +
      `<td class="actions">${links.join(" ")}</td></tr>`;
  }

  function step(job) {
    if (!job.pipeline) return job.after ? `<div class="times">after #${job.after}</div>` : "";
    return `<div class="times"><a href="/pipelines/${job.pipeline}">pipeline #${job.pipeline}</a>` +
      ` · ${esc(job.step)}</div>`;
  }

  const who = (job) => job.submitter ? ` <span class="submitter">${esc(job.submitter)}</span>` : "";

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    const s = Math.round(seconds), m = Math.floor(s / 60), h = Math.floor(m / 60);
    return h ? `${h} h ${m % 60} min` : m ? `${m} min ${s % 60} s` : `${s} s`;
  }

  function times(job) {
    const parts = [];
    if (job.waited_seconds !== null) parts.push(`waited ${duration(job.waited_seconds)}`);
    if (job.ran_seconds !== null) parts.push(`ran ${duration(job.ran_seconds)}`);
    return parts.join(" · ");
  }

  function formValues(form) {
    // a name "train.epochs" goes into values.train.epochs (a pipeline's step options)
    const values = {};
    const into = (name) => {
      const parts = name.split("."), last = parts.pop();
      let place = values;
      for (const part of parts) place = (place[part] ||= {});
      return [place, last];
    };
    for (const field of form.elements) {
      if (!field.name || field.name === "file" || field.type === "submit") continue;
      const [place, key] = into(field.name);
      if (field.type === "checkbox") { if (field.checked) (place[key] ||= []).push(field.value); continue; }
      if (field.value === "") continue;
      place[key] = field.type === "number" ? Number(field.value) : field.value;
    }
    const list = (text) => text.split(",").map((v) => v.trim()).filter(Boolean);
    if (form.dataset.kind === "pipeline") values.predict = list(values.predict || "");
    if (form.dataset.kind === "train") {  // several stores pooled: lists; one store: as typed
      for (const key of ["store", "annotations"])
        if (values[key] && values[key].includes(",")) values[key] = list(values[key]);
      if (values.test_on) values.test_on = list(values.test_on);
    }
    return values;
  }

  async function submit(form) {
    const status = document.getElementById("submit-status"), kind = form.dataset.kind;
    const values = formValues(form);
    status.className = ""; status.textContent = "submitting…";
    try {
      const file = form.elements.file && form.elements.file.files[0];
      if (file) {
        const limit = Number(form.elements.file.dataset.maxBytes);
        if (file.size > limit) throw new Error(`${file.name}: larger than the server's upload limit of ${limit / 1048576} MiB`);
        status.textContent = `uploading ${file.name}…`;
        const sent = await call("POST", `/api/uploads?filename=${encodeURIComponent(file.name)}`, file, "application/octet-stream");
        values.upload = sent.upload; delete values.video;
      }
      if (kind === "pipeline") {
        const made = await call("POST", "/api/pipelines", values);
        status.innerHTML = `<a href="/pipelines/${made.id}">pipeline #${made.id}</a> queued: ` +
          made.jobs.map((j) => `${esc(j.step)} #${j.id}`).join(" → ");
      } else {
        const job = await call("POST", `/api/jobs/${kind}`, values);
        status.textContent = `job #${job.id} queued`;
      }
      refresh();
    } catch (err) {
      status.className = "error"; status.textContent = err.message;
    }
  }

  async function refresh() {
    try {
      const data = await call("GET", "/api/jobs?limit=100");
      document.querySelector("#jobs tbody").innerHTML = data.jobs.map(row).join("");
    } catch (err) { /* keep the last table; the next poll tries again */ }
  }

  async function paths(root, list) {
    try {
      const data = await call("GET", `/api/browse?root=${root}`);
      document.getElementById(list).innerHTML = data.entries.map((e) => `<option value="${esc(e.name)}">`).join("");
    } catch (err) { /* no suggestions */ }
  }

  function onCancel(event) {
    const button = event.target.closest("button.cancel, button.archive, button.delete");
    if (!button) return;
    const id = button.dataset.job;
    if (button.classList.contains("delete")) {
      if (!confirm(`Delete job #${id}, its log and its job files (a prediction's results)? ` +
                   "The store or run folder it made stays. This cannot be undone.")) return;
      button.disabled = true;
      call("DELETE", `/api/jobs/${id}`).then(refresh, (err) => alert(err.message));
      return;
    }
    if (button.classList.contains("archive")) {
      if (!confirm(`Archive job #${id}? It leaves the queue; /api/jobs?archived=true still lists it.`)) return;
      button.disabled = true;
      call("POST", `/api/jobs/${id}/archive`).then(refresh, (err) => alert(err.message));
      return;
    }
    button.disabled = true;
    call("POST", `/api/jobs/${id}/cancel`).then(refresh, (err) => alert(err.message));
  }

  function index() {
    document.querySelectorAll(".tabs button").forEach((tab) => tab.addEventListener("click", () => {
      document.querySelectorAll(".tabs button, .job-form").forEach((el) => el.classList.remove("active"));
      tab.classList.add("active");
      document.getElementById(`form-${tab.dataset.tab}`).classList.add("active");
    }));
    document.querySelectorAll(".job-form").forEach((form) => form.addEventListener("submit", (event) => {
      event.preventDefault(); submit(form);
    }));
    document.addEventListener("click", onCancel);
    paths("data", "data-paths"); paths("store", "store-paths");
    setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
  }

  function job() {
    const id = document.getElementById("job").dataset.job;
    let last = document.getElementById("state").textContent;  // as the server drew it
    document.addEventListener("click", onCancel);
    document.addEventListener("submit", onClone);
    const timer = setInterval(async () => {
      try {
        const j = await call("GET", `/api/jobs/${id}`);
        document.getElementById("state").textContent = j.state;
        document.getElementById("state").className = `state ${j.state}`;
        document.querySelector("#job progress").value = j.progress.fraction;
        document.querySelector("#job .progress-text").textContent = progressText(j);
        document.getElementById("message").textContent = j.error || j.progress.message;
        document.getElementById("log").textContent = await call("GET", `/api/jobs/${id}/log`);
        const done = ["done", "failed", "cancelled"].includes(j.state);
        document.querySelector("#job button.cancel").hidden = done;
        if (done) { clearInterval(timer); if (last !== j.state) location.reload(); }
        last = j.state;
      } catch (err) { /* next poll */ }
    }, POLL_MS);
  }

  function onClone(event) {
    const form = event.target.closest("form.clone");
    if (!form) return;
    event.preventDefault();
    const status = form.querySelector(".clone-status");
    let changes;
    try { changes = JSON.parse(form.elements.changes.value || "{}"); }
    catch (err) { status.className = "clone-status error"; status.textContent = `not JSON: ${err.message}`; return; }
    call("POST", form.dataset.url, changes).then((made) => {
      location.href = made.jobs ? `/pipelines/${made.id}` : `/jobs/${made.id}`;
    }, (err) => { status.className = "clone-status error"; status.textContent = err.message; });
  }

  function pipeline() {
    const id = document.getElementById("pipeline").dataset.pipeline;
    document.addEventListener("click", onCancel);
    document.addEventListener("submit", onClone);
    const timer = setInterval(async () => {
      try {
        const p = await call("GET", `/api/pipelines/${id}`);
        document.querySelector("#jobs tbody").innerHTML = p.jobs.map(row).join("");
        const state = document.querySelector("#pipeline .state");
        state.textContent = p.state; state.className = `state ${p.state}`;
        document.querySelector("#pipeline .message").textContent = p.message;
        if (["done", "failed", "cancelled"].includes(p.state)) clearInterval(timer);
      } catch (err) { /* next poll */ }
    }, POLL_MS);
  }

  // ---- runs side by side ------------------------------------------------------------------------
  function tableText(table) {
    return [...table.rows].map((r) => [...r.cells].map((c) => c.textContent.trim()).join("\t")).join("\n");
  }

  function sortBy(table, column) {
    const body = table.tBodies[0], rows = [...body.rows];
    const up = table.dataset.sorted !== `${column}+`;
    const key = (row) => {
      const cell = row.cells[column], text = cell.textContent.trim();
      return cell.hasAttribute("data-number") ? Number(text) : text;
    };
    rows.sort((a, b) => {
      const x = key(a), y = key(b);
      const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return up ? order : -order;
    });
    rows.forEach((r) => body.appendChild(r));
    table.dataset.sorted = `${column}${up ? "+" : "-"}`;
  }

  function runs() {
    const table = document.getElementById("runs-table"), status = document.getElementById("runs-status");
    table.querySelectorAll("th[data-sort]").forEach((th, k) => th.addEventListener("click", () => sortBy(table, k)));
    document.getElementById("copy").addEventListener("click", async () => {
      const text = tableText(table), box = document.getElementById("tsv");
      box.value = text; box.hidden = false; box.select();
      try { await navigator.clipboard.writeText(text); status.textContent = "copied"; }
      catch (err) { status.textContent = "select the text below and copy it"; }
    });
    const compare = document.getElementById("compare");
    const picked = () => [...document.querySelectorAll("input.pick:checked")].map((b) => b.value);
    document.addEventListener("change", () => { compare.disabled = picked().length !== 2; });
    compare.addEventListener("click", async () => {
      const [a, b] = picked();
      try {
        const d = await call("GET", `/api/runs/diff?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
        const rows = d.differences.map((x) => `<tr><td>${esc(x.name)}</td><td>${esc(JSON.stringify(x.a))}</td>` +
          `<td>${esc(JSON.stringify(x.b))}</td></tr>`).join("");
        document.getElementById("diff-table").innerHTML = `<tr><th>parameter</th><th>${esc(a)}</th>` +
          `<th>${esc(b)}</th></tr>${rows || '<tr><td colspan="3">no difference</td></tr>'}`;
        document.getElementById("diff").hidden = false;
      } catch (err) { status.textContent = err.message; }
    });
  }

  const COLOURS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4d7c0f"];

  function plot(folds) {
    // one SVG: every fold's train/loss (solid) and test/loss (dashed) against the epoch
    const lines = [];
    Object.entries(folds).forEach(([fold, curves], k) => Object.entries(curves).forEach(([name, points]) =>
      lines.push({fold, name, points, colour: COLOURS[k % COLOURS.length]})));
    const all = lines.flatMap((l) => l.points);
    if (!all.length) return "<p>no epoch finished yet</p>";
    const W = 640, H = 280, P = 40;
    const maxX = Math.max(1, ...all.map((p) => p[0])), ys = all.map((p) => p[1]);
    const minY = Math.min(...ys), maxY = Math.max(...ys) + 1e-9;
    const x = (v) => P + (W - 2 * P) * v / maxX, y = (v) => H - P - (H - 2 * P) * (v - minY) / (maxY - minY);
    const paths = lines.map((l) => `<polyline fill="none" stroke="${l.colour}" stroke-width="1.5"` +
      `${l.name.startsWith("test") ? ' stroke-dasharray="4 3"' : ""} data-fold="${esc(l.fold)}" data-curve="${esc(l.name)}"` +
      ` points="${l.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ")}"><title>${esc(l.fold)} ${esc(l.name)}</title></polyline>` +
      l.points.map((p) => `<circle r="2.5" fill="${l.colour}" cx="${x(p[0]).toFixed(1)}" cy="${y(p[1]).toFixed(1)}"/>`).join(""));
    const legend = Object.keys(folds).map((f, k) => `<span style="color:${COLOURS[k % COLOURS.length]}">■ ${esc(f)}</span>`).join(" ");
    return `<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="loss curves">` +
      `<line x1="${P}" y1="${H - P}" x2="${W - P}" y2="${H - P}" stroke="#999"/><line x1="${P}" y1="${P}" x2="${P}" y2="${H - P}" stroke="#999"/>` +
      `<text x="${W / 2}" y="${H - 8}" font-size="11">epoch (0–${maxX})</text>` +
      `<text x="4" y="${P - 8}" font-size="11">loss ${minY.toFixed(3)}–${maxY.toFixed(3)}</text>${paths.join("")}</svg>` +
      `<p class="times">${legend} · solid: train/loss, dashed: test/loss (the test subject's, logged only)</p>`;
  }

  function curves() {
    const run = document.getElementById("run").dataset.run, status = document.getElementById("curves-status");
    const draw = async () => {
      try {
        const d = await call("GET", `/api/runs/losses?run=${encodeURIComponent(run)}`);
        document.getElementById("curves").innerHTML = plot(d.folds);
        status.textContent = d.training ? "training: redrawn every 2 s" : "";
        if (d.training) setTimeout(draw, 2000);
      } catch (err) { status.textContent = err.message; }
    };
    draw();
  }

  // ---- review of spotted intervals --------------------------------------------------------------
  const stripUrl = (id, video, i) => `/api/jobs/${id}/review/strip.jpg?video=${encodeURIComponent(video)}` +
    `&onset=${i.onset}&apex=${i.apex}&offset=${i.offset}`;

  function slider(name, value, low, high, v, k) {
    return `<label>${name} <input type="range" min="${low}" max="${high}" value="${value}" ` +
      `data-video="${esc(v)}" data-k="${k}" data-field="${name}"> <output>${value}</output></label>`;
  }

  function card(id, video, i, k) {
    const low = Math.max(0, i.onset - 30), high = i.offset + 30;
    const score = i.score !== null && i.score !== undefined ? `score ${i.score.toFixed(3)}` : esc(i.origin);
    return `<div class="interval ${i.status}" data-video="${esc(video)}" data-k="${k}">` +
      `<img class="strip" alt="frames ${i.onset}–${i.offset} of ${esc(video)}" src="${stripUrl(id, video, i)}">` +
      `<div class="controls"><b>${esc(i.type)}</b> ${score} <span class="status">${i.status}</span> ` +
      `<button type="button" class="accept" data-video="${esc(video)}" data-k="${k}">accept</button> ` +
      `<button type="button" class="reject" data-video="${esc(video)}" data-k="${k}">reject</button><br>` +
      slider("onset", i.onset, low, high, video, k) + slider("apex", i.apex, low, high, video, k) +
      slider("offset", i.offset, low, high, video, k) + `</div></div>`;
  }

  function reviewHtml(id, data) {
    return Object.entries(data.videos).map(([video, v]) => {
      const truth = (data.truth[video] || []).map((t) => `${esc(t.type)} ${t.onset}–${t.apex}–${t.offset}`).join(", ");
      const curve = data.curves[video] ? `<img class="curve" alt="score curves of ${esc(video)}" src="/api/jobs/${id}/files/${esc(data.curves[video])}">` : "";
      return `<section class="video" data-video="${esc(video)}"><h2>${esc(video)}</h2>` +
        `<label>subject <input class="subject" data-video="${esc(video)}" value="${esc(v.subject)}"></label>` +
        `<p class="truth">ground truth: ${truth || (data.kind === "evaluate" ? "none" : "not known (a prediction)")}</p>` +
        `<div class="beside"><div class="intervals">${v.intervals.map((i, k) => card(id, video, i, k)).join("") || "<p>nothing spotted</p>"}</div>${curve}</div>` +
        `<form class="add" data-video="${esc(video)}">Add an interval the model missed: <select name="type"><option>me</option><option>mae</option></select> ` +
        `onset <input name="onset" type="number" min="0" required> apex <input name="apex" type="number" min="0" required> ` +
        `offset <input name="offset" type="number" min="0" required> <button type="submit">add</button></form></section>`;
    }).join("") || "<p>no video</p>";
  }

  function corrected(i, field, value) {
    // the dragged field's new value, the others moved so that onset <= apex <= offset holds
    i[field] = value;
    if (field === "offset") { i.apex = Math.min(i.apex, i.offset); i.onset = Math.min(i.onset, i.apex); }
    else { if (i.onset > i.apex) i.apex = i.onset; if (i.apex > i.offset) i.offset = i.apex; if (i.apex < i.onset) i.onset = i.apex; }
    i.status = "accepted";  // a correction is an acceptance of the corrected interval
  }

  function review() {
    const main = document.getElementById("review"), id = main.dataset.job;
    const status = document.getElementById("review-status");
    let data = null;
    const render = () => {  // every video redrawn; what is typed in the add forms kept
      const typed = [...document.querySelectorAll("form.add")].map((f) =>
        [f.dataset.video, [...f.elements].filter((e) => e.name).map((e) => [e.name, e.value])]);
      document.getElementById("videos").innerHTML = reviewHtml(id, data);
      for (const [video, values] of typed) {
        const form = document.querySelector(`form.add[data-video="${CSS.escape(video)}"]`);
        if (form) for (const [name, value] of values) form.elements[name].value = value;
      }
    };
    const redraw = (video, k) => {  // one corrected interval: its sliders, status and strip
      const i = data.videos[video].intervals[k];
      const c = document.querySelector(`.interval[data-video="${CSS.escape(video)}"][data-k="${k}"]`);
      if (!c) return;
      c.className = `interval ${i.status}`;
      c.querySelector(".status").textContent = i.status;
      for (const s of c.querySelectorAll("input[data-field]")) {
        s.value = i[s.dataset.field]; s.nextElementSibling.textContent = s.value;
      }
      c.querySelector("img.strip").src = stripUrl(id, video, i);
    };

    async function load() { data = await call("GET", `/api/jobs/${id}/review`); render(); }
    async function save() {
      const body = {videos: data.videos};
      await call("PUT", `/api/jobs/${id}/review`, body);
      status.className = ""; status.textContent = "saved";
    }

    let timer = null;
    main.addEventListener("input", (event) => {
      const f = event.target;
      if (f.classList.contains("subject")) { data.videos[f.dataset.video].subject = f.value; return; }
      if (!f.dataset.field) return;
      corrected(data.videos[f.dataset.video].intervals[Number(f.dataset.k)], f.dataset.field, Number(f.value));
      f.nextElementSibling.textContent = f.value;
      clearTimeout(timer);  // the strip of the corrected interval, once dragging stops
      timer = setTimeout(() => redraw(f.dataset.video, Number(f.dataset.k)), 400);
    });
    main.addEventListener("click", async (event) => {
      const b = event.target.closest("button.accept, button.reject");
      if (b) {
        data.videos[b.dataset.video].intervals[Number(b.dataset.k)].status = b.classList.contains("accept") ? "accepted" : "rejected";
        render(); return;
      }
      const link = event.target.closest("#export-csv, #export-ls");
      if (link && !link.dataset.saved) {
        event.preventDefault();
        try { await save(); link.dataset.saved = "1"; link.click(); delete link.dataset.saved; }
        catch (err) { status.className = "error"; status.textContent = err.message; }
      }
    });
    main.addEventListener("submit", (event) => {
      const form = event.target.closest("form.add");
      if (!form) return;
      event.preventDefault();
      const n = (name) => Number(form.elements[name].value);
      if (!(n("onset") <= n("apex") && n("apex") <= n("offset"))) {
        status.className = "error"; status.textContent = "onset <= apex <= offset must hold"; return;
      }
      data.videos[form.dataset.video].intervals.push({type: form.elements.type.value, onset: n("onset"),
        apex: n("apex"), offset: n("offset"), status: "accepted", score: null, origin: "added"});
      render();
    });
    document.getElementById("save").addEventListener("click", () => save().catch((err) => {
      status.className = "error"; status.textContent = err.message; }));
    document.getElementById("import-ls").addEventListener("change", async (event) => {
      try {
        const tasks = JSON.parse(await event.target.files[0].text());
        data = {...data, ...(await call("POST", `/api/jobs/${id}/review/labelstudio`, tasks))};
        render(); status.className = ""; status.textContent = "imported";
      } catch (err) { status.className = "error"; status.textContent = err.message; }
    });
    load().catch((err) => { document.getElementById("videos").textContent = err.message; });
  }

  return {index, job, pipeline, runs, curves, review};
})();
