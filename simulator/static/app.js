// The WhatsApp simulator's page: choose a number, chat through the simulator's API, draw what arrives.
"use strict";

const $ = (selector) => document.querySelector(selector);
const api = (path, options) => fetch(path, options).then(async (reply) => {
  const data = await reply.json().catch(() => ({}));
  if (!reply.ok) throw new Error(data.error || `HTTP ${reply.status}`);
  return data;
});

const state = {
  waId: null,          // the number the page plays, as WhatsApp writes it (6281234567001)
  demo: [],
  events: null,        // EventSource of the current chat
  waiting: false,      // a message was sent and no reply has come yet
  waitTimer: null,
  outboxCount: 0,
  outboxSeen: 0,
  opener: null,        // what opened a drawer or the list, to give focus back
};

const TIME = new Intl.DateTimeFormat("id-ID", { hour: "2-digit", minute: "2-digit" });
const TIME_SECONDS = new Intl.DateTimeFormat("id-ID", { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const REPLY_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M10 9V5l-7 7 7 7v-4.1c5 0 8.5 1.6 11 5.1-1-5-4-10-11-11z"/></svg>';
const CLOCK_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M15 1H9v2h6zm-4 13h2V8h-2zm8-6.6 1.4-1.4c-.4-.5-.9-1-1.4-1.4L17.6 6A9 9 0 1 0 21 13a9 9 0 0 0-2-5.6zM12 20a7 7 0 1 1 0-14 7 7 0 0 1 0 14z"/></svg>';
const LIST_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M3 5h2v2H3zm4 0h14v2H7zm-4 6h2v2H3zm4 0h14v2H7zm-4 6h2v2H3zm4 0h14v2H7z"/></svg>';

// --- numbers -------------------------------------------------------------------------------

/** What a person types (0812-3456-7009, +62 812 ..., 812...) as a WhatsApp id, or null. */
function normaliseNumber(raw) {
  let digits = String(raw || "").replace(/[\s\-().]/g, "");
  if (digits.startsWith("+")) digits = digits.slice(1);
  else if (digits.startsWith("00")) digits = digits.slice(2);
  else if (digits.startsWith("0")) digits = "62" + digits.slice(1);
  else if (digits.startsWith("8")) digits = "62" + digits;
  return /^\d{8,15}$/.test(digits) ? digits : null;
}

/** 6281234567001 -> 0812-3456-7001, as the server writes it too. */
function displayNumber(waId) {
  if (waId.startsWith("62") && waId.length >= 9) {
    const local = "0" + waId.slice(2);
    return [local.slice(0, 4), local.slice(4, 8), local.slice(8)].filter(Boolean).join("-");
  }
  return "+" + waId;
}

function initials(names) {
  const words = (names[0] || "?").split(/\s+/);
  return (words[0][0] + (words.length > 1 ? words[words.length - 1][0] : "")).toUpperCase();
}

const AVATAR_COLOURS = ["#00a884", "#7f66ff", "#ff7a59", "#1fa2e1", "#d4588c", "#53a653"];

function renderDemo() {
  const list = $("#demo-list");
  list.replaceChildren();
  state.demo.forEach((person, i) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "identity";
    button.dataset.wa = person.wa_id;
    button.setAttribute("aria-pressed", "false");
    // Named by who and which number; what to try is its description, not part of its name.
    button.setAttribute("aria-label", `${person.names.join(", ")}, ${person.display}`);
    button.setAttribute("aria-describedby", `hint-${person.wa_id}`);
    button.innerHTML = `<span class="avatar" style="background:${AVATAR_COLOURS[i % AVATAR_COLOURS.length]}"
      aria-hidden="true">${escapeHtml(initials(person.names))}</span>
      <span class="names">${escapeHtml(person.names.join(", "))}</span>
      <span class="number">${escapeHtml(person.display)}</span>
      <span class="hint" id="hint-${person.wa_id}">${escapeHtml(person.hint)}</span>`;
    button.addEventListener("click", () => { choose(person.wa_id); closeDrawers(); $("#text").focus(); });
    item.append(button);
    list.append(item);
  });
}

function describe(waId) {
  const person = state.demo.find((p) => p.wa_id === waId);
  return person ? `${person.names.join(" & ")} · ${displayNumber(waId)}` : displayNumber(waId);
}

// --- choosing who you are ------------------------------------------------------------------

function choose(waId) {
  if (state.events) state.events.close();
  state.waId = waId;
  localStorage.setItem("simulator.waId", waId);
  history.replaceState(null, "", "#" + waId);
  document.querySelectorAll(".identity").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.wa === waId)));
  $("#outbox-number").textContent = displayNumber(waId);
  for (const id of ["#text", "#send", "#new-chat"]) $(id).disabled = false;
  clearMessages();
  renderOutbox({ messages: [] }, true);
  stopWaiting();
  setStatus();
  connect(waId);
}

function connect(waId) {
  const events = new EventSource(`/sim/api/chats/${waId}/events`);
  state.events = events;
  events.addEventListener("snapshot", (event) => {
    clearMessages();
    for (const entry of JSON.parse(event.data).entries) upsert(entry);
    setStatus();
  });
  events.addEventListener("entry", (event) => upsert(JSON.parse(event.data)));
  events.addEventListener("outbox", (event) => renderOutbox(JSON.parse(event.data)));
  events.onerror = () => { if (state.events === events) setStatus("terputus, menyambung ulang…"); };
}

function setStatus(text) {
  if (!state.waId) return;
  $("#chat-status").textContent = text || (state.waiting ? "mengetik…" : `Anda: ${describe(state.waId)}`);
}

// --- drawing the chat ------------------------------------------------------------------------

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

/** WhatsApp's formatting (*bold*, _italic_, ~strike~, ```mono```) and clickable links. */
function formatText(text) {
  return String(text).split(/(https?:\/\/[^\s]+)/g).map((part, i) => {
    if (i % 2 === 1) return `<a href="${escapeHtml(part)}" target="_blank" rel="noopener">${escapeHtml(part)}</a>`;
    return escapeHtml(part)
      .replace(/```([^`]+)```/g, "<code>$1</code>")
      .replace(/(^|[\s(])\*([^*\n]+)\*(?=[\s.,!?:;)]|$)/g, "$1<strong>$2</strong>")
      .replace(/(^|[\s(])_([^_\n]+)_(?=[\s.,!?:;)]|$)/g, "$1<em>$2</em>")
      .replace(/(^|[\s(])~([^~\n]+)~(?=[\s.,!?:;)]|$)/g, "$1<s>$2</s>");
  }).join("");
}

function clearMessages() {
  const messages = $("#messages");
  messages.replaceChildren();
  if (!state.waId) return;
  chip(`Simulator: pesan hanya berjalan di komputer ini. Anda ${describe(state.waId)}.`, "notice");
}

function chip(text, kind = "") {
  const element = document.createElement("div");
  element.className = `chip ${kind}`;
  element.textContent = text;
  $("#messages").append(element);
  scrollDown(true);
  return element;
}

function scrollDown(force) {
  const messages = $("#messages");
  const nearBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 160;
  if (force || nearBottom) messages.scrollTop = messages.scrollHeight;
}

function meta(entry) {
  const parts = [];
  if (entry.direction === "out" && typeof entry.latency === "number") {
    const seconds = entry.latency.toLocaleString("id-ID", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    parts.push(`<span class="latency" title="Waktu balasan: sejak pesan Anda sampai di webhook">${CLOCK_ICON}${seconds} dtk</span>`);
  }
  parts.push(`<time datetime="${new Date(entry.at * 1000).toISOString()}">${TIME.format(new Date(entry.at * 1000))}</time>`);
  if (entry.direction === "in") {
    if (entry.status === null || entry.status === undefined) parts.push('<span class="ticks pending" title="Mengirim">🕓</span>');
    else if (entry.status === 200) parts.push('<span class="ticks" title="Diterima webhook (HTTP 200)">✓✓</span>');
    else parts.push(`<span class="ticks failed" title="Webhook menjawab HTTP ${entry.status || "–"}">!</span>`);
  }
  return `<span class="meta">${parts.join("")}</span>`;
}

function quoteOf(wamid) {
  if (!wamid) return "";
  const original = document.querySelector(`[data-wamid="${CSS.escape(wamid)}"] .body`);
  return original ? `<div class="quote">${escapeHtml(original.textContent.split("\n")[0])}</div>` : "";
}

function citizenContent(message) {
  if (message.type === "text") return `<div class="body">${formatText(message.text.body)}</div>`;
  if (message.type === "interactive") {
    const reply = message.interactive.button_reply || message.interactive.list_reply || {};
    return quoteOf(message.context && message.context.id) + `<div class="body">${escapeHtml(reply.title || "")}</div>`;
  }
  return `<div class="body">[${escapeHtml(message.type)}]</div>`;
}

/** The assistant's message: bubble content, and the buttons to show under it. */
function assistantContent(entry) {
  const message = entry.message;
  const type = message.type;
  if (type === "text") return { html: `<div class="body">${formatText(message.text.body)}</div>` };
  if (type === "interactive") {
    const interactive = message.interactive;
    const body = `<div class="body">${formatText(interactive.body.text)}</div>`;
    if (interactive.type === "button") {
      return { html: body, buttons: interactive.action.buttons.map((b) => b.reply) };
    }
    const rows = interactive.action.sections.flatMap((s) => s.rows || []);
    return { html: body, list: { label: interactive.action.button, rows, title: interactive.body.text } };
  }
  if (type === "document") {
    const doc = message.document;
    const media = entry.media;
    const href = media ? media.url : doc.link;
    const size = media ? `PDF · ${Math.max(1, Math.round(media.size / 1024))} kB` : "PDF";
    const card = `<a class="document" href="${escapeHtml(href || "#")}" target="_blank" rel="noopener"
        aria-label="Buka dokumen ${escapeHtml(doc.filename || "")}">
        <span class="pdf-icon" aria-hidden="true">PDF</span>
        <span class="doc-text"><span class="doc-name">${escapeHtml(doc.filename || "dokumen.pdf")}</span>
        <span class="doc-info">${size}</span></span><span class="doc-open">Buka</span></a>`;
    return { html: card + (doc.caption ? `<div class="body">${formatText(doc.caption)}</div>` : "") };
  }
  if (type === "template") {
    const template = message.template;
    const params = (template.components || []).flatMap((c) => (c.parameters || []).map((p) => p.text));
    const code = params[0] || "";
    // Meta writes an authentication template's text itself; this is its Indonesian wording.
    const body = `*${code}* adalah kode verifikasi Anda. Demi keamanan, jangan bagikan kode ini.`;
    return { html: `<div class="template-label">Template ${escapeHtml(template.name)}</div><div class="body">${formatText(body)}</div>`,
             copy: code };
  }
  if (type === "image") {
    const image = message.image;
    return { html: `<img class="image" src="${escapeHtml(image.link || "")}" alt="Gambar dari asisten">` +
                   (image.caption ? `<div class="body">${formatText(image.caption)}</div>` : "") };
  }
  return { html: `<pre class="raw">${escapeHtml(JSON.stringify(message, null, 2))}</pre>` };
}

function upsert(entry) {
  const messages = $("#messages");
  if (entry.direction === "reset") {
    clearMessages();
    chip(`Percakapan baru dimulai · ${TIME.format(new Date(entry.at * 1000))}`);
    return;
  }
  const existing = messages.querySelector(`[data-seq="${entry.seq}"]`);  // an update (the webhook's answer)
  const row = document.createElement("div");
  row.className = entry.direction === "in" ? "row-in" : "row-out";
  row.dataset.seq = entry.seq;
  if (entry.wamid) row.dataset.wamid = entry.wamid;
  // A little space where the speaker changes, as WhatsApp does.
  const previous = existing ? existing.previousElementSibling : messages.lastElementChild;
  if (!previous || previous.className.split(" ")[0] !== row.className) row.classList.add("row-gap");

  if (entry.direction === "in") {
    row.innerHTML = `<div class="bubble">${citizenContent(entry.message)}${meta(entry)}</div>`;
  } else {
    const content = assistantContent(entry);
    const bubble = document.createElement("div");
    bubble.className = "bubble";
    bubble.innerHTML = content.html + meta(entry);
    row.append(bubble);
    if (content.list) {
      const open = document.createElement("button");
      open.type = "button";
      open.className = "list-open";
      open.innerHTML = `${LIST_ICON}<span>${escapeHtml(content.list.label)}</span>`;
      open.addEventListener("click", () => openList(content.list, entry.wamid, open));
      const clear = document.createElement("div");
      clear.className = "meta-clear";
      bubble.append(clear, open);
    }
    if (content.buttons) {
      const group = document.createElement("div");
      group.className = "choice-buttons";
      for (const option of content.buttons) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "choice";
        button.innerHTML = `${REPLY_ICON}<span>${escapeHtml(option.title)}</span>`;
        button.addEventListener("click", () =>
          send({ reply: { type: "button_reply", id: option.id, title: option.title, context: entry.wamid } }));
        group.append(button);
      }
      row.append(group);
    }
    if (content.copy) {
      const group = document.createElement("div");
      group.className = "choice-buttons";
      const button = document.createElement("button");
      button.type = "button";
      button.className = "choice";
      button.textContent = "Salin kode";
      button.addEventListener("click", () => fillComposer(content.copy));
      group.append(button);
      row.append(group);
    }
    stopWaiting();
  }

  if (existing) {
    existing.replaceWith(row);
  } else {
    messages.append(row);
    scrollDown(entry.direction === "in");
  }
}

// --- sending ---------------------------------------------------------------------------------

async function send(body) {
  if (!state.waId) return;
  startWaiting();
  try {
    await api(`/sim/api/chats/${state.waId}/messages`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  } catch (error) {
    stopWaiting();
    chip(`Pesan tidak terkirim: ${error.message}`, "error");
  }
  $("#text").focus();
}

function startWaiting() {
  state.waiting = true;
  $("#typing").hidden = false;
  setStatus();
  clearTimeout(state.waitTimer);
  state.waitTimer = setTimeout(stopWaiting, 30000);  // a turn never takes this long: stop pretending
}

function stopWaiting() {
  state.waiting = false;
  clearTimeout(state.waitTimer);
  $("#typing").hidden = true;
  setStatus();
}

function fillComposer(text) {
  const input = $("#text");
  input.value = text;
  closeDrawers();
  input.focus();
}

// --- the list of a list message ----------------------------------------------------------------

function openList(list, wamid, opener) {
  const dialog = $("#list-dialog");
  const rows = $("#list-rows");
  $("#list-title").textContent = list.label;
  rows.querySelectorAll(".list-row").forEach((r) => r.remove());
  list.rows.forEach((row, i) => {
    const label = document.createElement("label");
    label.className = "list-row";
    label.innerHTML = `<input type="radio" name="row" value="${i}">
      <span><span class="row-title">${escapeHtml(row.title)}</span>
      ${row.description ? `<span class="row-description">${escapeHtml(row.description)}</span>` : ""}</span>`;
    rows.append(label);
  });
  $("#list-send").disabled = true;
  dialog.dataset.wamid = wamid || "";
  dialog._rows = list.rows;
  state.opener = opener;
  dialog.showModal();
  const first = rows.querySelector("input");
  if (first) first.focus();
}

function closeList() {
  $("#list-dialog").close();
}

// --- the development outbox ---------------------------------------------------------------------

function renderOutbox(data, reset = false) {
  if (data.path) $("#outbox-path").textContent = data.path;
  const list = $("#outbox-list");
  list.replaceChildren();
  const messages = data.messages || [];
  messages.slice().reverse().forEach((message, i) => {
    const item = document.createElement("li");
    item.className = "outbox-item" + (i === 0 ? " latest" : "");
    const sent = message.sent_at ? new Date(message.sent_at) : null;
    const when = sent && !isNaN(sent) ? TIME_SECONDS.format(sent) : "";
    const text = escapeHtml(message.text).replace(/(^|\D)(\d{6})(?!\d)/, '$1<strong class="otp-code">$2</strong>');
    item.innerHTML = `<div class="outbox-meta"><span>ke ${escapeHtml(message.to)}</span><time>${when}</time></div>
      <p class="outbox-text">${text}</p>`;
    if (message.code) {
      const use = document.createElement("button");
      use.type = "button";
      use.className = "use-code";
      use.textContent = `Isi kode ${message.code} ke kolom pesan`;
      use.addEventListener("click", () => fillComposer(message.code));
      item.append(use);
    }
    list.append(item);
  });
  $("#outbox-empty").hidden = messages.length > 0;
  const badge = $("#outbox-badge");
  if (reset) {
    state.outboxSeen = state.outboxCount = 0;
  } else {
    if (messages.length > state.outboxCount && !$("#outbox").classList.contains("open")) {
      state.outboxSeen += messages.length - state.outboxCount;
    }
    state.outboxCount = messages.length;
  }
  badge.textContent = String(state.outboxSeen);
  badge.hidden = state.outboxSeen === 0;
}

// --- drawers (narrow screens) ---------------------------------------------------------------------

function openDrawer(id, opener) {
  closeDrawers();
  const panel = document.getElementById(id);
  panel.classList.add("open");
  $("#backdrop").hidden = false;
  state.opener = opener || document.activeElement;
  if (id === "outbox") { state.outboxSeen = 0; $("#outbox-badge").hidden = true; }
  const first = panel.querySelector("input, button:not(.drawer-close)") || panel.querySelector("button");
  if (first) first.focus();
}

function closeDrawers() {
  const open = document.querySelectorAll(".panel.open");
  if (!open.length) return;
  open.forEach((p) => p.classList.remove("open"));
  $("#backdrop").hidden = true;
  if (state.opener && document.contains(state.opener)) state.opener.focus();
  state.opener = null;
}

// --- wiring ----------------------------------------------------------------------------------------

function wire() {
  $("#composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("#text");
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    send({ text });
  });

  $("#other-number").addEventListener("submit", (event) => {
    event.preventDefault();
    const waId = normaliseNumber($("#number-input").value);
    if (!waId) {
      $("#number-error").textContent = "Nomor tidak valid. Contoh: 0812-3456-7009 atau +62 812 3456 7009.";
      $("#number-input").focus();
      return;
    }
    $("#number-error").textContent = "";
    $("#number-input").value = "";
    choose(waId);
    closeDrawers();
    $("#text").focus();
  });

  $("#new-chat").addEventListener("click", async () => {
    if (!state.waId) return;
    const button = $("#new-chat");
    button.disabled = true;
    try {
      const result = await api(`/sim/api/chats/${state.waId}/reset`, { method: "POST" });
      if (result.problem) chip(result.problem, "error");
    } catch (error) {
      chip(`Percakapan baru gagal: ${error.message}`, "error");
    }
    button.disabled = false;
    stopWaiting();
    $("#text").focus();
  });

  document.querySelectorAll("[data-open]").forEach((b) => b.addEventListener("click", () => openDrawer(b.dataset.open, b)));
  $("#open-identities").addEventListener("click", (event) => openDrawer("identities", event.currentTarget));
  $("#open-outbox").addEventListener("click", (event) => openDrawer("outbox", event.currentTarget));
  document.querySelectorAll("[data-close]").forEach((b) => b.addEventListener("click", closeDrawers));
  $("#backdrop").addEventListener("click", closeDrawers);
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") closeDrawers(); });

  const dialog = $("#list-dialog");
  $("#list-rows").addEventListener("change", () => { $("#list-send").disabled = false; });
  $("#list-close").addEventListener("click", closeList);
  dialog.addEventListener("close", () => { if (state.opener && document.contains(state.opener)) state.opener.focus(); });
  $("#list-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = dialog.querySelector("input[name=row]:checked");
    if (!chosen) return;
    const row = dialog._rows[Number(chosen.value)];
    closeList();
    send({ reply: { type: "list_reply", id: row.id, title: row.title, description: row.description || "",
                    context: dialog.dataset.wamid || null } });
  });
}

async function start() {
  wire();
  try {
    const config = await api("/sim/api/config");
    state.demo = config.demo;
    $("#outbox-path").textContent = config.outbox;
  } catch (error) {
    chip(`Simulator tidak menjawab: ${error.message}`, "error");
  }
  renderDemo();
  const wanted = normaliseNumber(location.hash.slice(1)) || localStorage.getItem("simulator.waId");
  if (wanted && normaliseNumber(wanted)) choose(normaliseNumber(wanted));
}

start();
