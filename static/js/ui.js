// Small DOM helpers shared by the pages. Text always goes in through textContent:
// decrypted content is never parsed as HTML.

import { ApiError } from "./api.js";
import { ParleyCryptoError } from "./crypto.js";

/** `el("li", {class: "x", dataset: {id}}, child, "text")` */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function byId(id) {
  return document.getElementById(id);
}

/** An error whose message is written for the user (shown as it is by errorText). */
export class UserError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/**
 * A message for the user from an error: the server's own words (ApiError), or ours
 * (UserError, a crypto error such as a wrong recovery key). A programming error
 * (TypeError and the like) gets a generic text: its message means nothing to a user.
 */
export function errorText(error) {
  if (error instanceof ApiError || error instanceof UserError || error instanceof ParleyCryptoError) return error.message;
  return "Something went wrong. Please try again.";
}

/** What a conversation is called: its name, else the other members' names. */
export function conversationTitle(conversation, myUserId) {
  if (conversation.name) return conversation.name;
  const others = conversation.members.filter((m) => m.user.id !== myUserId);
  return others.map((m) => m.user.display_name || `@${m.user.handle}`).join(", ") || "Only you";
}

export function formatTime(ms) {
  const date = new Date(ms);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** The `next` page after a setup step, only ever a path of this site. */
export function nextPath(fallback = "/") {
  const next = new URLSearchParams(location.search).get("next");
  return next && next.startsWith("/") && !next.startsWith("//") ? next : fallback;
}
