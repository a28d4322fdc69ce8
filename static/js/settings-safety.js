// Settings → Safety numbers: every contact's number, as digits and a QR code, and
// "mark as verified". Verification lives in this browser's key store.

import qrcode from "../vendor/qrcode.mjs";
import { api } from "./api.js";
import { IdentityKeyChanged, Parley } from "./parley.js";
import { byId, el, errorText } from "./ui.js";

const list = byId("safety-list");
const status = byId("safety-status");

function qrImage(digits, label) {
  const qr = qrcode(0, "M");
  qr.addData(digits.replace(/\s/g, ""));
  qr.make();
  return el("img", { src: qr.createDataURL(4, 2), alt: label, class: "qr", width: 164, height: 164 });
}

async function contacts(client) {
  const seen = new Map();
  for (const query of [{}, { requests: 1 }]) {
    const page = await api("GET", "/conversations", { query: { ...query, limit: 100 } });
    for (const conversation of page.results) {
      for (const member of conversation.members) if (member.user.id !== client.userId) seen.set(member.user.id, member.user);
    }
  }
  return [...seen.values()].sort((a, b) => a.handle.localeCompare(b.handle));
}

async function entry(client, user) {
  const item = el("li", { class: "safety-entry", dataset: { userId: user.id } }, el("h3", {}, `@${user.handle}`));
  let digits;
  try {
    digits = await client.safetyNumber(user.id);
  } catch (error) {
    if (error instanceof IdentityKeyChanged) {
      item.append(el("p", { class: "banner", role: "alert" }, `@${user.handle}'s safety number changed since you verified it.`),
        el("button", { type: "button", class: "button", onclick: async () => {
          await client.directory(user.id, { acceptChange: true, fresh: true });
          item.replaceWith(await entry(client, user));
        } }, "Show the new number"));
    } else {
      item.append(el("p", { class: "muted" }, errorText(error)));
    }
    return item;
  }
  const pin = client.pin(user.id);
  const badge = el("p", { class: "verified-state" }, pin?.verified ? "✓ Verified" : "Not verified");
  const toggle = el("button", {
    type: "button", class: "button",
    onclick: async () => {
      await client.markVerified(user.id, !client.pin(user.id)?.verified);
      item.replaceWith(await entry(client, user));
    },
  }, pin?.verified ? "Clear verification" : "Mark as verified");
  item.append(
    el("p", { class: "safety-number", "aria-label": `Safety number with @${user.handle}: ${digits}` }, digits),
    qrImage(digits, `QR code of your safety number with @${user.handle}`),
    badge,
    toggle,
  );
  if (pin?.changed) item.prepend(el("p", { class: "banner", role: "alert" }, "This safety number changed recently."));
  return item;
}

async function start() {
  const client = await Parley.load();
  if (!client) return;
  const users = await contacts(client);
  status.textContent = users.length ? "" : "No contacts yet: safety numbers appear here once you talk to someone.";
  for (const user of users) list.append(await entry(client, user));
  document.body.dataset.ready = "1";
}

start().catch((error) => (status.textContent = errorText(error)));
