// A moderator's warning, on every signed-in page (loaded by base.html). The server
// renders the banner of every unacknowledged warning (templates/moderation/_warnings.html);
// this adds one live when the socket's `account.warning` arrives, and those that the
// socket's hello lists (after a reconnect the page may have missed one: docs/realtime.md). "I understand" is the
// same form as the server's: a POST to /warnings/<id>/acknowledge (moderation/urls.py).

import { loadAccount } from "./keystore.js";
import { pageUser } from "./parley.js";
import { LiveSocket } from "./socket.js";
import { el } from "./ui.js";

const container = document.querySelector("[data-warnings]");

function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]')?.content || "";
}

/** Add the banner of `warning` (moderation.selectors.warning_fields) unless it is there or acknowledged. */
function showWarning(warning) {
  if (!container || !warning || warning.acknowledged_at) return;
  const id = Number(warning.id);
  if (!Number.isSafeInteger(id) || id <= 0) return;
  if (container.querySelector(`[data-warning-id="${id}"]`)) return;
  const banner = el(
    "div",
    { class: "banner warning-banner", dataset: { warningId: String(id) } },
    el("p", { text: `A moderator warned your account: ${warning.text ?? ""}` }),
    el(
      "form",
      { method: "post", action: `/warnings/${id}/acknowledge` },
      el("input", { type: "hidden", name: "csrfmiddlewaretoken", value: csrfToken() }),
      el("input", { type: "hidden", name: "next", value: location.pathname + location.search }),
      el("button", { type: "submit", class: "button", text: "I understand" }),
    ),
  );
  container.prepend(banner); // newest first, as the server renders them
}

function onConnected(hello) {
  // The hello carries the warnings not yet acknowledged: one given while this page was
  // away (a lost connection) shows now, with no request of its own.
  for (const warning of [...(hello?.account_warnings || [])].reverse()) showWarning(warning);
}

function onEvent(frame) {
  if (frame.type === "account.warning") showWarning(frame.warning);
}

async function boot() {
  const me = pageUser();
  if (!container || !me) return;
  let deviceId = null;
  try {
    deviceId = (await loadAccount(me.userId))?.device?.deviceId || null;
  } catch {
    return; // no IndexedDB: no keys, so no socket either
  }
  // No keys here, so no socket: the banner comes with the next page.
  if (deviceId) new LiveSocket(deviceId, { onConnected, onEvent }); // eslint-disable-line no-new
}

boot().catch(() => {});
