// The browser client of Parley: this device's keys, the verified key directory with
// trust-on-first-use pins, sending (re-encrypting when devices change), opening,
// history, sync, receipts, reports and attachments. It mirrors the Python reference
// client (clients/python/parley_client/client.py); the cryptography is in crypto.js.

import * as c from "./crypto.js";
import { api, ApiError } from "./api.js";
import { forgetAccount, loadAccount, saveAccount } from "./keystore.js";

const MAX_SEND_ATTEMPTS = 3;

/** The peer's identity key changed after the user marked it verified: ask before sending. */
export class IdentityKeyChanged extends Error {
  constructor(userId, handle) {
    super(`@${handle}'s safety number changed.`);
    this.name = "IdentityKeyChanged";
    this.userId = userId;
    this.handle = handle;
  }
}

/** Who is signed in on this page (from the server-rendered <body>). */
export function pageUser() {
  const { userId, handle } = document.body.dataset;
  return userId ? { userId, handle } : null;
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
    this.knownDevices = new Map(); // deviceId -> box public key (b64u), verified
  }

  get deviceId() {
    return this.record.device.deviceId;
  }

  get boxSecret() {
    return c.b64uDecode(this.record.device.boxSecret);
  }

  async save() {
    await saveAccount(this.record);
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
    // are not lost (the user could not read anything sent to them otherwise).
    const record = { userId: me.userId, aikSeed: c.b64uEncode(aik.seed), hkSecret: c.b64uEncode(hk.secret), pins: {}, device: null, syncCursor: null };
    await saveAccount(record);
    if (!resume) await api("PUT", "/keys/identity", { body: { aik_pub: c.b64uEncode(aik.publicKey) } });
    await api("PUT", "/keys/history", {
      body: { hk_pub: c.b64uEncode(hk.publicKey), certificate: c.b64uEncode(c.historyKeyCertificate(aik.seed, me.userId, hk.publicKey)) },
    });
    const recoveryKey = c.newRecoveryKey();
    await api("PUT", "/keys/backup", { body: c.makeBackup(aik.seed, hk.secret, me.userId, recoveryKey) });
    await Parley.registerDevice(record, aik);
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
    const mine = await api("GET", `/keys/${me.userId}`);
    if (mine.aik_pub !== c.b64uEncode(aik.publicKey)) {
      throw new c.BackupRestoreError("This backup holds another identity key than your account's.");
    }
    const record = { userId: me.userId, aikSeed: c.b64uEncode(opened.aikSeed), hkSecret: c.b64uEncode(opened.hkSecret), pins: {}, device: null, syncCursor: null };
    await Parley.registerDevice(record, aik);
  }

  /** Certify fresh device keys with the AIK, register them, and keep them. */
  static async registerDevice(record, aik) {
    const device = c.generateDeviceKeys();
    const certificate = c.deviceCertificate(aik.seed, record.userId, device.deviceId, device.signPublic, device.boxPublic, device.createdAt);
    await api("POST", "/devices", {
      body: {
        device_id: device.deviceId,
        name: deviceName(),
        sign_pub: c.b64uEncode(device.signPublic),
        box_pub: c.b64uEncode(device.boxPublic),
        created_at: device.createdAt,
        certificate: c.b64uEncode(certificate),
      },
    });
    record.device = {
      deviceId: device.deviceId,
      signSeed: c.b64uEncode(device.signSeed),
      boxSecret: c.b64uEncode(device.boxSecret),
      createdAt: device.createdAt,
    };
    // Our own identity key is pinned and verified by construction.
    record.pins = { ...(record.pins || {}), [record.userId]: { aikPub: c.b64uEncode(aik.publicKey), verified: true, changed: false } };
    await saveAccount(record);
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

  /** Sign-out: this device is revoked and its keys leave this browser. */
  async forget() {
    try {
      await api("DELETE", `/devices/${this.deviceId}`);
    } finally {
      await forgetAccount(this.userId);
    }
  }

  // --- Key directory and trust -------------------------------------------------------------

  /**
   * A user's keys, every certificate verified under their pinned identity key. The first
   * key seen is pinned; a later different key is pinned and flagged `changed` (shown as
   * "safety number changed"), or, for a user marked verified, refused with
   * IdentityKeyChanged until the user confirms (`acceptChange`).
   */
  async directory(userId, { acceptChange = false, fresh = false } = {}) {
    if (!fresh && this.directories.has(userId)) return this.directories.get(userId);
    const raw = await api("GET", `/keys/${userId}`);
    if (!raw.aik_pub) throw new ApiError(409, { code: "no_keys", message: `@${raw.handle} has not set up encryption yet.` });
    const pins = this.record.pins;
    const pin = pins[raw.user_id];
    if (!pin) {
      pins[raw.user_id] = { aikPub: raw.aik_pub, verified: false, changed: false };
      await this.save();
    } else if (pin.aikPub !== raw.aik_pub) {
      if (pin.verified && !acceptChange) throw new IdentityKeyChanged(raw.user_id, raw.handle);
      pins[raw.user_id] = { aikPub: raw.aik_pub, verified: false, changed: true };
      await this.save();
    }
    const devices = new Map();
    for (const device of raw.devices) {
      if (c.verifyDeviceCertificate(raw.aik_pub, raw.user_id, device.device_id, device.sign_pub, device.box_pub, device.created_at, device.certificate)) {
        devices.set(device.device_id, device.box_pub);
        this.knownDevices.set(device.device_id, device.box_pub);
      }
    }
    let historyKey = null;
    if (raw.history_key && c.verifyHistoryKeyCertificate(raw.aik_pub, raw.user_id, raw.history_key.hk_pub, raw.history_key.certificate)) {
      historyKey = raw.history_key.hk_pub;
    }
    const directory = { userId: raw.user_id, handle: raw.handle, aikPub: raw.aik_pub, devices, historyKey };
    this.directories.set(raw.user_id, directory);
    return directory;
  }

  pin(userId) {
    return this.record.pins[userId] || null;
  }

  /** Take note that the user saw a contact's changed safety number. */
  async acknowledgeChange(userId) {
    const pin = this.record.pins[userId];
    if (pin) {
      pin.changed = false;
      await this.save();
    }
  }

  async markVerified(userId, verified = true) {
    const directory = await this.directory(userId, { acceptChange: true, fresh: true });
    this.record.pins[userId] = { aikPub: directory.aikPub, verified, changed: false };
    await this.save();
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

  async senderBoxKey(senderId, senderDevice) {
    if (!senderId || !senderDevice) return null;
    if (!this.knownDevices.has(senderDevice)) {
      try {
        await this.directory(senderId, { fresh: true });
      } catch {
        return null;
      }
    }
    return this.knownDevices.get(senderDevice) || null;
  }

  /** Open one message. Never throws: a failed check gives `verified: false`. */
  async open(message) {
    if (message.deleted) return { message, verified: false, deleted: true, payload: null };
    const senderBox = await this.senderBoxKey(message.sender_id, message.sender_device);
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
    await this.save();
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
