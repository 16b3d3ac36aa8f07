// The dermedge clinic page: live view with the quality gate's verdict, capture, photo upload,
// the result card, and the history with filters and export. Talks only to this server's API.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("dermedge-token") || "";
let lastAutomatic = 0;
let previewUrl = null;

function showMessage(text, isError) {
  const box = $("message");
  box.textContent = text;
  box.className = isError ? "message error" : "message";
  box.hidden = !text;
}

function askToken() {
  return new Promise((resolve) => {
    const dialog = $("login");
    $("login-form").onsubmit = () => {
      token = $("token").value.trim();
      sessionStorage.setItem("dermedge-token", token);
      resolve();
    };
    if (!dialog.open) dialog.showModal();
  });
}

async function api(path, options = {}) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const headers = Object.assign({}, options.headers || {});
    if (token) headers["Authorization"] = "Bearer " + token;
    const response = await fetch("/api/v1" + path, Object.assign({}, options, { headers }));
    if (response.status !== 401) return response;
    await askToken();
  }
  throw new Error("the access token was refused");
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error || response.statusText;
  } catch (e) {
    return response.status + " " + response.statusText;
  }
}

function percent(p) {
  return (p * 100).toFixed(1) + " %";
}

function showResult(record) {
  $("result").hidden = false;
  const top = $("top");
  top.replaceChildren();
  for (const entry of record.top) {
    const li = document.createElement("li");
    const label = document.createElement("div");
    label.className = "label";
    const name = document.createElement("span");
    name.textContent = entry.class;
    const value = document.createElement("span");
    value.textContent = percent(entry.probability);
    label.append(name, value);
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = Math.max(1, Math.round(entry.probability * 100)) + "%";
    bar.append(fill);
    li.append(label, bar);
    top.append(li);
  }
  const flags = record.flags || {};
  $("refer").hidden = flags.refer !== true;
  $("malignant").textContent = percent(flags.malignant_probability || 0);
  $("uncertain").hidden = flags.uncertain !== true;
  const rows = $("members").querySelector("tbody");
  rows.replaceChildren();
  for (const member of record.members || []) {
    const best = member.probabilities.reduce((a, b) => (b.probability > a.probability ? b : a));
    const tr = document.createElement("tr");
    for (const text of [member.file, best.class + " " + percent(best.probability), member.ms.toFixed(1)]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    rows.append(tr);
  }
  $("r-model").textContent = record.ensemble;
  $("r-hash").textContent = record.sha256;
  $("r-input").textContent = record.input;
  $("r-time").textContent = new Date().toISOString().replace("T", " ").slice(0, 19) + " UTC";
  $("result").scrollIntoView({ block: "start" });
  loadHistory();
}

async function classifyResponse(response) {
  if (response.ok) {
    showMessage("");
    showResult(await response.json());
    return;
  }
  const text = await errorText(response);
  if (response.status === 503) showMessage("The device is busy or the camera is away: " + text, true);
  else if (response.status === 422) showMessage("Not classified: " + text, true);
  else showMessage(text, true);
}

async function upload(event) {
  event.preventDefault();
  const file = $("photo").files[0];
  if (!file) {
    showMessage("Choose a photo first.", true);
    return;
  }
  const form = new FormData();
  form.append("image", file, file.name);
  $("send").disabled = true;
  showMessage("Classifying…");
  try {
    await classifyResponse(await api("/classify", { method: "POST", body: form }));
  } catch (e) {
    showMessage("Cannot reach the device: " + e.message, true);
  } finally {
    $("send").disabled = false;
  }
}

async function capture() {
  $("capture").disabled = true;
  showMessage("Classifying the current frame…");
  try {
    await classifyResponse(await api("/capture", { method: "POST" }));
  } catch (e) {
    showMessage("Cannot reach the device: " + e.message, true);
  } finally {
    $("capture").disabled = false;
  }
}

async function refreshCamera() {
  try {
    const response = await api("/camera");
    if (response.status === 409) {
      $("live").hidden = true;
      return false;
    }
    $("live").hidden = false;
    const status = await response.json();
    const gate = $("gate");
    const state = status.state.state;
    if (state !== "live" || !status.frame) {
      gate.textContent = state === "gone" ? "camera unavailable" : state === "ended" ? "source ended" : "waiting for the camera…";
      gate.className = "gate bad";
      $("camera-state").textContent = state === "gone" ? status.state.detail : "";
    } else {
      gate.textContent = status.frame.gate;
      gate.className = status.frame.accepted ? "gate ok" : "gate bad";
      $("camera-state").textContent = status.frame.accepted ? "Trigger: " + status.trigger : status.frame.reasons.join("; ");
      const frame = await api("/frame");
      if (frame.ok) {
        const url = URL.createObjectURL(await frame.blob());
        $("preview").src = url;
        if (previewUrl) URL.revokeObjectURL(previewUrl);
        previewUrl = url;
      }
    }
    if (status.automatic && status.automatic.sequence !== lastAutomatic) {
      if (lastAutomatic !== 0 && status.automatic.record.top) showResult(status.automatic.record);
      lastAutomatic = status.automatic.sequence;
    }
    return true;
  } catch (e) {
    $("gate").textContent = "device unreachable";
    $("gate").className = "gate bad";
    return true;
  }
}

function recordLine(record) {
  const li = document.createElement("li");
  const time = document.createElement("span");
  time.textContent = record.time.replace("T", " ").slice(0, 19);
  li.append(time);
  const what = document.createElement("span");
  if (record.top) {
    what.textContent = record.top.map((t) => t.class + " " + percent(t.probability)).join(", ");
    li.append(what);
    if (record.flags.refer) {
      const flag = document.createElement("span");
      flag.className = "flag";
      flag.textContent = "refer";
      li.append(flag);
    }
    if (record.flags.uncertain) {
      const flag = document.createElement("span");
      flag.className = "warn";
      flag.textContent = "uncertain";
      li.append(flag);
    }
  } else if (record.reasons) {
    what.textContent = "rejected: " + record.reasons.join("; ");
    li.append(what);
  } else {
    what.textContent = "failed: " + record.error;
    li.append(what);
  }
  const input = document.createElement("span");
  input.className = "muted";
  input.textContent = record.input;
  li.append(input);
  return li;
}

function filterQuery() {
  const params = new URLSearchParams();
  if ($("flag").value) params.set("flag", $("flag").value);
  if ($("since").value) params.set("since", $("since").value);
  return params;
}

async function loadHistory(event) {
  if (event) event.preventDefault();
  const params = filterQuery();
  params.set("limit", "50");
  const response = await api("/records?" + params);
  const list = $("records");
  if (!response.ok) {
    list.replaceChildren();
    const li = document.createElement("li");
    li.textContent = await errorText(response);
    list.append(li);
    return;
  }
  const body = await response.json();
  list.replaceChildren(...body.records.map(recordLine));
}

async function exportRecords(format) {
  const params = filterQuery();
  params.set("format", format);
  const response = await api("/records/export?" + params);
  if (!response.ok) {
    showMessage(await errorText(response), true);
    return;
  }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = format === "csv" ? "dermedge-journal.csv" : "dermedge-journal.jsonl";
  link.click();
}

async function start() {
  $("upload").addEventListener("submit", upload);
  $("capture").addEventListener("click", capture);
  $("filters").addEventListener("submit", loadHistory);
  $("export-csv").addEventListener("click", () => exportRecords("csv"));
  $("export-jsonl").addEventListener("click", () => exportRecords("jsonl"));
  try {
    const health = await (await api("/health")).json();
    $("model").textContent = health.ensemble.id + (health.ensemble.status === "trained" ? "" : " (untrained fixture: tests only)");
    $("notice").textContent = health.notice;
    $("malignant-classes").textContent = health.ensemble.malignant_classes.join(" + ");
  } catch (e) {
    showMessage("Cannot reach the device: " + e.message, true);
  }
  loadHistory();
  if (await refreshCamera()) {
    setInterval(refreshCamera, 400);
  }
}

document.addEventListener("DOMContentLoaded", start);
