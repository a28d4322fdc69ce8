"""static/js/crypto.js against the Python reference, inside Chromium.

Every vector of clients/python/parley_client/vectors.json is recomputed ("compute")
or opened ("open") by crypto.js in a page of the live site, under its real CSP.
Then the round trips only a browser can show (Argon2id in the Web Worker, a
secretstream attachment past 1 MiB, tampered messages), and the other direction:
what the browser made, the Python reference opens.

Bytes cross ``page.evaluate`` as b64u strings.
"""

import json
from typing import Any

from nacl.public import PrivateKey, SealedBox
from parley_client import crypto as c
from parley_client.crypto import b64u_decode as d
from playwright.sync_api import Page

from common.testing import ROOT
from tests.browser.conftest import Site

VECTORS_PATH = ROOT / "clients" / "python" / "parley_client" / "vectors.json"
KINDS = {"compute", "open"}

# One check per construction: returns the vector's "output" as crypto.js computes
# (or opens) it, and pushes to `problems` whatever else does not hold. A vector
# whose construction has no check here comes back as an error: a new vector is
# never skipped silently.
CHECK_VECTORS_JS = """
async (vectors) => {
  const c = await import("/static/js/crypto.js");
  const sodium = (await import("/static/vendor/libsodium-wrappers.mjs")).default;
  await c.ready();
  const d = c.b64uDecode;
  const e = c.b64uEncode;
  const text = c.utf8Decode;
  const fromHex = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (x) => parseInt(x, 16));
  const toHex = (bytes) => Array.from(bytes, (x) => x.toString(16).padStart(2, "0")).join("");
  const mapValues = (o, f) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, f(v)]));
  const concat = (a, b) => {
    const out = new Uint8Array(a.length + b.length);
    out.set(a);
    out.set(b, a.length);
    return out;
  };
  const errorName = (f) => { try { f(); return null; } catch (err) { return err.name; } };
  const messageVector = vectors.find((v) => v.construction === "message");

  const checks = {
    "b64u": (i, expect) => {
      const b64u = i.hex.map((hex) => e(fromHex(hex)));
      b64u.forEach((t, k) => expect(toHex(d(t)) === i.hex[k], `b64uDecode(${t})`));
      for (const t of i.invalid) {
        expect(errorName(() => d(t)) !== null, `b64uDecode accepted ${JSON.stringify(t)}`);
      }
      return { b64u };
    },
    "public-keys": (i, expect) => {
      const ed = mapValues(i.ed25519_seeds, (s) => e(c.ed25519PublicKey(d(s))));
      const x = mapValues(i.x25519_secrets, (s) => e(c.x25519PublicKey(d(s))));
      for (const [name, s] of Object.entries(i.ed25519_seeds)) {
        expect(e(c.identityKeyFromSeed(s).publicKey) === ed[name], `identityKeyFromSeed ${name}`);
      }
      for (const [name, s] of Object.entries(i.x25519_secrets)) {
        expect(e(c.historyKeyFrom(s).publicKey) === x[name], `historyKeyFrom ${name}`);
      }
      return { ed25519_public: ed, x25519_public: x };
    },
    "device-certificate": (i, expect) => {
      expect(e(c.ed25519PublicKey(d(i.aik_seed))) === i.aik_pub, "aik_pub is not the seed's");
      const fields = [i.user_id, i.device_id, d(i.sign_pub), d(i.box_pub), i.created_at];
      const signature = e(c.deviceCertificate(d(i.aik_seed), ...fields));
      // As it travels (b64u strings), and with an upper-case id, which is the same id.
      const wire = [i.user_id.toUpperCase(), i.device_id, i.sign_pub, i.box_pub, i.created_at];
      expect(c.verifyDeviceCertificate(i.aik_pub, ...wire, signature), "does not verify");
      const later = [...fields.slice(0, 4), i.created_at + 1];
      expect(!c.verifyDeviceCertificate(i.aik_pub, ...later, signature), "verifies when altered");
      return { signing_input_text: text(c.deviceCertificateInput(...fields)), signature };
    },
    "history-key-certificate": (i, expect) => {
      const signature = e(c.historyKeyCertificate(d(i.aik_seed), i.user_id, d(i.hk_pub)));
      const verify = (key) => c.verifyHistoryKeyCertificate(i.aik_pub, i.user_id, key, signature);
      expect(verify(i.hk_pub), "does not verify");
      expect(!verify(i.aik_pub), "verifies for another key");
      return {
        signing_input_text: text(c.historyKeyCertificateInput(i.user_id, d(i.hk_pub))),
        signature,
      };
    },
    "safety-number": (i) => ({
      mac: e(c.mac(c.utf8(c.SAFETY_MAC_KEY), concat(d(i.aik_pub), c.utf8(i.user_id)))),
      digits: c.safetyNumber(d(i.aik_pub), i.user_id),
    }),
    "pair-safety-number": (i, expect) => {
      const digits = c.pairSafetyNumber(i.a, i.b);
      expect(c.pairSafetyNumber(i.b, i.a) === digits, "depends on the order");
      return { digits, formatted: c.formatSafetyNumber(digits) };
    },
    "recovery-code": (i, expect) => {
      for (const code of i.parse_ok) {
        expect(e(c.parseRecoveryCode(code)) === i.key, `does not parse ${JSON.stringify(code)}`);
      }
      for (const code of i.parse_invalid) {
        const name = errorName(() => c.parseRecoveryCode(code));
        expect(name === "RecoveryCodeError", `parsing ${JSON.stringify(code)}: ${name}`);
      }
      return { code: c.formatRecoveryCode(d(i.key)), check: e(c.recoveryCheck(d(i.key))) };
    },
    "backup": (i, expect) => {
      let kdf = c.RAW_KDF;
      let secret;
      if ("recovery_key" in i) {
        secret = d(i.recovery_key);
      } else {
        expect(e(c.normalizePassphrase(i.passphrase_text)) === i.passphrase_nfc_utf8, "not NFC");
        const { salt, opslimit, memlimit } = i;
        kdf = c.backupKdf({ kdf: c.KDF_ARGON2ID, salt, opslimit, memlimit });
        secret = c.deriveKeyFromPassphrase(i.passphrase_text, salt, opslimit, memlimit);
      }
      const keys = [d(i.aik_seed), d(i.hk_secret)];
      const blob = c.makeBackup(...keys, i.user_id, secret, kdf, { nonce: d(i.nonce) });
      const restored = "recovery_key" in i
        ? c.restoreBackupWithRecoveryCode(blob, i.user_id, c.formatRecoveryCode(secret))
        : c.restoreBackup(blob, i.user_id, secret);
      expect(e(restored.aikSeed) === i.aik_seed && e(restored.hkSecret) === i.hk_secret, "restore");
      const other = "00000000-0000-4000-8000-000000000000";
      const name = errorName(() => c.restoreBackup(blob, other, secret));
      expect(name === "BackupRestoreError", `another user's restore: ${name}`);
      return {
        backup_secret: e(secret),
        plaintext_text: text(c.backupPlaintext(d(i.aik_seed), d(i.hk_secret))),
        ad_text: text(c.backupAd(i.user_id)),
        blob,
      };
    },
    "message": (i, expect, v) => {
      const payload = JSON.parse(i.payload_text);
      expect(text(c.serializePayload(payload)) === i.payload_text, "serializePayload");
      const envelope = c.encryptMessage(
        payload, i.conversation_id, i.sender_device_id, i.client_id, d(i.sender_box_secret),
        mapValues(i.recipients, d), {},
        {
          key: d(i.key),
          nonce: d(i.nonce),
          frankingKey: d(i.franking_key),
          wrapNonces: mapValues(i.wrap_nonces, d),
        },
      );
      expect(Object.keys(envelope).join() === Object.keys(v.output.envelope).join(), "field order");
      for (const [device, secret] of Object.entries(i.recipient_box_secrets)) {
        const keys = { myDeviceId: device, myBoxSecret: d(secret), senderBoxPub: i.sender_box_pub };
        // The whole keys map, and the one "key" a device receives from the server.
        const { keys: _, ...single } = envelope;
        for (const message of [envelope, { ...single, key: envelope.keys[device] }]) {
          const r = c.decryptMessage(message, i.conversation_id, keys);
          expect(r.verified, `${device}: ${r.error}`);
          expect(r.verified && text(r.payloadBytes) === i.payload_text, `${device}: payload`);
          expect(r.verified && e(r.frankingKey) === i.franking_key, `${device}: FK`);
          expect(!r.viaHistory, `${device}: via history`);
        }
      }
      return {
        ad_text: text(c.messageAd(i.conversation_id, i.sender_device_id, i.client_id)),
        plaintext: e(concat(d(i.franking_key), c.serializePayload(payload))),
        envelope,
      };
    },
    "franking-stamp-input": (i) => ({
      input_text: text(c.frankingStampInput(
        i.franking_tag, i.conversation_id, i.sender_user_id, i.message_id, i.server_ts,
      )),
    }),
    "box-to-device": (i, expect) => {
      expect(text(d(i.plaintext)) === i.plaintext_text, "plaintext_text");
      const boxed = c.boxToDevice(
        d(i.plaintext), d(i.recipient_box_pub), d(i.sender_box_secret), { nonce: d(i.nonce) },
      );
      const opened = c.openFromDevice(boxed, i.sender_box_pub, d(i.recipient_box_secret));
      expect(e(opened) === i.plaintext, "openFromDevice");
      return { boxed };
    },
    "attachment-aead": (i, expect) => {
      const { ciphertext, meta } = c.encryptAttachment(
        d(i.data), { mime: i.mime, name: i.name, key: d(i.key), nonce: d(i.nonce) },
      );
      expect(e(c.decryptAttachment(ciphertext, meta)) === i.data, "decryptAttachment");
      return { ciphertext: e(ciphertext), meta };
    },
    "sealed-box-open": (i, expect) => {
      expect(e(c.x25519PublicKey(d(i.hk_secret))) === i.hk_pub, "hk_pub is not the secret's");
      // The envelope of the message vector, carrying this history wrap, opens with the HK alone.
      const history_keys = { [i.user_id]: i.sealed };
      const envelope = { ...messageVector.output.envelope, history_keys };
      const r = c.decryptMessage(envelope, messageVector.input.conversation_id,
        { myUserId: i.user_id, hkSecret: d(i.hk_secret) });
      expect(r.verified && r.viaHistory, `through the history key: ${r.error}`);
      expect(r.verified && text(r.payloadBytes) === messageVector.input.payload_text, "payload");
      return { key: e(c.openSealedKey(i.sealed, d(i.hk_secret))) };
    },
    // libsodium's secretstream itself (crypto.js only uses it through attachments).
    "secretstream-open": (i) => {
      const state = sodium.crypto_secretstream_xchacha20poly1305_init_pull(d(i.header), d(i.key));
      return {
        chunks: i.chunks.map((chunk) => {
          const ciphertext = d(chunk.ciphertext);
          const r = sodium.crypto_secretstream_xchacha20poly1305_pull(state, ciphertext, null);
          return r ? { plaintext: e(r.message), tag: r.tag } : { error: "did not authenticate" };
        }),
      };
    },
    "attachment-secretstream-open": (i) => {
      const plaintext = c.decryptAttachment(d(i.ciphertext), i.meta);
      const follows = plaintext.every((byte, k) => byte === k % 251);
      return {
        size: plaintext.length,
        plaintext_rule: follows ? "byte i = i mod 251" : "(another plaintext)",
        plaintext_sha256: e(c.sha256(plaintext)),
      };
    },
    "link-commitment": (i, expect) => {
      const fields = [i.user_id, i.device_id, d(i.sign_pub), d(i.box_pub), i.created_at];
      const commitment = e(c.linkCommitment(d(i.new_nonce), ...fields));
      expect(c.verifyLinkCommitment(commitment, i.new_nonce, ...fields), "does not verify");
      const later = [...fields.slice(0, 4), i.created_at + 1];
      expect(!c.verifyLinkCommitment(commitment, i.new_nonce, ...later), "verifies when altered");
      return { link_input_text: text(c.linkInput(...fields)), commitment };
    },
    "link-code": (i) => {
      const fields = [i.user_id, i.device_id, d(i.sign_pub), d(i.box_pub), i.created_at];
      const codeInput = c.linkCodeInput(...fields, d(i.new_nonce));
      return {
        code_input_text: text(codeInput),
        mac: e(c.mac(d(i.existing_nonce), codeInput)),
        code: c.linkShortCode(d(i.existing_nonce), d(i.new_nonce), ...fields),
      };
    },
  };

  const results = {};
  for (const v of vectors) {
    const check = checks[v.construction];
    if (check === undefined) {
      results[v.name] = { error: `crypto.js has no check for construction "${v.construction}"` };
      continue;
    }
    const problems = [];
    const expect = (ok, what) => { if (!ok) problems.push(what); };
    try {
      results[v.name] = { output: check(v.input, expect, v), problems };
    } catch (err) {
      results[v.name] = { error: `${err.name}: ${err.message}` };
    }
  }
  return results;
}
"""

# What only a browser can show, each returning a list of problems (empty: all held).
ROUND_TRIPS_JS = """
async (vectors) => {
  const c = await import("/static/js/crypto.js");
  const sodium = (await import("/static/vendor/libsodium-wrappers.mjs")).default;
  await c.ready();
  const e = c.b64uEncode;
  const problems = [];
  const expect = (ok, what) => { if (!ok) problems.push(what); };
  const same = (a, b) => c.equalBytes(a, b);
  const errorName = async (f) => {
    try {
      await f();
      return null;
    } catch (err) {
      return err.name;
    }
  };

  // Argon2id runs in a module Web Worker: count the workers crypto.js starts.
  let workers = 0;
  const PageWorker = window.Worker;
  window.Worker = class extends PageWorker {
    constructor(...args) { super(...args); workers += 1; }
  };

  // 1. A passphrase backup made and restored through the Worker.
  const aik = c.generateIdentityKey();
  const hk = c.generateHistoryKey();
  const userId = c.uuid4();
  const passphrase = "a long passphrase, typed in the browser";
  const { secret, kdf } = await c.passphraseBackupKdf(passphrase);
  expect(kdf.opslimit === c.DEFAULT_OPSLIMIT, "default opslimit");
  expect(kdf.memlimit === c.DEFAULT_MEMLIMIT, "default memlimit");
  const blob = c.makeBackup(aik.seed, hk.secret, userId, secret, kdf);
  const restored = await c.restoreBackupWithPassphrase(blob, userId, passphrase);
  expect(same(restored.aikSeed, aik.seed), "worker round trip: AIK");
  expect(same(restored.hkSecret, hk.secret), "worker round trip: HK");
  let name = await errorName(() => c.restoreBackupWithPassphrase(blob, userId, `${passphrase}.`));
  expect(name === "BackupRestoreError", `wrong passphrase: ${name}`);
  expect(workers === 3, `expected 3 workers, got ${workers}`);
  // The Python vector with libsodium's minimum limits opens through the worker too.
  const minimum = vectors.find((v) => v.name === "backup-argon2id-min");
  const fromPython = await c.restoreBackupWithPassphrase(
    minimum.output.blob, minimum.input.user_id, minimum.input.passphrase_text);
  expect(e(fromPython.aikSeed) === minimum.input.aik_seed, "Python's argon2id-min backup");
  // A hostile server cannot make the device burn more than the server's maximum.
  for (const excess of [
    { opslimit: c.SERVER_MAX_OPSLIMIT + 1 },
    { memlimit: c.SERVER_MAX_MEMLIMIT + 1 },
  ]) {
    const hostile = { ...blob, ...excess };
    name = await errorName(() => c.restoreBackupWithPassphrase(hostile, userId, passphrase));
    expect(name === "BackupRestoreError", `limits ${JSON.stringify(excess)}: ${name}`);
  }
  name = await errorName(() => c.passphraseBackupKdf("too short"));
  expect(name === "WeakPassphraseError", `short passphrase: ${name}`);
  expect(workers === 4, `the bounds are checked before any worker starts (${workers} workers)`);
  window.Worker = PageWorker;

  // 2. An attachment past 1 MiB goes through secretstream.
  const data = c.randomBytes(3 * 1024 * 1024 + 12345);
  const { ciphertext, meta } = c.encryptAttachment(data, { mime: "image/png", name: "big.png" });
  const chunks = Math.ceil(data.length / c.ATTACHMENT_CHUNK_BYTES);
  expect("header" in meta && !("nonce" in meta), "meta has a header, no nonce");
  expect(ciphertext.length === data.length + chunks * c.SECRETSTREAM_ABYTES, "chunked length");
  expect(same(c.decryptAttachment(ciphertext, meta), data), "secretstream round trip");
  const step = c.ATTACHMENT_CHUNK_BYTES + c.SECRETSTREAM_ABYTES;
  const flipped = ciphertext.slice();
  flipped[step + 5] ^= 1;
  const attacks = {
    "a flipped byte": flipped,
    "the last chunk dropped": ciphertext.slice(0, (chunks - 1) * step),
    "two chunks swapped": ciphertext.slice(),
  };
  attacks["two chunks swapped"].set(ciphertext.subarray(step, 2 * step), 0);
  attacks["two chunks swapped"].set(ciphertext.subarray(0, step), step);
  // Under the attachment's key: a first chunk tagged final, then more.
  const key = c.b64uDecode(meta.key);
  const early = sodium.crypto_secretstream_xchacha20poly1305_init_push(key);
  const push = (bytes, tag) => sodium.crypto_secretstream_xchacha20poly1305_push(
    early.state, bytes, null, tag);
  attacks["a final tag before the end"] = new Uint8Array([
    ...push(data.subarray(0, c.ATTACHMENT_CHUNK_BYTES), c.TAG_FINAL),
    ...push(data.subarray(0, 10), c.TAG_FINAL),
  ]);
  for (const [what, altered] of Object.entries(attacks)) {
    // A fresh sha256 and size, so that the stream itself must refuse it.
    const size = altered.length - Math.ceil(altered.length / step) * c.SECRETSTREAM_ABYTES;
    const header = what === "a final tag before the end" ? e(early.header) : meta.header;
    const forged = { ...meta, header, sha256: e(c.sha256(altered)), size };
    name = await errorName(() => c.decryptAttachment(altered, forged));
    expect(name === "AttachmentError", `${what}: ${name}`);
  }
  name = await errorName(() => c.decryptAttachment(flipped, meta));
  expect(name === "AttachmentError", `sha256 mismatch: ${name}`);

  // 3. A link bundle opens with the new device's box secret only.
  const newDevice = c.generateDeviceKeys();
  const bundle = c.makeLinkBundle(aik.seed, hk.secret, newDevice.boxPublic);
  const linked = c.openLinkBundle(bundle, newDevice.boxSecret);
  expect(same(linked.aikSeed, aik.seed) && same(linked.hkSecret, hk.secret), "link bundle");
  name = await errorName(() => c.openLinkBundle(bundle, c.generateDeviceKeys().boxSecret));
  expect(name === "LinkBundleError", `link bundle for another device: ${name}`);

  // 4. A tampered message is "could not be verified", never an exception.
  const conversation = c.uuid4();
  const sender = c.generateDeviceKeys();
  const reader = c.generateDeviceKeys();
  const payload = { type: "text", body: "hi", sent_at: 1763660000, reply_to: null };
  const envelope = c.encryptMessage(payload, conversation, sender.deviceId, null,
    sender.boxSecret, { [reader.deviceId]: reader.boxPublic });
  const keys = {
    myDeviceId: reader.deviceId, myBoxSecret: reader.boxSecret, senderBoxPub: sender.boxPublic,
  };
  const good = c.decryptMessage(envelope, conversation, keys);
  expect(good.verified && good.payload.body === "hi", `the untouched message: ${good.error}`);
  const flip = (b64u) => { const b = c.b64uDecode(b64u); b[b.length - 1] ^= 1; return e(b); };
  const wrap = envelope.keys[reader.deviceId];
  const tampered = {
    "ciphertext": [{ ...envelope, ciphertext: flip(envelope.ciphertext) }, conversation, keys],
    "tag": [{ ...envelope, franking_tag: flip(envelope.franking_tag) }, conversation, keys],
    "nonce": [{ ...envelope, nonce: flip(envelope.nonce) }, conversation, keys],
    "wrap": [{ ...envelope, keys: { [reader.deviceId]: flip(wrap) } }, conversation, keys],
    "client id": [{ ...envelope, client_id: c.uuid4() }, conversation, keys],
    "sender device": [{ ...envelope, sender_device: c.uuid4() }, conversation, keys],
    "conversation": [envelope, c.uuid4(), keys],
    "version": [{ ...envelope, v: 2 }, conversation, keys],
    "version true": [{ ...envelope, v: true }, conversation, keys],
    "sender key": [envelope, conversation, { ...keys, senderBoxPub: reader.boxPublic }],
    "no wrap": [{ ...envelope, keys: {} }, conversation, keys],
    "wrap of the wrong type": [{ ...envelope, keys: { [reader.deviceId]: 7 } }, conversation, keys],
    "nonce not base64url": [{ ...envelope, nonce: "%%%" }, conversation, keys],
    "no ciphertext": [{ ...envelope, ciphertext: undefined }, conversation, keys],
    "an array": [[envelope], conversation, keys],
    "null": [null, conversation, keys],
    "a string": ["message", conversation, keys],
    "a conversation id that is no UUID": [envelope, "not-a-uuid", keys],
    "a device id that is no UUID": [envelope, conversation, { ...keys, myDeviceId: 42 }],
    "no keys at all": [envelope, conversation, undefined],
  };
  for (const [what, args] of Object.entries(tampered)) {
    try {
      const r = c.decryptMessage(...args);
      expect(!r.verified && r.payload === null && typeof r.error === "string", `${what}: verified`);
    } catch (err) {
      problems.push(`${what}: decryptMessage threw ${err.name}`);
    }
  }
  return problems;
}
"""

# The browser makes things with fresh random keys; Python must open them.
MADE_IN_BROWSER_JS = r"""
async () => {
  const c = await import("/static/js/crypto.js");
  await c.ready();
  const e = c.b64uEncode;
  const user = c.uuid4();
  const aik = c.generateIdentityKey();
  const hk = c.generateHistoryKey();
  const sender = c.generateDeviceKeys();
  const reader = c.generateDeviceKeys();
  const conversation = c.uuid4();
  // Python's serializer must find the same bytes: key order kept, non-ASCII kept,
  // escapes, Python's float spelling, a BigInt, and a Map keeping "1" after "b".
  const payload = {
    type: "text",
    body: "hé 👋 \"q\" \\ \n\t\u0001 \u007f \u0085 \u2028 end",
    sent_at: 1763660000,
    reply_to: null,
    attachments: [],
    numbers: [0, -1, 1.5, 0.1 + 0.2, 1.5e-4, 1.5e-5, -2.5e-300, 1234567890123456.8, 2n ** 64n],
    nested: { z: [true, false, null, {}], a: "" },
    ordered: new Map([["b", 1], ["1", 2]]),
  };
  const envelope = c.encryptMessage(payload, conversation, sender.deviceId, null, sender.boxSecret,
    { [reader.deviceId]: reader.boxPublic, [sender.deviceId]: sender.boxPublic },
    { [user]: hk.publicKey });
  const recoveryKey = c.newRecoveryKey();
  const passphrase = "correct horse battery staple, made in Chromium";
  const { secret, kdf } = await c.passphraseBackupKdf(passphrase);
  const attachmentData = c.randomBytes(c.ATTACHMENT_AEAD_MAX_BYTES + 1);
  const attachmentMeta = { mime: "application/pdf", name: "é.pdf" };
  const attachment = c.encryptAttachment(attachmentData, attachmentMeta);
  const signaling = c.utf8('{"type":"offer","sdp":"v=0"}');
  return {
    user,
    aik_seed: e(aik.seed),
    aik_pub: e(aik.publicKey),
    hk_secret: e(hk.secret),
    message: {
      conversation,
      envelope,
      payload_text: c.utf8Decode(c.serializePayload(payload)),
      sender_box_pub: e(sender.boxPublic),
      reader_device: reader.deviceId,
      reader_box_secret: e(reader.boxSecret),
    },
    raw_backup: {
      blob: c.makeBackup(aik.seed, hk.secret, user, recoveryKey),
      code: c.formatRecoveryCode(recoveryKey),
    },
    passphrase_backup: {
      blob: c.makeBackup(aik.seed, hk.secret, user, secret, kdf),
      passphrase,
    },
    device: {
      id: reader.deviceId,
      sign_pub: e(reader.signPublic),
      box_pub: e(reader.boxPublic),
      created_at: reader.createdAt,
      certificate: e(c.deviceCertificate(aik.seed, user, reader.deviceId, reader.signPublic,
        reader.boxPublic, reader.createdAt)),
      hk_certificate: e(c.historyKeyCertificate(aik.seed, user, hk.publicKey)),
      safety_number: c.safetyNumber(aik.publicKey, user),
    },
    attachment: {
      ciphertext: e(attachment.ciphertext),
      meta: attachment.meta,
      data_sha256: e(c.sha256(attachmentData)),
    },
    signaling: {
      plaintext: e(signaling),
      boxed: c.boxToDevice(signaling, reader.boxPublic, sender.boxSecret),
      sealed: e(c.sealTo(signaling, reader.boxPublic)),
    },
    link_bundle: e(c.makeLinkBundle(aik.seed, hk.secret, reader.boxPublic)),
  };
}
"""


def open_page(site: Site) -> Page:
    """A page of the site, so that crypto.js runs under the site's CSP."""
    page = site.new_page()
    page.goto("/login")
    return page


def load_vectors() -> list[dict[str, Any]]:
    document = json.loads(VECTORS_PATH.read_text("utf-8"))
    vectors: list[dict[str, Any]] = document["vectors"]
    return vectors


def test_every_vector_in_chromium(site: Site) -> None:
    vectors = load_vectors()
    names = [v["name"] for v in vectors]
    assert len(set(names)) == len(names), "vector names must be unique"

    results: dict[str, Any] = open_page(site).evaluate(CHECK_VECTORS_JS, vectors)

    assert sorted(results) == sorted(names)
    failures = []
    for v in vectors:
        name, result = v["name"], results[v["name"]]
        if v.get("kind") not in KINDS:
            failures.append(f"{name}: unknown kind {v.get('kind')!r} (known: {sorted(KINDS)})")
        elif "error" in result:
            failures.append(f"{name}: {result['error']}")
        else:
            if result["output"] != v["output"]:
                expected = json.dumps(v["output"], indent=1, ensure_ascii=False)
                actual = json.dumps(result["output"], indent=1, ensure_ascii=False)
                failures.append(f"{name} ({v['kind']}): expected\n{expected}\ngot\n{actual}")
            failures.extend(f"{name}: {problem}" for problem in result["problems"])
    assert not failures, "\n".join(failures)


def test_round_trips_in_chromium(site: Site) -> None:
    problems: list[str] = open_page(site).evaluate(ROUND_TRIPS_JS, load_vectors())
    assert problems == []


def test_python_opens_what_chromium_made(site: Site) -> None:
    made: dict[str, Any] = open_page(site).evaluate(MADE_IN_BROWSER_JS)
    user, aik_seed, hk_secret = made["user"], d(made["aik_seed"]), d(made["hk_secret"])

    message = made["message"]
    for keys in (
        {
            "my_device_id": message["reader_device"],
            "my_box_secret": d(message["reader_box_secret"]),
            "sender_box_pub": message["sender_box_pub"],
        },
        {"my_user_id": user, "hk_secret": hk_secret},
    ):
        result = c.decrypt_message(message["envelope"], message["conversation"], **keys)
        assert result.verified, result.error
        assert result.payload_bytes == message["payload_text"].encode("utf-8")
        # Python's own serializer writes the same bytes for what it read.
        assert result.payload is not None
        assert c.serialize_payload(result.payload) == result.payload_bytes
        assert list(result.payload["ordered"]) == ["b", "1"]
        assert result.payload["numbers"][-1] == 2**64

    raw, passphrase = made["raw_backup"], made["passphrase_backup"]
    assert c.restore_backup_with_recovery_code(raw["blob"], user, raw["code"]) == (
        aik_seed,
        hk_secret,
    )
    assert c.restore_backup_with_passphrase(passphrase["blob"], user, passphrase["passphrase"]) == (
        aik_seed,
        hk_secret,
    )

    device = made["device"]
    aik_pub = made["aik_pub"]
    assert c.ed25519_public_key(aik_seed) == d(aik_pub)
    assert c.verify_device_certificate(
        aik_pub,
        user,
        device["id"],
        device["sign_pub"],
        device["box_pub"],
        device["created_at"],
        device["certificate"],
    )
    assert c.verify_history_key_certificate(
        aik_pub, user, c.x25519_public_key(hk_secret), device["hk_certificate"]
    )
    assert c.safety_number(aik_pub, user) == device["safety_number"]

    attachment = made["attachment"]
    plaintext = c.decrypt_attachment(d(attachment["ciphertext"]), attachment["meta"])
    assert "header" in attachment["meta"]
    assert c.b64u_encode(c.sha256(plaintext)) == attachment["data_sha256"]

    signaling = made["signaling"]
    reader_secret = d(message["reader_box_secret"])
    opened = c.open_from_device(signaling["boxed"], message["sender_box_pub"], reader_secret)
    assert opened == d(signaling["plaintext"])
    assert SealedBox(PrivateKey(reader_secret)).decrypt(d(signaling["sealed"])) == opened
    assert c.open_link_bundle(made["link_bundle"], reader_secret) == (aik_seed, hk_secret)
