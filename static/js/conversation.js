// One conversation: history (older pages on scroll), compose and send with Enter,
// live arrival, delivered and read marks, typing, reply, edit, react, delete for
// everyone, disappearing messages, attachments, reports, safety-number banners; in a
// direct conversation, call buttons and the calls with that person among the messages.
// Everything decrypted goes into the page as text, never as HTML.

import { api, ApiError } from "./api.js";
import { IdentityKeyChanged, Parley } from "./parley.js";
import { goLive } from "./live.js";
import { formatDuration, mediaName } from "./calls.js";
import { byId, conversationTitle, el, errorText, formatTime, UserError } from "./ui.js";

const PAGE = 50;
const TYPING_SEND_MS = 3000;
const TYPING_SHOW_MS = 6000;
const REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🙏"];
const INLINE_IMAGES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);
const INLINE_IMAGE_MAX = 10 * 1024 * 1024;
// setTimeout fires at once past 2^31 - 1 ms (24.8 days): longer waits go in steps.
const MAX_TIMER_MS = 2 ** 31 - 1;
// A mute "until I unmute" is a date no one reaches: the server's year 9999.
const MUTED_FOREVER_YEAR = 9999;

const root = byId("conversation");
const conversationId = root.dataset.conversationId;
const log = byId("log");
const statusLine = byId("connection");
const text = byId("compose-text");
const sendButton = byId("send");
const composeError = byId("compose-error");

const entries = new Map(); // message id -> entry
const pendingEffects = new Map(); // target id -> [effects that arrived before it]
const receipts = new Map(); // user id -> {delivered_seq, read_seq}
const typingTimers = new Map();
let client;
let conversation;
let socket;
let oldestSeq = null;
let replyTo = null;
let editing = null;
let lastTypingSent = 0;
let readUpTo = 0;
let peer = null; // the other member of a direct conversation
let callsTimer = null;
let muteTimer = null;

function handleOf(userId) {
  if (userId === client.userId) return "you";
  const member = conversation.members.find((m) => m.user.id === userId);
  return member ? `@${member.user.handle}` : "someone who left";
}

// --- Rendering ---------------------------------------------------------------------------------

function statusOf(entry) {
  if (entry.message.sender_id !== client.userId || entry.deleted) return "";
  const others = [...receipts.entries()].filter(([userId]) => userId !== client.userId);
  if (!others.length) return "Sent";
  const seq = entry.message.seq;
  const shown = others.filter(([, r]) => r.read_seq !== null);
  if (shown.length && shown.length === others.length && shown.every(([, r]) => r.read_seq >= seq)) return "Read";
  if (others.every(([, r]) => r.delivered_seq >= seq || (r.read_seq ?? 0) >= seq)) return "Delivered";
  return "Sent";
}

function renderStatus(entry) {
  const status = entry.node.querySelector(".msg-status");
  if (status) status.textContent = statusOf(entry);
}

function bodyOf(entry) {
  if (entry.deleted) return "This message was deleted.";
  if (!entry.verified) return "This message could not be verified.";
  return entry.body;
}

function snippet(entry) {
  const body = bodyOf(entry) || (entry.attachments?.length ? "Attachment" : "");
  return body.length > 80 ? `${body.slice(0, 80)}…` : body;
}

function renderBody(entry) {
  const node = entry.node;
  const body = node.querySelector(".msg-body");
  body.textContent = bodyOf(entry);
  body.classList.toggle("msg-unverified", !entry.verified && !entry.deleted);
  node.classList.toggle("msg-deleted", entry.deleted);
  node.querySelector(".msg-edited").hidden = !entry.edited || entry.deleted;
  if (entry.deleted) clearAttachments(entry);
  const reactions = node.querySelector(".msg-reactions");
  const counts = new Map();
  for (const emoji of entry.reactions.values()) if (emoji) counts.set(emoji, (counts.get(emoji) || 0) + 1);
  reactions.replaceChildren(...[...counts].map(([emoji, count]) => el("span", { class: "reaction", "aria-label": `${emoji} ${count}` }, `${emoji} ${count}`)));
  const actions = node.querySelector(".msg-actions");
  actions.hidden = entry.deleted;
  for (const button of actions.querySelectorAll("[data-mine]")) button.hidden = !entry.mine || !entry.verified;
  for (const button of actions.querySelectorAll("[data-theirs]")) button.hidden = entry.mine || !entry.verified;
  renderStatus(entry);
}

/** Drop a message's attachments from the page, and the image data they hold. */
function clearAttachments(entry) {
  entry.node?.querySelector(".msg-attachments").replaceChildren();
  for (const url of entry.blobUrls || []) URL.revokeObjectURL(url);
  entry.blobUrls = [];
  entry.attachments = [];
}

/** One attachment, downloaded and decrypted once (buildNode); images inline. */
function renderAttachment(entry, meta) {
  const name = typeof meta.name === "string" && meta.name ? meta.name : "file";
  const mime = typeof meta.mime === "string" ? meta.mime : "application/octet-stream";
  const holder = el("div", { class: "attachment" });
  if (INLINE_IMAGES.has(mime) && meta.size <= INLINE_IMAGE_MAX) {
    holder.append(el("span", { class: "muted" }, `Loading ${name}…`));
    client.downloadAttachment(meta).then(
      (data) => {
        if (!holder.isConnected || entry.deleted) return; // deleted or expired meanwhile
        const url = URL.createObjectURL(new Blob([data], { type: mime }));
        entry.blobUrls.push(url);
        holder.replaceChildren(el("img", { src: url, alt: name, class: "attachment-image" }));
      },
      () => holder.replaceChildren(el("span", { class: "msg-unverified" }, `${name} could not be opened.`)),
    );
  } else {
    holder.append(
      el("button", {
        type: "button", class: "link-button",
        onclick: async (event) => {
          const button = event.currentTarget;
          button.disabled = true;
          try {
            const data = await client.downloadAttachment(meta);
            const url = URL.createObjectURL(new Blob([data], { type: "application/octet-stream" }));
            const a = el("a", { href: url, download: name });
            document.body.append(a);
            a.click();
            a.remove();
            setTimeout(() => URL.revokeObjectURL(url), 60_000);
          } catch {
            button.textContent = `${name} could not be opened.`;
          }
          button.disabled = false;
        },
      }, `Download ${name} (${Math.ceil((meta.size || 0) / 1024)} KB)`),
    );
  }
  return holder;
}

function buildNode(entry) {
  const m = entry.message;
  const quote = entry.replyTo ? el("blockquote", { class: "msg-quote", dataset: { target: entry.replyTo } }) : null;
  const node = el("li", { class: `msg ${entry.mine ? "msg-mine" : "msg-theirs"}`, id: `m-${m.id}`, dataset: { seq: m.seq, id: m.id, ts: m.server_ts } },
    el("div", { class: "msg-meta" },
      el("span", { class: "msg-sender" }, handleOf(m.sender_id)), " ",
      el("time", { datetime: new Date(m.server_ts).toISOString() }, formatTime(m.server_ts)), " ",
      el("span", { class: "msg-edited muted", hidden: true }, "(edited)"),
      m.expires_at ? el("span", { class: "muted", title: "Disappearing message" }, " ⏱") : null,
    ),
    quote,
    el("p", { class: "msg-body" }),
    el("div", { class: "msg-attachments" }),
    el("div", { class: "msg-reactions" }),
    entry.mine ? el("span", { class: "msg-status muted", "aria-live": "off" }) : null,
    el("div", { class: "msg-actions" },
      el("button", { type: "button", class: "link-button", dataset: { action: "reply" } }, "Reply"),
      el("button", { type: "button", class: "link-button", dataset: { action: "react" }, "aria-expanded": "false" }, "React"),
      el("button", { type: "button", class: "link-button", dataset: { action: "edit", mine: "1" } }, "Edit"),
      el("button", { type: "button", class: "link-button", dataset: { action: "delete", mine: "1" } }, "Delete for everyone"),
      el("button", { type: "button", class: "link-button", dataset: { action: "report", theirs: "1" } }, "Report"),
    ),
  );
  entry.node = node;
  entry.blobUrls = [];
  // Attachments once: renderBody runs again on every edit and reaction.
  if (!entry.deleted) node.querySelector(".msg-attachments").append(...entry.attachments.map((meta) => renderAttachment(entry, meta)));
  renderBody(entry);
  return node;
}

function refreshQuotes() {
  for (const quote of log.querySelectorAll(".msg-quote")) {
    const target = entries.get(quote.dataset.target);
    quote.textContent = target ? `${handleOf(target.message.sender_id)}: ${snippet(target)}` : "Replying to an earlier message";
  }
}

function insertNode(entry) {
  const { seq, server_ts: ts } = entry.message;
  // Messages in seq order; calls (no seq) by time.
  const after = [...log.children].find((child) => (child.dataset.seq ? Number(child.dataset.seq) > seq : Number(child.dataset.ts) > ts));
  log.insertBefore(buildNode(entry), after || null);
}

// --- Calls with the other member of a direct conversation ---------------------------------------

/** "Missed video call", "Outgoing voice call · 1:23", "Incoming video call · Declined". */
function callText(call) {
  const media = mediaName(call.media);
  if (call.missed) return `Missed ${media}`;
  const what = `${call.direction === "outgoing" ? "Outgoing" : "Incoming"} ${media}`;
  if (typeof call.duration === "number") return `${what} · ${formatDuration(call.duration)}`;
  const outcome = {
    declined: "Declined", timeout: "No answer", busy: "Busy", cancelled: "Cancelled",
    failed: "Failed", connection_lost: "Connection lost", unavailable: "Not available",
  }[call.end_reason];
  return outcome ? `${what} · ${outcome}` : what;
}

function addCall(call) {
  // Calls still ringing or in progress come when they end; both calls of a glare
  // are one attempt: the one that went on is shown.
  if (call.state === "ringing" || call.state === "active" || call.end_reason === "glare") return;
  const ts = Date.parse(call.created_at);
  const node = el("li", { class: `call-entry${call.missed ? " call-missed" : ""}`, id: `call-${call.id}`, dataset: { callId: call.id, ts } },
    el("span", { class: "call-entry-text" }, callText(call)), " ",
    el("time", { class: "muted", datetime: new Date(ts).toISOString() }, formatTime(ts)),
  );
  const existing = byId(`call-${call.id}`);
  if (existing) {
    existing.replaceWith(node);
    return;
  }
  const after = [...log.children].find((child) => Number(child.dataset.ts) > ts);
  log.insertBefore(node, after || null);
  return node;
}

async function loadCalls({ live = false } = {}) {
  if (!peer) return;
  try {
    const page = await api("GET", "/calls", { query: { peer: peer.id, limit: 50 } });
    const added = page.results.map(addCall).filter(Boolean);
    if (live) added.at(-1)?.scrollIntoView({ block: "end" });
  } catch {
    // The messages are what matters here; the calls are also on the Calls page.
  }
}

// --- Applying messages -------------------------------------------------------------------------

function applyEffect(target, effect) {
  // Only the target's own sender may edit it; anyone in the conversation may react.
  if (effect.type === "edit" && effect.sender === target.message.sender_id && !target.deleted) {
    if (effect.seq > (target.editSeq || 0)) {
      target.body = String(effect.body ?? "");
      target.edited = true;
      target.editSeq = effect.seq;
    }
  } else if (effect.type === "reaction") {
    const previous = target.reactionSeq.get(effect.sender) || 0;
    if (effect.seq > previous) {
      target.reactions.set(effect.sender, typeof effect.emoji === "string" ? effect.emoji.slice(0, 16) : "");
      target.reactionSeq.set(effect.sender, effect.seq);
    }
  }
  if (target.node) renderBody(target);
}

function scheduleExpiry(entry) {
  const expiresAt = entry.message.expires_at ? Date.parse(entry.message.expires_at) : null;
  if (!expiresAt) return;
  // Local copies disappear when due, whether or not the server's sweep ran yet. A wait
  // past what setTimeout can hold (the 4-week timer) is cut into steps.
  const wait = expiresAt - Date.now();
  setTimeout(() => {
    if (entries.get(entry.message.id) !== entry) return; // gone already
    if (Date.now() < expiresAt) {
      scheduleExpiry(entry);
      return;
    }
    clearAttachments(entry);
    entry.node?.remove();
    entries.delete(entry.message.id);
  }, Math.min(Math.max(0, wait), MAX_TIMER_MS));
}

/** Add one opened message to the page (idempotent: a message seen twice is kept once). */
function addMessage(received) {
  const m = received.message;
  if (m.conversation_id !== conversationId || entries.has(m.id)) return null;
  if (m.expires_at && Date.parse(m.expires_at) <= Date.now()) return null;
  const payload = received.payload;
  const kind = received.verified ? payload.type : null;
  if (kind === "edit" || kind === "reaction") {
    entries.set(m.id, { message: m, effect: true });
    const effect = { type: kind, sender: m.sender_id, seq: m.seq, body: payload.body, emoji: payload.emoji };
    const target = entries.get(payload.target);
    if (target && !target.effect) applyEffect(target, effect);
    else pendingEffects.set(payload.target, [...(pendingEffects.get(payload.target) || []), effect]);
    return null;
  }
  const entry = {
    message: m,
    received,
    mine: m.sender_id === client.userId,
    verified: received.verified,
    deleted: Boolean(m.deleted || received.deleted),
    body: received.verified ? String(payload.body ?? "") : "",
    attachments: received.verified && Array.isArray(payload.attachments) ? payload.attachments.filter((a) => a && typeof a === "object") : [],
    replyTo: received.verified && typeof payload.reply_to === "string" ? payload.reply_to : null,
    reactions: new Map(),
    reactionSeq: new Map(),
  };
  entries.set(m.id, entry);
  for (const effect of pendingEffects.get(m.id) || []) applyEffect(entry, effect);
  pendingEffects.delete(m.id);
  insertNode(entry);
  scheduleExpiry(entry);
  return entry;
}

/**
 * Add a page of history (newest first, as the API answers). The oldest seq comes from
 * the page itself, so a page of only edits and reactions still moves "Load older" on.
 * Answers whether older messages may remain.
 */
function addPage(page) {
  for (const received of [...page].reverse()) addMessage(received);
  refreshQuotes();
  if (!page.length) return false;
  const lowest = Math.min(...page.map((r) => r.message.seq));
  oldestSeq = Math.min(oldestSeq ?? lowest, lowest);
  return page.length >= PAGE && lowest > 1;
}

function newestSeq() {
  let newest = 0;
  for (const entry of entries.values()) newest = Math.max(newest, entry.message.seq);
  return newest;
}

async function markRead() {
  const newest = newestSeq();
  if (document.visibilityState !== "visible" || newest <= readUpTo || conversation.my_state === "requested") return;
  readUpTo = newest;
  if (!socket?.send({ type: "message.read", conversation_id: conversationId, seq: newest })) {
    await client.markRead(conversationId, newest).catch(() => {});
  }
}

// --- Loading -----------------------------------------------------------------------------------

async function loadOlder() {
  const button = byId("load-older");
  button.disabled = true;
  log.setAttribute("aria-busy", "true");
  const anchor = log.firstElementChild;
  try {
    const page = await client.history(conversationId, { before: oldestSeq, limit: PAGE });
    button.hidden = !addPage(page);
    anchor?.scrollIntoView({ block: "start" });
  } catch (error) {
    statusLine.textContent = errorText(error);
  } finally {
    button.disabled = false;
    log.setAttribute("aria-busy", "false");
  }
}

async function loadConversation() {
  conversation = await api("GET", `/conversations/${conversationId}`);
  conversation.my_state ??= "accepted"; // a server without the field: no request
  const others = conversation.members.filter((m) => m.user.id !== client.userId);
  peer = conversation.kind === "direct" && others.length === 1 ? others[0].user : null;
  for (const button of byId("call-actions").querySelectorAll("button[data-call-media]")) {
    if (peer) {
      button.dataset.callHandle = peer.handle;
      button.dataset.callUser = peer.id; // calls.js checks the server calls this user
    } else {
      delete button.dataset.callHandle;
      delete button.dataset.callUser;
    }
  }
  byId("call-actions").hidden = !peer;
  byId("members").textContent = others.length ? `With ${others.map((m) => `@${m.user.handle}`).join(", ")}` : "Only you are left here.";
  byId("conversation-title").textContent = conversationTitle(conversation, client.userId);
  byId("timer").value = conversation.disappearing_seconds ? String(conversation.disappearing_seconds) : "";
  renderMute();
  byId("request-bar").hidden = conversation.my_state !== "requested";
  const canWrite = conversation.my_state !== "requested" && others.length > 0;
  text.disabled = !canWrite;
  sendButton.disabled = !canWrite;
}

/** The mute control: "Muted" and until when, or "Not muted"; back to that when it ends. */
function renderMute() {
  clearTimeout(muteTimer);
  const select = byId("mute");
  select.disabled = false; // disabled in the page until the conversation is loaded
  const until = conversation.muted_until ? Date.parse(conversation.muted_until) : NaN;
  const muted = until > Date.now();
  const forever = muted && new Date(until).getUTCFullYear() >= MUTED_FOREVER_YEAR;
  select.querySelector('option[value="off"]').textContent = muted ? "Unmute" : "Not muted";
  select.value = muted ? "muted" : "off";
  byId("muted-until").textContent = !muted ? "" : forever ? "Muted until you unmute" : `Muted until ${formatTime(until)}`;
  if (muted && !forever) muteTimer = setTimeout(renderMute, Math.min(until - Date.now() + 1000, MAX_TIMER_MS));
}

async function loadReceipts() {
  const result = await api("GET", `/conversations/${conversationId}/receipts`);
  for (const r of result.results) receipts.set(r.user_id, { delivered_seq: r.delivered_seq, read_seq: r.read_seq });
  for (const entry of entries.values()) if (entry.node) renderStatus(entry);
}

async function checkSafetyNumbers() {
  const banners = byId("banners");
  banners.replaceChildren();
  for (const member of conversation.members) {
    if (member.user.id === client.userId) continue;
    try {
      await client.directory(member.user.id);
    } catch (error) {
      if (error instanceof IdentityKeyChanged) showKeyChanged(member.user, true);
      continue;
    }
    if (client.pin(member.user.id)?.changed) showKeyChanged(member.user, false);
  }
}

function showKeyChanged(user, wasVerified) {
  const banner = el("div", { class: "banner", role: "alert" },
    el("p", {}, `Your safety number with @${user.handle} changed. They may have a new phone or reinstalled Parley, or someone may be trying to intercept. `,
      el("a", { href: "/settings/safety" }, "Compare safety numbers"), "."),
    el("button", {
      type: "button", class: "button",
      onclick: async () => {
        if (wasVerified) await client.directory(user.id, { acceptChange: true, fresh: true });
        await client.acknowledgeChange(user.id);
        banner.remove();
      },
    }, wasVerified ? "Accept the new key" : "OK"),
  );
  byId("banners").append(banner);
}

// --- Sending -----------------------------------------------------------------------------------

async function sendPayload(payload) {
  try {
    const stored = await client.send(conversation, payload, { expiresIn: conversation.disappearing_seconds || null });
    return addMessage(client.sentCopy(stored, payload));
  } catch (error) {
    if (error instanceof IdentityKeyChanged) {
      const user = conversation.members.find((m) => m.user.id === error.userId)?.user;
      if (user) showKeyChanged(user, true);
      throw new UserError(`${error.message} Check it, accept the new key, then send again.`);
    }
    throw error;
  }
}

async function submitCompose(event) {
  event?.preventDefault();
  composeError.textContent = "";
  const body = text.value.trim();
  const files = [...byId("attach").files];
  if (!body && !files.length) return;
  text.disabled = true;
  sendButton.disabled = true;
  try {
    if (editing) {
      // Our own copy goes through addMessage, which applies the edit.
      await sendPayload({ type: "edit", target: editing.message.id, body, sent_at: Math.floor(Date.now() / 1000) });
      cancelEdit();
    } else {
      const attachments = [];
      for (const file of files) attachments.push(await client.uploadAttachment(conversationId, file));
      const entry = await sendPayload({ type: "text", body, sent_at: Math.floor(Date.now() / 1000), reply_to: replyTo?.message.id || null, attachments });
      refreshQuotes();
      entry?.node.scrollIntoView({ block: "end" });
      cancelReply();
      byId("attach").value = "";
      byId("attach-list").textContent = "";
    }
    text.value = "";
  } catch (error) {
    composeError.textContent = errorText(error);
  } finally {
    text.disabled = false;
    sendButton.disabled = false;
    text.focus();
  }
}

function cancelReply() {
  replyTo = null;
  byId("reply-preview").hidden = true;
}

function cancelEdit() {
  editing = null;
  byId("edit-preview").hidden = true;
  text.value = "";
}

function showReactionPicker(entry, button) {
  const existing = entry.node.querySelector(".reaction-picker");
  if (existing) {
    existing.remove();
    button.setAttribute("aria-expanded", "false");
    return;
  }
  const mineNow = entry.reactions.get(client.userId);
  const picker = el("div", { class: "reaction-picker", role: "group", "aria-label": "Reactions" },
    ...REACTIONS.map((emoji) => el("button", {
      type: "button", class: "button", "aria-pressed": String(mineNow === emoji),
      onclick: async () => {
        picker.remove();
        button.setAttribute("aria-expanded", "false");
        const chosen = mineNow === emoji ? "" : emoji;
        try {
          // Our own copy goes through addMessage, which applies the reaction.
          await sendPayload({ type: "reaction", target: entry.message.id, emoji: chosen, sent_at: Math.floor(Date.now() / 1000) });
        } catch (error) {
          composeError.textContent = errorText(error);
        }
        button.focus();
      },
    }, emoji)),
  );
  button.after(picker);
  button.setAttribute("aria-expanded", "true");
  picker.querySelector("button").focus();
}

async function onAction(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const entry = entries.get(button.closest(".msg").dataset.id);
  if (!entry) return;
  const action = button.dataset.action;
  if (action === "reply") {
    replyTo = entry;
    byId("reply-text").textContent = `Replying to ${handleOf(entry.message.sender_id)}: ${snippet(entry)}`;
    byId("reply-preview").hidden = false;
    text.focus();
  } else if (action === "edit") {
    editing = entry;
    text.value = entry.body;
    byId("edit-preview").hidden = false;
    text.focus();
  } else if (action === "react") {
    showReactionPicker(entry, button);
  } else if (action === "delete") {
    if (!confirm("Delete this message for everyone?")) return;
    try {
      await api("DELETE", `/conversations/${conversationId}/messages/${entry.message.id}`);
      entry.deleted = true;
      renderBody(entry);
    } catch (error) {
      composeError.textContent = errorText(error);
    }
  } else if (action === "report") {
    openReport(entry);
  }
}

function openReport(entry) {
  const dialog = byId("report-dialog");
  dialog.returnValue = "";
  dialog.showModal();
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "send") return;
    try {
      await client.report(entry.received, byId("report-reason").value, byId("report-comment").value);
      statusLine.textContent = "Reported. Thank you: our moderators will look at it.";
    } catch (error) {
      statusLine.textContent = errorText(error);
    }
  }, { once: true });
}

// --- Live events -------------------------------------------------------------------------------

function onEvent(frame) {
  if (frame.conversation_id && frame.conversation_id !== conversationId) return;
  if (frame.type === "message.deleted") {
    const entry = entries.get(frame.id);
    if (entry && !entry.effect) {
      entry.deleted = true;
      renderBody(entry);
    }
  } else if (frame.type === "receipt.delivered" || frame.type === "receipt.read") {
    if (frame.user_id === client.userId) return;
    const current = receipts.get(frame.user_id) || { delivered_seq: 0, read_seq: null };
    if (frame.type === "receipt.delivered") current.delivered_seq = Math.max(current.delivered_seq, frame.seq);
    else current.read_seq = Math.max(current.read_seq ?? 0, frame.seq);
    receipts.set(frame.user_id, current);
    for (const entry of entries.values()) if (entry.node && entry.mine) renderStatus(entry);
  } else if (frame.type === "typing" && frame.user_id !== client.userId) {
    showTyping(frame.user_id);
  } else if (frame.type === "conversation.updated") {
    loadConversation().then(checkSafetyNumbers).catch(() => {});
  }
}

function showTyping(userId) {
  clearTimeout(typingTimers.get(userId));
  typingTimers.set(userId, setTimeout(() => {
    typingTimers.delete(userId);
    renderTyping();
  }, TYPING_SHOW_MS));
  renderTyping();
}

function renderTyping() {
  const who = [...typingTimers.keys()].map(handleOf);
  byId("typing").textContent = who.length ? `${who.join(", ")} ${who.length > 1 ? "are" : "is"} typing…` : "";
}

async function onMessage(received, { live }) {
  const entry = addMessage(received);
  if (entry && !entry.mine) {
    typingTimers.delete(entry.message.sender_id);
    renderTyping();
  }
  refreshQuotes();
  if (entry && live) entry.node.scrollIntoView({ block: "end" });
  await markRead();
}

// --- Start -------------------------------------------------------------------------------------

async function start() {
  client = await Parley.load();
  if (!client) return;
  await loadConversation();
  byId("load-older").hidden = !addPage(await client.history(conversationId, { limit: PAGE }));
  await loadCalls();
  log.setAttribute("aria-busy", "false");
  log.lastElementChild?.scrollIntoView({ block: "end" });
  await loadReceipts();
  await checkSafetyNumbers();
  socket = goLive(client, { statusLine, onMessage, onEvent });
  await markRead();
  root.dataset.ready = "1";
}

byId("compose").addEventListener("submit", submitCompose);
text.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) submitCompose(event);
  if (event.key === "Escape") {
    cancelReply();
    if (editing) cancelEdit();
  }
});
text.addEventListener("input", () => {
  if (Date.now() - lastTypingSent > TYPING_SEND_MS && text.value) {
    lastTypingSent = Date.now();
    socket?.send({ type: "typing", conversation_id: conversationId });
  }
});
byId("attach").addEventListener("change", (event) => {
  byId("attach-list").textContent = [...event.currentTarget.files].map((f) => f.name).join(", ");
});
byId("reply-cancel").addEventListener("click", cancelReply);
byId("edit-cancel").addEventListener("click", cancelEdit);
byId("load-older").addEventListener("click", loadOlder);
log.addEventListener("click", onAction);
document.addEventListener("visibilitychange", markRead);
// A call ended (this page's or one seen on the socket): show it among the messages.
document.addEventListener("parley:call-ended", () => {
  clearTimeout(callsTimer);
  callsTimer = setTimeout(() => loadCalls({ live: true }), 300);
});
byId("timer").addEventListener("change", async (event) => {
  const value = event.currentTarget.value;
  try {
    conversation = { ...conversation, ...(await api("PATCH", `/conversations/${conversationId}`, { body: { disappearing_seconds: value ? Number(value) : null } })) };
    statusLine.textContent = value ? "New messages will disappear after the time chosen." : "Disappearing messages are off.";
  } catch (error) {
    statusLine.textContent = errorText(error);
  }
});
byId("mute").addEventListener("change", async (event) => {
  const value = event.currentTarget.value;
  try {
    const answer = value === "off"
      ? await api("DELETE", `/conversations/${conversationId}/mute`)
      : await api("POST", `/conversations/${conversationId}/mute`, { body: { seconds: value === "forever" ? null : Number(value) } });
    conversation = { ...conversation, muted_until: answer.muted_until };
    statusLine.textContent = answer.muted_until ? "Notifications from this conversation are muted." : "Notifications from this conversation are on.";
  } catch (error) {
    statusLine.textContent = errorText(error);
  }
  renderMute();
});
for (const button of document.querySelectorAll("[data-request]")) {
  button.addEventListener("click", async () => {
    const action = button.dataset.request;
    if (action === "block" && !confirm("Block whoever added you here? They will not be able to message or call you.")) return;
    try {
      await api("POST", `/conversations/${conversationId}/${action}`);
      if (action === "accept") {
        await loadConversation();
        await markRead();
      }
      else location.assign("/");
    } catch (error) {
      statusLine.textContent = errorText(error);
    }
  });
}

start().catch((error) => {
  statusLine.textContent = error instanceof ApiError && error.status === 404 ? "This conversation does not exist, or you left it." : errorText(error);
});
