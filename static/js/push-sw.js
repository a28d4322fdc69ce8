// Parley's service worker: it only shows pushes (docs/notifications.md). Served at
// /sw.js (notifications.views.service_worker) so that its scope is the whole site.
// It has no fetch handler: pages load from the network as if it were not there.
//
// A push says who and where, never what was written: the server cannot read messages.
// Its payload is {"title", "body", "url", "tag", "count"}; `url` is a path of this site.

const FALLBACK_PATH = "/notifications";
const GENERIC = { title: "Parley: something new", body: "Open Parley to see it.", url: FALLBACK_PATH, tag: "parley" };

/** Only a path of this site may be opened; anything else opens the notifications page. */
function sitePath(url) {
  if (typeof url !== "string" || !url.startsWith("/") || url.startsWith("//") || url.startsWith("/\\")) return FALLBACK_PATH;
  try {
    const parsed = new URL(url, self.location.origin);
    return parsed.origin === self.location.origin ? parsed.pathname + parsed.search + parsed.hash : FALLBACK_PATH;
  } catch {
    return FALLBACK_PATH;
  }
}

function text(value, max) {
  return typeof value === "string" ? value.slice(0, max) : "";
}

/** The payload, checked; null when it is not one of ours. */
function parse(data) {
  if (!data) return null;
  let payload;
  try {
    payload = data.json();
  } catch {
    return null;
  }
  if (!payload || typeof payload !== "object" || !text(payload.title, 200)) return null;
  return {
    title: text(payload.title, 200),
    body: text(payload.body, 500),
    url: sitePath(payload.url),
    tag: text(payload.tag, 100),
  };
}

self.addEventListener("install", () => self.skipWaiting());

// Take the open tabs at once, so a click can navigate one of them.
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  // Subscriptions are userVisibleOnly: every push must show something, even one we
  // cannot read.
  const payload = parse(event.data) || GENERIC;
  const options = { body: payload.body, data: { url: payload.url } };
  if (payload.tag) {
    // One notification per conversation: a newer count replaces it, and alerts again.
    options.tag = payload.tag;
    options.renotify = true;
  }
  event.waitUntil(self.registration.showNotification(payload.title, options));
});

async function openPage(path) {
  const url = new URL(path, self.location.origin).href;
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const there = windows.find((client) => client.url === url);
  if (there) return there.focus();
  // Only a tab this worker controls can be navigated.
  const controlled = await self.clients.matchAll({ type: "window" });
  const tab = controlled.find((client) => client.focused) || controlled[0];
  if (tab) {
    try {
      await tab.focus();
      await tab.navigate(url);
      return undefined;
    } catch {
      // Not navigable after all: open a new one.
    }
  }
  return self.clients.openWindow(url);
}

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(openPage(sitePath(event.notification.data?.url)));
});
