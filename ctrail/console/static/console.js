// ContainerTrail console: the live alert stream, triage buttons and logout. No inline script
// runs (the Content-Security-Policy forbids it); values from events are set as text only.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrfToken()},
    body: JSON.stringify(body || {}),
  });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = JSON.stringify((await response.json()).detail); } catch (e) { /* not JSON */ }
    throw new Error(response.status + " " + detail);
  }
  return response.json();
}

function field(doc, path) {
  let value = doc;
  for (const part of path.split(".")) {
    if (value === null || typeof value !== "object" || !(part in value)) return "";
    value = value[part];
  }
  if (value === null || value === undefined) return "";
  return Array.isArray(value) ? value.join(", ") : String(value);
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function alertRow(doc, columns) {
  const tr = document.createElement("tr");
  const id = field(doc, "event.id");
  tr.dataset.id = id;
  tr.className = "status-" + doc.triage.status + " new";
  tr.appendChild(cell(doc.triage.status));
  for (const path of columns) tr.appendChild(cell(field(doc, path)));
  const open = document.createElement("a");
  open.href = "/alerts/" + encodeURIComponent(id);
  open.className = "open";
  open.textContent = "open";
  const td = document.createElement("td");
  td.appendChild(open);
  tr.appendChild(td);
  return tr;
}

function liveAlerts() {
  const table = document.getElementById("alerts");
  const status = document.getElementById("live-status");
  if (!table || !status) return;
  if (table.dataset.live !== "1") { status.textContent = "Live: off while filtering"; return; }
  const columns = JSON.parse(table.dataset.columns);
  const body = table.tBodies[0];
  const source = new EventSource("/api/alerts/stream");
  source.onopen = () => { status.textContent = "Live: connected"; };
  source.onerror = () => { status.textContent = "Live: reconnecting…"; };
  source.addEventListener("ended", () => { source.close(); window.location = "/login"; });
  source.addEventListener("alert", (message) => {
    const doc = JSON.parse(message.data);
    const id = field(doc, "event.id");
    if (body.querySelector('tr[data-id="' + CSS.escape(id) + '"]')) return;
    body.insertBefore(alertRow(doc, columns), body.firstChild);
  });
}

function triageButtons() {
  const section = document.querySelector("section.triage");
  if (!section) return;
  const error = document.getElementById("triage-error");
  section.addEventListener("click", async (click) => {
    const action = click.target.dataset && click.target.dataset.action;
    if (!action) return;
    const body = {action: action};
    if (action === "assign") body.assignee = document.getElementById("assignee").value;
    if (action === "note") body.note = document.getElementById("note").value;
    if (action === "close") body.reason = document.getElementById("reason").value;
    try {
      await post("/api/alerts/" + encodeURIComponent(section.dataset.alert) + "/triage", body);
      window.location.reload();
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    }
  });
}

function logoutButton() {
  const button = document.getElementById("logout");
  if (!button) return;
  button.addEventListener("click", async () => {
    try { await post("/api/logout"); } finally { window.location = "/login"; }
  });
}

function operationButtons() {
  for (const button of document.querySelectorAll("button.run-report")) {
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await post("/api/reports/" + encodeURIComponent(button.dataset.report) + "/run");
        window.location.reload();
      } catch (e) {
        const error = document.getElementById("ops-error");
        error.textContent = e.message;
        error.hidden = false;
        button.disabled = false;
      }
    });
  }
  const verify = document.getElementById("verify-now");
  if (!verify) return;
  verify.addEventListener("click", async () => {
    verify.disabled = true;
    const output = document.getElementById("verify-output");
    try {
      const result = await post("/api/evidence/verify");
      output.textContent = (result.ok ? "OK\n" : "PROBLEMS\n") + result.output;
    } catch (e) {
      output.textContent = e.message;
    }
    output.hidden = false;
    verify.disabled = false;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  logoutButton();
  operationButtons();
  liveAlerts();
  triageButtons();
});
