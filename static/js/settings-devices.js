// Settings → Devices: mark this browser, and answer link requests from a new device
// (compare the short code, then certify it and hand it the keys).

import { api } from "./api.js";
import { Parley } from "./parley.js";
import { answerLink } from "./link.js";
import { LiveSocket } from "./socket.js";
import { byId, errorText } from "./ui.js";

const status = byId("link-approve-status");
const POLL_MS = 10_000; // the socket's device.link_requested usually comes first
let busy = false;
let client;

function waitForAnswer() {
  return new Promise((resolve) => {
    const yes = byId("link-approve-yes");
    const no = byId("link-approve-no");
    const done = (answer) => {
      yes.onclick = no.onclick = null;
      resolve(answer);
    };
    yes.onclick = () => done(true);
    no.onclick = () => done(false);
    yes.focus();
  });
}

async function checkLinks() {
  if (busy || !client) return;
  busy = true;
  try {
    const found = await api("GET", "/devices/links", { query: { device: client.deviceId } });
    const pending = found.results.find((l) => l.state === "pending");
    if (!pending) return;
    status.textContent = "A new device asks to be linked. Waiting for its code…";
    const linked = await answerLink(client, pending, {
      onCode: (code) => {
        byId("link-approve-code").textContent = code;
        byId("link-approve-panel").hidden = false;
        status.textContent = "Compare the codes.";
      },
      confirm: waitForAnswer,
    });
    byId("link-approve-panel").hidden = true;
    status.textContent = linked ? "The new device is linked. It can now read your messages." : "Not linked.";
    if (linked) setTimeout(() => location.reload(), 1500);
  } catch (error) {
    byId("link-approve-panel").hidden = true;
    status.textContent = errorText(error);
  } finally {
    busy = false;
  }
}

async function start() {
  client = await Parley.load({ redirect: false });
  if (!client) {
    status.textContent = "Set up encryption in this browser to link other devices from it.";
    return;
  }
  const row = document.querySelector(`[data-device-id="${client.deviceId}"]`);
  if (row) {
    row.querySelector(".this-device").hidden = false;
    row.classList.add("device-this");
  }
  new LiveSocket(client.deviceId, {
    onEvent: (frame) => {
      if (frame.type === "device.link_requested") checkLinks();
    },
  });
  await checkLinks();
  setInterval(checkLinks, POLL_MS);
  document.body.dataset.ready = "1";
}

start().catch((error) => (status.textContent = errorText(error)));
