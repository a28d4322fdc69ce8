// Linking a new browser from a device the user already has (docs/keys-and-devices.md,
// "Linking a device"). The new device commits to its keys before it learns the other
// device's nonce, so a server that swaps keys cannot pick them to match the short code.

import * as c from "./crypto.js";
import { api } from "./api.js";
import { saveAccount } from "./keystore.js";
import { assertAccountAik, devicePublic, KeysMismatch, newRecord, withDevice } from "./parley.js";
import { UserError } from "./ui.js";

// Both sides share the keys_write allowance (30 a minute): poll gently, back off on 429.
const POLL_MS = 3000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// An expired request answers 410 (below), it has no state of its own.
function ended(link) {
  const words = { denied: "The other device said the codes did not match. Nothing was linked.", cancelled: "The link was cancelled." };
  return words[link.state] ? new UserError(words[link.state]) : null;
}

async function waitFor(linkId, wanted, isCancelled, query = {}) {
  for (;;) {
    if (isCancelled()) throw new UserError("Cancelled.");
    let link;
    try {
      link = await api("GET", `/devices/links/${linkId}`, { query });
    } catch (error) {
      if (error.status === 429) {
        await sleep(POLL_MS * 2);
        continue;
      }
      if (error.status === 410) throw new UserError("The link request expired. Start again.");
      throw error;
    }
    const failure = ended(link);
    if (failure) throw failure;
    if (wanted(link)) return link;
    await sleep(POLL_MS);
  }
}

/** The new browser's side: request, reveal, show the code, receive the keys. */
export async function startLink(me, { onCode, onStatus, cancelButton }) {
  await c.ready();
  const device = c.generateDeviceKeys();
  const newNonce = c.randomBytes(32);
  const commitment = c.linkCommitment(newNonce, me.userId, device.deviceId, device.signPublic, device.boxPublic, device.createdAt);
  const link = await api("POST", "/devices/links", { body: { commitment: c.b64uEncode(commitment) } });
  let cancelled = false;
  const cancel = async () => {
    cancelled = true;
    await api("DELETE", `/devices/links/${link.id}`).catch(() => {});
  };
  cancelButton?.addEventListener("click", cancel, { once: true });
  try {
    onStatus("Waiting for your other device. Open Settings → Devices on it.");
    const challenged = await waitFor(link.id, (l) => Boolean(l.existing_nonce), () => cancelled);
    await api("POST", `/devices/links/${link.id}/reveal`, { body: { ...devicePublic(device), nonce: c.b64uEncode(newNonce) } });
    const existingNonce = c.b64uDecode(challenged.existing_nonce);
    onCode(c.linkShortCode(existingNonce, newNonce, me.userId, device.deviceId, device.signPublic, device.boxPublic, device.createdAt));

    const approved = await waitFor(link.id, (l) => Boolean(l.bundle), () => cancelled);
    const bundle = c.openLinkBundle(c.b64uDecode(approved.bundle), device.boxSecret);
    const aik = c.identityKeyFromSeed(bundle.aikSeed);
    // Trust nothing the server says: the keys must be the account's, and certify us.
    const mismatch = "The keys received do not match your account. Nothing was linked.";
    const mine = await assertAccountAik(me.userId, aik.publicKey, mismatch);
    const listed = mine.devices.find((d) => d.device_id === device.deviceId);
    if (!listed || !c.verifyDeviceCertificate(aik.publicKey, me.userId, device.deviceId, device.signPublic, device.boxPublic, device.createdAt, listed.certificate)) {
      throw new KeysMismatch(mismatch);
    }
    await saveAccount(withDevice(newRecord(me.userId, bundle.aikSeed, bundle.hkSecret), device, aik.publicKey));
  } finally {
    // A later attempt adds its own listener: this one must not cancel it.
    cancelButton?.removeEventListener("click", cancel);
  }
}

/**
 * The existing device's side for one pending request: send our nonce, check the new
 * device's reveal against the commitment we saw first, show the code, and on the
 * user's yes certify the new device and seal our keys to it.
 */
export async function answerLink(client, pending, { onCode, confirm }) {
  const commitment = c.b64uDecode(pending.commitment); // as first seen, before our nonce
  const existingNonce = c.randomBytes(32);
  await api("POST", `/devices/links/${pending.id}/challenge`, { body: { device: client.deviceId, nonce: c.b64uEncode(existingNonce) } });
  const revealed = await waitFor(pending.id, (l) => Boolean(l.revealed), () => false, { device: client.deviceId });
  const r = revealed.revealed;
  const newNonce = c.b64uDecode(r.nonce);
  if (!c.verifyLinkCommitment(commitment, newNonce, client.userId, r.device_id, r.sign_pub, r.box_pub, r.created_at)) {
    await api("POST", `/devices/links/${pending.id}/deny`, { body: { device: client.deviceId } });
    throw new UserError("The new device's keys do not match what it first sent. Nothing was linked.");
  }
  onCode(c.linkShortCode(existingNonce, newNonce, client.userId, r.device_id, r.sign_pub, r.box_pub, r.created_at));
  if (!(await confirm())) {
    await api("POST", `/devices/links/${pending.id}/deny`, { body: { device: client.deviceId } });
    return false;
  }
  const aikSeed = c.b64uDecode(client.record.aikSeed);
  const certificate = c.deviceCertificate(aikSeed, client.userId, r.device_id, r.sign_pub, r.box_pub, r.created_at);
  const bundle = c.makeLinkBundle(aikSeed, c.b64uDecode(client.record.hkSecret), r.box_pub);
  await api("POST", `/devices/links/${pending.id}/approve`, {
    body: { device: client.deviceId, certificate: c.b64uEncode(certificate), bundle: c.b64uEncode(bundle) },
  });
  return true;
}
