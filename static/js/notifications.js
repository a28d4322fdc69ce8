// Notifications in the page (docs/notifications.md), from site.js on every signed-in
// page: the nav badge, kept live by the socket's `notifications.unread` events (and
// re-read after every (re)connect: the socket is a doorbell); on /notifications,
// marking one read as it is opened, and new ones on top (the first page is re-read
// after every (re)connect too); on /settings/notifications, push on this browser.
// The service worker that shows the pushes is push-sw.js, served at /sw.js so that
// its scope is the whole site.

import { api } from "./api.js";
import { loadAccount } from "./keystore.js";
import { pageUser } from "./parley.js";
import { LiveSocket } from "./socket.js";
import { byId, el, errorText, formatTime } from "./ui.js";

const FALLBACK_PATH = "/notifications";
const PAGE_SIZE = 50; // notifications.views.PAGE_SIZE

let booting = null;

/** Only a path of this site: anything else (another origin, `//host`) is refused. */
function sitePath(url) {
  if (typeof url !== "string" || !url.startsWith("/") || url.startsWith("//") || url.startsWith("/\\")) return FALLBACK_PATH;
  try {
    const parsed = new URL(url, location.origin);
    return parsed.origin === location.origin ? parsed.pathname + parsed.search + parsed.hash : FALLBACK_PATH;
  } catch {
    return FALLBACK_PATH;
  }
}

/** This browser's device, when it has keys (the socket and push subscriptions name it). */
async function browserDeviceId() {
  const me = pageUser();
  if (!me) return null;
  try {
    return (await loadAccount(me.userId))?.device?.deviceId || null;
  } catch {
    return null; // no IndexedDB: no keys here either
  }
}

// --- The badge ---------------------------------------------------------------------------------

/** Show `count` unread in the nav (and keep the list page's "Mark all as read" in step). */
export function showUnread(count) {
  const n = Math.max(0, Math.floor(Number(count) || 0));
  for (const badge of document.querySelectorAll("[data-unread-badge]")) {
    badge.textContent = n > 99 ? "99+" : String(n);
    badge.hidden = n === 0;
  }
  for (const link of document.querySelectorAll("[data-unread-link]")) {
    link.setAttribute("aria-label", n ? `Notifications, ${n} unread` : "Notifications");
  }
  const readAll = byId("read-all");
  if (readAll) readAll.hidden = n === 0;
  // Nothing unread any more (read in another tab, or by reading the conversations).
  if (n === 0) for (const item of document.querySelectorAll(".notification-unread")) markItemRead(item);
}

async function refreshUnread() {
  try {
    showUnread((await api("GET", "/notifications/unread-count")).unread);
  } catch {
    // Offline: the next (re)connect or visit tries again.
  }
}

function onEvent(frame) {
  if (frame.type === "notifications.unread") showUnread(frame.count);
  else if (frame.type === "notification" && frame.notification) showLive(frame.notification);
}

// --- The list page -----------------------------------------------------------------------------

function markItemRead(item) {
  item.classList.remove("notification-unread");
  item.querySelector(".notification-title .visually-hidden")?.remove();
}

function timeNode(iso) {
  const ms = Date.parse(iso);
  return el("time", { class: "notification-time", datetime: iso }, Number.isNaN(ms) ? "" : formatTime(ms));
}

/** The markup of templates/notifications/_item.html, for one that arrived live. */
function itemNode(notification) {
  const unread = !notification.read;
  return el(
    "li",
    { class: unread ? "notification notification-unread" : "notification", dataset: { notificationId: notification.id } },
    el(
      "a",
      { class: "notification-link", href: sitePath(notification.url) },
      el("span", { class: "notification-title" }, unread ? el("span", { class: "visually-hidden" }, "Unread: ") : null, String(notification.title || "")),
      el("span", { class: "notification-body" }, String(notification.body || "")),
      timeNode(String(notification.updated_at || "")),
    ),
  );
}

// Live events shown so far: a list read that was in flight across one of them is older
// than what the page shows, and must not replace it.
let liveShown = 0;

/** A notification made or updated (one more message): on top of the first page. */
function showLive(notification) {
  const list = byId("notification-list");
  if (!list?.hasAttribute("data-live") || typeof notification.id !== "string") return;
  liveShown += 1;
  for (const item of list.querySelectorAll("[data-notification-id]")) {
    if (item.dataset.notificationId === notification.id) item.remove();
  }
  list.prepend(itemNode(notification));
  byId("notifications-empty").hidden = true;
}

/** After a (re)connect, the first page as the server has it: events missed meanwhile. */
async function refreshList() {
  const list = byId("notification-list");
  if (!list?.hasAttribute("data-live")) return;
  try {
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const shownBefore = liveShown;
      const { results } = await api("GET", "/notifications", { query: { limit: PAGE_SIZE } });
      if (liveShown !== shownBefore) continue; // an event came meanwhile: read again
      list.replaceChildren(...results.map(itemNode));
      byId("notifications-empty").hidden = results.length > 0;
      return;
    }
  } catch {
    // Offline again: the next connect tries again.
  }
}

function onConnected(hello) {
  // The hello carries the count: no request on every (re)connect.
  if (typeof hello?.notifications_unread === "number") showUnread(hello.notifications_unread);
  else refreshUnread();
  refreshList();
}

function openItem(event) {
  const link = event.target instanceof Element ? event.target.closest("a.notification-link") : null;
  const item = link?.closest(".notification-unread");
  if (!item) return; // read already: an ordinary link
  markItemRead(item);
  const marking = api("POST", "/notifications/read", { body: { ids: [item.dataset.notificationId] } })
    .then((answer) => showUnread(answer.unread))
    .catch(() => {}); // the conversation, once read, reads its notification anyway
  const newTab = event.type === "auxclick" || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey;
  if (newTab) return;
  // Marked before leaving, so the badge on the next page is right.
  event.preventDefault();
  marking.finally(() => location.assign(link.href));
}

function setUpList() {
  const list = byId("notification-list");
  if (!list) return;
  // The server wrote its own time zone's times: show the reader's.
  for (const time of list.querySelectorAll("time.notification-time")) {
    const ms = Date.parse(time.getAttribute("datetime"));
    if (!Number.isNaN(ms)) time.textContent = formatTime(ms);
  }
  list.addEventListener("click", openItem);
  list.addEventListener("auxclick", (event) => event.button === 1 && openItem(event));
}

// --- Push on this browser ----------------------------------------------------------------------

const PUSH_TEXT = {
  checking: "Checking this browser…",
  unsupported: "This browser cannot receive push notifications (it may need a newer version, or a secure connection).",
  denied: "Notifications are blocked for Parley in this browser's settings. Allow them there, then come back here.",
  on: "Push notifications are on for this browser.",
  off: "Push notifications are off for this browser.",
  working: "One moment…",
};

function pushSupported() {
  return window.isSecureContext && "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

function b64uBytes(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
  return Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
}

function sameBytes(a, b) {
  if (!a || !b) return false;
  const x = new Uint8Array(a);
  const y = new Uint8Array(b);
  return x.length === y.length && x.every((value, i) => value === y[i]);
}

async function currentSubscription() {
  if (!pushSupported()) return null;
  const registration = await navigator.serviceWorker.getRegistration("/");
  return registration ? registration.pushManager.getSubscription() : null;
}

async function saveSubscription(subscription) {
  const { endpoint, keys } = subscription.toJSON();
  const body = { endpoint, keys: { p256dh: keys?.p256dh, auth: keys?.auth } };
  const deviceId = await browserDeviceId();
  if (deviceId) body.device_id = deviceId; // unlinking this browser then stops its pushes
  await api("POST", "/notifications/push-subscriptions", { body });
}

async function pushState(vapidKey) {
  if (!pushSupported()) return "unsupported";
  if (Notification.permission === "denied") return "denied";
  const subscription = await currentSubscription();
  // A subscription made under another server key cannot be pushed to any more.
  const usable = subscription && Notification.permission === "granted" && sameBytes(subscription.options.applicationServerKey, b64uBytes(vapidKey));
  return usable ? "on" : "off";
}

async function turnPushOn(vapidKey) {
  // Asked first, while the click still counts as the user's gesture.
  const permission = await Notification.requestPermission();
  if (permission !== "granted") return permission === "denied" ? "denied" : "off";
  await navigator.serviceWorker.register("/sw.js", { scope: "/" });
  const registration = await navigator.serviceWorker.ready; // subscribing needs an active worker
  const serverKey = b64uBytes(vapidKey);
  let subscription = await registration.pushManager.getSubscription();
  if (subscription && !sameBytes(subscription.options.applicationServerKey, serverKey)) {
    await subscription.unsubscribe();
    subscription = null;
  }
  subscription ||= await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: serverKey });
  try {
    await saveSubscription(subscription);
  } catch (error) {
    await subscription.unsubscribe().catch(() => {}); // not kept where the server cannot use it
    throw error;
  }
  return "on";
}

/**
 * Stop pushes to this browser: unsubscribe here (the push service then refuses the
 * server's pushes) and tell the server. Also used at sign-out (site.js).
 */
export async function turnPushOff() {
  const subscription = await currentSubscription();
  if (!subscription) return "off";
  const { endpoint } = subscription;
  await subscription.unsubscribe();
  await api("DELETE", "/notifications/push-subscriptions", { body: { endpoint } });
  return "off";
}

function pushErrorText(error) {
  if (error instanceof DOMException) {
    if (error.name === "NotAllowedError") return PUSH_TEXT.denied;
    return "This browser could not reach its push service. Try again later.";
  }
  return errorText(error);
}

function setUpPush() {
  const section = byId("push-settings");
  if (!section) return;
  const vapidKey = section.dataset.vapidKey;
  const line = byId("push-state");
  const onButton = byId("push-on");
  const offButton = byId("push-off");

  function render(state, text = PUSH_TEXT[state]) {
    section.dataset.state = state;
    line.textContent = text;
    const working = state === "working" || state === "checking";
    onButton.disabled = offButton.disabled = working;
    if (working) return; // the buttons stay where they are, so focus does too
    const hadFocus = document.activeElement === onButton || document.activeElement === offButton;
    onButton.hidden = !["off", "error"].includes(state);
    offButton.hidden = state !== "on";
    // The button just used may be gone: focus goes to the one that replaced it.
    if (hadFocus) [onButton, offButton].find((button) => !button.hidden)?.focus();
  }

  async function run(action, busy = "working") {
    render(busy);
    try {
      render(await action());
    } catch (error) {
      render("error", pushErrorText(error));
    }
  }

  onButton.addEventListener("click", () => run(() => turnPushOn(vapidKey)));
  offButton.addEventListener("click", () => run(turnPushOff));
  run(async () => {
    const state = await pushState(vapidKey);
    // The server may have dropped it (failing for days) or given it to another account.
    if (state === "on") await saveSubscription(await currentSubscription()).catch(() => {});
    return state;
  }, "checking");
}

// --- Start -------------------------------------------------------------------------------------

/** On every signed-in page (site.js). Shares the page's one socket (socket.js). */
export function bootNotifications() {
  booting ||= (async () => {
    setUpList();
    setUpPush();
    const deviceId = await browserDeviceId();
    if (deviceId) {
      new LiveSocket(deviceId, { onConnected, onEvent }); // eslint-disable-line no-new
    } else {
      // No keys here, so no socket: re-read the count when the tab is looked at again.
      document.addEventListener("visibilitychange", () => document.visibilityState === "visible" && refreshUnread());
    }
  })().catch(() => {});
  return booting;
}
