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
      case "train": return `${p.store} → ${p.run}`;
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
    if (form.dataset.kind === "pipeline")
      values.predict = (values.predict || "").split(",").map((v) => v.trim()).filter(Boolean);
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

  return {index, job, pipeline};
})();
