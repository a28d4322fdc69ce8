// Home: the conversations, newest activity first, with unread counts, kept live;
// the Requests tab holds conversations from people the user does not follow.

import { api } from "./api.js";
import { Parley } from "./parley.js";
import { goLive } from "./live.js";
import { byId, conversationTitle, el, errorText, formatTime } from "./ui.js";

const list = byId("conversation-list");
const more = byId("inbox-more");
const statusLine = byId("connection");
// The API's page: the list shows this many more at each "Show more".
const PAGE = 50;
const API_PAGE_MAX = 100;
let client;
let showing = "chats";
let wanted = PAGE;
let reloadTimer = null;
// Renders may overlap (a live reload, a tab switch, "Show more"): only the latest shows.
let renderNumber = 0;

function row(conversation) {
  const unread = conversation.unread_count;
  const last = conversation.last_message;
  const others = conversation.members.filter((m) => m.user.id !== client.userId).map((m) => `@${m.user.handle}`).join(", ");
  const title = conversationTitle(conversation, client.userId);
  const label = `${title}${unread ? `, ${unread} unread` : ""}`;
  return el("li", { class: `conversation-row${unread ? " unread" : ""}`, dataset: { id: conversation.id } },
    el("a", { href: `/c/${conversation.id}`, "aria-label": label },
      el("span", { class: "conversation-title" }, title),
      el("span", { class: "muted conversation-members" }, conversation.kind === "group" ? `Group · ${others}` : others),
      el("span", { class: "muted conversation-time" }, last ? formatTime(last.server_ts) : "No messages yet"),
      unread ? el("span", { class: "count unread-count", "aria-hidden": "true" }, String(unread)) : null,
    ),
  );
}

// The first `limit` conversations of a tab, read a page at a time. A conversation
// that moves up between two pages would come twice: it is shown once.
async function firstConversations(tab, limit) {
  const query = tab === "requests" ? { requests: 1 } : {};
  const results = [];
  const seen = new Set();
  for (let offset = 0; ; ) {
    const page = await api("GET", "/conversations", { query: { ...query, offset, limit: Math.min(API_PAGE_MAX, limit - offset) } });
    for (const conversation of page.results) {
      if (!seen.has(conversation.id)) results.push(conversation);
      seen.add(conversation.id);
    }
    offset += page.results.length;
    if (!page.next || !page.results.length || offset >= limit) return { count: page.count, results };
  }
}

async function render() {
  const mine = ++renderNumber;
  const tab = showing;
  list.setAttribute("aria-busy", "true");
  try {
    const [shown, requests] = await Promise.all([
      firstConversations(tab, wanted),
      tab === "requests" ? null : api("GET", "/conversations", { query: { requests: 1, limit: 1 } }),
    ]);
    if (mine !== renderNumber) return;
    const requestsCount = (requests || shown).count;
    list.replaceChildren(...shown.results.map(row));
    more.hidden = shown.results.length >= shown.count;
    byId("requests-count").textContent = requestsCount ? `(${requestsCount})` : "";
    byId("inbox-empty").hidden = shown.results.length > 0;
    byId("inbox-empty").firstChild.textContent = tab === "chats" ? "No conversations yet. " : "No message requests. ";
  } catch (error) {
    if (mine === renderNumber) statusLine.textContent = errorText(error);
  } finally {
    if (mine === renderNumber) list.setAttribute("aria-busy", "false");
  }
}

function reloadSoon() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(render, 150);
}

function selectTab(which) {
  showing = which;
  wanted = PAGE;
  for (const [name, tab] of [["chats", byId("tab-chats")], ["requests", byId("tab-requests")]]) {
    tab.setAttribute("aria-selected", String(name === which));
    tab.tabIndex = name === which ? 0 : -1;
  }
  list.setAttribute("aria-labelledby", which === "chats" ? "tab-chats" : "tab-requests");
  render();
}

more.addEventListener("click", () => {
  wanted += PAGE;
  render();
});
byId("tab-chats").addEventListener("click", () => selectTab("chats"));
byId("tab-requests").addEventListener("click", () => selectTab("requests"));
for (const tab of [byId("tab-chats"), byId("tab-requests")]) {
  tab.addEventListener("keydown", (event) => {
    if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
      const next = showing === "chats" ? "requests" : "chats";
      selectTab(next);
      byId(`tab-${next}`).focus();
    }
  });
}

async function start() {
  client = await Parley.load();
  if (!client) return;
  selectTab("chats");
  goLive(client, {
    statusLine,
    onMessage: reloadSoon,
    onEvent: (frame) => {
      if (["conversation.updated", "message.deleted", "receipt.read"].includes(frame.type)) reloadSoon();
    },
  });
  document.body.dataset.ready = "1";
}

start().catch((error) => (statusLine.textContent = errorText(error)));
