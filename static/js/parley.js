// The browser client of Parley: this device's keys, the verified key directory with
// trust-on-first-use pins, sending (re-encrypting when devices change), opening,
// history, sync, receipts, reports and attachments. It mirrors the Python reference
// client (clients/python/parley_client/client.py); the cryptography is in crypto.js.

import * as c from "./crypto.js";
import { api, ApiError } from "./api.js";
import { forgetAccount, loadAccount, saveAccount, updateAccount } from "./keystore.js";
import { UserError } from "./ui.js";

const MAX_SEND_ATTEMPTS = 3;

/** The peer's identity key changed after the user marked it verified: ask before sending. */
export class IdentityKeyChanged extends UserError {
  constructor(userId, handle) {
    super(`@${handle}'s safety number changed.`);
    this.userId = userId;
    this.handle = handle;
  }
}

/** Keys that are not the account's: a backup, a link or a directory answer of another identity. */
export class KeysMismatch extends UserError {}

/** This browser's record of the account is gone (signed out in another tab). */
export class KeysRemoved extends UserError {
  constructor() {
    super("This browser's keys were removed (signed out in another tab?). Reload the page.");
  }
}

/** Who is signed in on this page (from the server-rendered <body>). */
export function pageUser() {
  const { userId, handle } = document.body.dataset;
  return userId ? { userId, handle } : null;
}

/** The record of an account whose keys this browser holds, before its device exists. */
export function newRecord(userId, aikSeed, hkSecret) {
  return { userId, aikSeed: c.b64uEncode(aikSeed), hkSecret: c.b64uEncode(hkSecret), pins: {}, device: null, syncCursor: null };
}

/** What the record keeps of this browser's device keys (c.generateDeviceKeys()). */
export function deviceRecord(device) {
  return { deviceId: device.deviceId, signSeed: c.b64uEncode(device.signSeed), boxSecret: c.b64uEncode(device.boxSecret), createdAt: device.createdAt };
}

/** The public fields of a new device, as `POST /devices` and a link's reveal take them. */
export function devicePublic(device) {
  return {
    device_id: device.deviceId,
    name: deviceName(),
    sign_pub: c.b64uEncode(device.signPublic),
    box_pub: c.b64uEncode(device.boxPublic),
    created_at: device.createdAt,
  };
}

/**
 * Give `record` its device and pin our own identity key, verified by construction
 * (the caller checked `aikPublic` is the account's). Answers the record.
 */
export function withDevice(record, device, aikPublic) {
  record.device = deviceRecord(device);
  record.pins = { ...(record.pins || {}), [record.userId]: { aikPub: c.b64uEncode(aikPublic), verified: true, changed: false } };
  return record;
}

/** Whether a key directory answer (`GET /keys/<id>`) is under the identity key `aikPublic`. */
export function accountHasAik(keys, aikPublic) {
  return Boolean(keys.aik_pub) && keys.aik_pub === c.b64uEncode(aikPublic);
}

/**
 * The account's keys as the directory shows them, checked to be under `aikPublic`
 * (what a backup or a link gave us); KeysMismatch with `message` otherwise.
 */
export async function assertAccountAik(userId, aikPublic, message = "These keys are not your account's.") {
  const keys = await api("GET", `/keys/${userId}`);
  const sameUser = typeof keys.user_id === "string" && c.canonicalId(keys.user_id) === c.canonicalId(userId);
  if (!sameUser || !accountHasAik(keys, aikPublic)) throw new KeysMismatch(message);
  return keys;
}

/**
 * Sign-out of this browser: revoke its device on the server when it has one, and
 * always erase the account's record here, even a half-finished setup's (the AIK seed
 * without a device) and even offline (the device can be removed in Settings later).
 */
export async function forgetBrowser(userId) {
  try {
    const record = await loadAccount(userId);
    if (record?.device) await api("DELETE", `/devices/${record.device.deviceId}`);
  } catch {
    // Offline, or already revoked: the record goes anyway.
  }
  await forgetAccount(userId);
}

/** What the devices list calls this browser, e.g. "Chrome on Linux". */
export function deviceName() {
  const ua = navigator.userAgent;
  const browser = /Edg\//.test(ua) ? "Edge" : /Firefox\//.test(ua) ? "Firefox" : /Chrom/.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : "Browser";
  const os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Mac OS X/.test(ua) ? "macOS" : /Windows/.test(ua) ? "Windows" : /Linux/.test(ua) ? "Linux" : "";
  return os ? `${browser} on ${os}` : browser;
}

export class Parley {
  /**
   * The client of the signed-in user, with this browser's keys; null when this browser
   * has none yet (then, unless `redirect` is false, the page goes to the key setup).
   */
  static async load({ redirect = true } = {}) {
    const me = pageUser();
    if (!me) return null;
    await c.ready();
    const record = await loadAccount(me.userId);
    if (!record?.device) {
      if (redirect) location.assign(`/setup?next=${encodeURIComponent(location.pathname)}`);
      return null;
    }
    return new Parley(me, record);
  }

  constructor(me, record) {
    this.userId = me.userId;
    this.handle = me.handle;
    this.record = record;
    this.directories = new Map(); // userId -> verified directory
    // deviceId -> {userId, boxPub (b64u)}: whose device it is, as its certificate says.
    this.knownDevices = new Map();
  }

  get deviceId() {
    return this.record.device.deviceId;
  }

  get boxSecret() {
    return c.b64uDecode(this.record.device.boxSecret);
  }

  /**
   * Change the stored record with `change(record)` (synchronous; `false` writes
   * nothing), in one transaction, so another tab's changes are kept. Only the fields
   * meant change; the pins kept here are refreshed from the store.
   */
  async update(change) {
    const stored = await updateAccount(this.userId, change);
    if (!stored) throw new KeysRemoved();
    this.record.pins = stored.pins || {};
    return stored;
  }

  // --- Keys of a new browser ------------------------------------------------------------

  /** First device of the account: identity and history keys, a backup under a new
   * recovery key, this device certified. Answers the recovery code (shown once). */
  static async createKeys(me, { resume = null } = {}) {
    await c.ready();
    // Resuming a setup that stopped half-way reuses the keys kept here.
    const aik = resume ? c.identityKeyFromSeed(c.b64uDecode(resume.aikSeed)) : c.generateIdentityKey();
    const hk = resume ? c.historyKeyFrom(c.b64uDecode(resume.hkSecret)) : c.generateHistoryKey();
    // Keep the keys before the server has them: if the page dies half-way the keys
    // are not lost (the user could not read anything sent to them otherwise). A
    // resumed setup has them stored already.
    if (!resume) await saveAccount(newRecord(me.userId, aik.seed, hk.secret));
    if (!resume) await api("PUT", "/keys/identity", { body: { aik_pub: c.b64uEncode(aik.publicKey) } });
    await api("PUT", "/keys/history", {
      body: { hk_pub: c.b64uEncode(hk.publicKey), certificate: c.b64uEncode(c.historyKeyCertificate(aik.seed, me.userId, hk.publicKey)) },
    });
    const recoveryKey = c.newRecoveryKey();
    await api("PUT", "/keys/backup", { body: c.makeBackup(aik.seed, hk.secret, me.userId, recoveryKey) });
    const device = await Parley.registerDevice(me.userId, aik);
    if (!(await updateAccount(me.userId, (record) => void withDevice(record, device, aik.publicKey)))) throw new KeysRemoved();
    return c.formatRecoveryCode(recoveryKey);
  }

  /** A new browser of an existing account: open the backup, then certify this device. */
  static async restore(me, { code, passphrase }) {
    await c.ready();
    const blob = await api("GET", "/keys/backup");
    const opened = code !== undefined
      ? c.restoreBackupWithRecoveryCode(blob, me.userId, code)
      : await c.restoreBackupWithPassphrase(blob, me.userId, passphrase);
    const aik = c.identityKeyFromSeed(opened.aikSeed);
    await assertAccountAik(me.userId, aik.publicKey, "This backup holds another identity key than your account's.");
    const device = await Parley.registerDevice(me.userId, aik);
    await saveAccount(withDevice(newRecord(me.userId, opened.aikSeed, opened.hkSecret), device, aik.publicKey));
  }

  /** Certify fresh device keys with the AIK and register them; answers the keys. */
  static async registerDevice(userId, aik) {
    const device = c.generateDeviceKeys();
    const certificate = c.deviceCertificate(aik.seed, userId, device.deviceId, device.signPublic, device.boxPublic, device.createdAt);
    await api("POST", "/devices", { body: { ...devicePublic(device), certificate: c.b64uEncode(certificate) } });
    return device;
  }

  /** Replace the backup with one under a new recovery key; answers its code. */
  async newRecoveryKey() {
    const key = c.newRecoveryKey();
    await api("PUT", "/keys/backup", { body: c.makeBackup(c.b64uDecode(this.record.aikSeed), c.b64uDecode(this.record.hkSecret), this.userId, key) });
    return c.formatRecoveryCode(key);
  }

  /** Replace the backup with one under a long passphrase (Argon2id, in a worker). */
  async passphraseBackup(passphrase) {
    const { secret, kdf } = await c.passphraseBackupKdf(passphrase);
    await api("PUT", "/keys/backup", { body: c.makeBackup(c.b64uDecode(this.record.aikSeed), c.b64uDecode(this.record.hkSecret), this.userId, secret, kdf) });
  }

  // --- Key directory and trust -------------------------------------------------------------

  /**
   * A user's keys, every certificate verified under their pinned identity key. The first
   * key seen is pinned; a later different key is pinned and flagged `changed` (shown as
   * "safety number changed"), or, for a user marked verified, refused with
   * IdentityKeyChanged until the user confirms (`acceptChange`).
   */
  async directory(userId, { acceptChange = false, fresh = false } = {}) {
    userId = c.canonicalId(userId);
    if (!fresh && this.directories.has(userId)) return this.directories.get(userId);
    const raw = await api("GET", `/keys/${userId}`);
    // Certificates bind the user id: never take another user's keys for this one's.
    if (typeof raw.user_id !== "string" || c.canonicalId(raw.user_id) !== userId) {
      throw new KeysMismatch("The server answered with someone else's keys.");
    }
    if (!raw.aik_pub) throw new ApiError(409, { code: "no_keys", message: `@${raw.handle} has not set up encryption yet.` });
    // Decide on the pin as stored now (another tab may have pinned or verified since).
    let refused = false;
    await this.update((record) => {
      record.pins ||= {};
      const pin = record.pins[userId];
      if (!pin) {
        record.pins[userId] = { aikPub: raw.aik_pub, verified: false, changed: false };
      } else if (pin.aikPub === raw.aik_pub) {
        return false;
      } else if (pin.verified && !acceptChange) {
        refused = true;
        return false;
      } else {
        record.pins[userId] = { aikPub: raw.aik_pub, verified: false, changed: true };
      }
      return true;
    });
    if (refused) throw new IdentityKeyChanged(userId, raw.handle);
    const devices = new Map();
    for (const device of raw.devices) {
      if (c.verifyDeviceCertificate(raw.aik_pub, userId, device.device_id, device.sign_pub, device.box_pub, device.created_at, device.certificate)) {
        const deviceId = c.canonicalId(device.device_id);
        devices.set(deviceId, device.box_pub);
        this.knownDevices.set(deviceId, { userId, boxPub: device.box_pub });
      }
    }
    let historyKey = null;
    if (raw.history_key && c.verifyHistoryKeyCertificate(raw.aik_pub, userId, raw.history_key.hk_pub, raw.history_key.certificate)) {
      historyKey = raw.history_key.hk_pub;
    }
    const directory = { userId, handle: raw.handle, aikPub: raw.aik_pub, devices, historyKey };
    this.directories.set(userId, directory);
    return directory;
  }

  /**
   * The box key of `deviceId` when it is one of `userId`'s devices in their verified
   * directory (read again once when the device is not known yet, e.g. just added), or
   * null, and whether the contact's safety number changed (`changed`, as the
   * conversation's banner says it): `{boxPub, changed}`. IdentityKeyChanged for a
   * verified contact whose key changed. Calls open and seal their signaling with it
   * (docs/calls.md).
   */
  async deviceKey(userId, deviceId) {
    let id;
    try {
      id = c.canonicalId(deviceId);
    } catch {
      return { boxPub: null, changed: false };
    }
    let directory = await this.directory(userId);
    if (!directory.devices.has(id)) directory = await this.directory(userId, { fresh: true });
    return { boxPub: directory.devices.get(id) || null, changed: Boolean(this.pin(userId)?.changed) };
  }

  /** Only the box key of `deviceKey()`. */
  async deviceBoxKey(userId, deviceId) {
    return (await this.deviceKey(userId, deviceId)).boxPub;
  }

  /** The pin of a contact as last read from the store. */
  pin(userId) {
    return this.record.pins?.[c.canonicalId(userId)] || null;
  }

  /** Take note that the user saw a contact's changed safety number. */
  async acknowledgeChange(userId) {
    userId = c.canonicalId(userId);
    await this.update((record) => {
      const pin = record.pins?.[userId];
      if (!pin?.changed) return false;
      pin.changed = false;
      return true;
    });
  }

  async markVerified(userId, verified = true) {
    const directory = await this.directory(userId, { acceptChange: true, fresh: true });
    await this.update((record) => {
      record.pins[directory.userId] = { aikPub: directory.aikPub, verified, changed: false };
    });
  }

  /** The 60 digits to compare with a contact, as 12 groups of 5. */
  async safetyNumber(userId) {
    const theirs = await this.directory(userId);
    const mine = await this.directory(this.userId);
    return c.formatSafetyNumber(c.pairSafetyNumber(c.safetyNumber(mine.aikPub, mine.userId), c.safetyNumber(theirs.aikPub, theirs.userId)));
  }

  // --- Sending ----------------------------------------------------------------------------

  async recipients(conversation, { acceptChanges = false, fresh = false } = {}) {
    const devices = {};
    const history = {};
    for (const member of conversation.members) {
      const directory = await this.directory(member.user.id, { acceptChange: acceptChanges, fresh });
      for (const [deviceId, boxPub] of directory.devices) devices[deviceId] = boxPub;
      if (directory.historyKey) history[directory.userId] = directory.historyKey;
    }
    return { devices, history };
  }

  /**
   * Encrypt to every verified device of every member and send. On 409 (devices changed)
   * fetch the directories again and re-encrypt; the same client_id is kept, so a retry
   * never makes a second copy.
   */
  async send(conversation, payload, { expiresIn = null, acceptChanges = false } = {}) {
    const clientId = crypto.randomUUID();
    let fresh = false;
    let lastError = null;
    for (let attempt = 0; attempt < MAX_SEND_ATTEMPTS; attempt += 1) {
      const { devices, history } = await this.recipients(conversation, { acceptChanges, fresh });
      const envelope = c.encryptMessage(payload, conversation.id, this.deviceId, clientId, this.boxSecret, devices, history, { expiresIn });
      try {
        return await api("POST", `/conversations/${conversation.id}/messages`, { body: envelope });
      } catch (error) {
        if (!(error instanceof ApiError) || error.status !== 409 || error.code !== "recipients_changed") throw error;
        lastError = error;
        fresh = true;
      }
    }
    throw lastError;
  }

  // --- Receiving --------------------------------------------------------------------------

  /**
   * The verified box key of the device that sent a message, if that device is the
   * sender's: null when the device is unknown, `false` when its certificate names
   * another user (the server relabelled someone else's message).
   */
  async senderBoxKey(senderId, senderDevice) {
    let userId, deviceId;
    try {
      userId = c.canonicalId(senderId);
      deviceId = c.canonicalId(senderDevice);
    } catch {
      return null;
    }
    if (this.knownDevices.get(deviceId)?.userId !== userId) {
      try {
        await this.directory(userId, { fresh: true });
      } catch {
        // Unknown sender: the device stays unverified.
      }
    }
    const known = this.knownDevices.get(deviceId);
    if (!known) return null;
    return known.userId === userId ? known.boxPub : false;
  }

  /** Open one message. Never throws: a failed check gives `verified: false`. */
  async open(message) {
    if (message.deleted) return { message, verified: false, deleted: true, payload: null };
    const senderBox = await this.senderBoxKey(message.sender_id, message.sender_device);
    if (senderBox === false) return { message, verified: false, payload: null, error: "the sender device is another user's" };
    const result = c.decryptMessage(message, message.conversation_id, {
      myDeviceId: this.deviceId,
      myBoxSecret: this.boxSecret,
      senderBoxPub: senderBox,
      myUserId: this.userId,
      hkSecret: this.record.hkSecret ? c.b64uDecode(this.record.hkSecret) : null,
    });
    if (result.verified && !senderBox && !result.viaHistory) {
      return { message, verified: false, payload: null, error: "unknown sender device" };
    }
    return { message, ...result, payload: result.verified ? result.payload : null };
  }

  /** The sender's own copy of what it just sent, without decrypting it again. */
  sentCopy(stored, payload) {
    return { message: stored, verified: true, payload, payloadBytes: c.serializePayload(payload), mine: true };
  }

  async history(conversationId, { before = null, limit = 50 } = {}) {
    const page = await api("GET", `/conversations/${conversationId}/messages`, { query: { device: this.deviceId, before, limit } });
    return Promise.all(page.results.map((message) => this.open(message)));
  }

  /** Everything since the last sync, across conversations. Remembers the cursor. */
  async sync() {
    const received = [];
    for (;;) {
      const page = await api("POST", "/sync", { body: { device: this.deviceId, cursor: this.record.syncCursor, limit: 200 } });
      for (const message of page.messages) received.push(await this.open(message));
      this.record.syncCursor = page.cursor;
      if (!page.has_more) break;
    }
    // Only the cursor is written; a record erased meanwhile (signed out) stays erased.
    const cursor = this.record.syncCursor;
    await updateAccount(this.userId, (record) => {
      record.syncCursor = cursor;
    });
    return received;
  }

  async delivered(conversationId, seq) {
    return api("POST", `/conversations/${conversationId}/delivered`, { body: { device: this.deviceId, seq } });
  }

  async markRead(conversationId, seq) {
    return api("POST", `/conversations/${conversationId}/read`, { body: { seq } });
  }

  // --- Reports and attachments -------------------------------------------------------------

  /** Report a verified message with its franking proof. */
  async report(received, reason, comment = "") {
    if (!received.verified || !received.payloadBytes || !received.frankingKey) throw new Error("Only a verified message can be reported.");
    return api("POST", "/reports", {
      body: {
        message_id: received.message.id,
        payload: c.b64uEncode(received.payloadBytes),
        franking_key: c.b64uEncode(received.frankingKey),
        franking_stamp: received.message.franking_stamp,
        reason,
        comment,
      },
    });
  }

  /** Encrypt and upload a File; answers its entry for a payload's `attachments`. */
  async uploadAttachment(conversationId, file) {
    const data = new Uint8Array(await file.arrayBuffer());
    const { ciphertext, meta } = c.encryptAttachment(data, { mime: file.type || "application/octet-stream", name: file.name });
    const form = new FormData();
    form.append("blob", new Blob([ciphertext], { type: "application/octet-stream" }), "blob");
    const uploaded = await api("POST", `/conversations/${conversationId}/attachments`, { body: form });
    return { blob_id: uploaded.blob_id, ...meta };
  }

  async downloadAttachment(meta) {
    const ciphertext = await api("GET", `/attachments/${meta.blob_id}`, { binary: true });
    return c.decryptAttachment(ciphertext, meta);
  }
}
