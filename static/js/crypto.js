/**
 * The cryptography of Parley protocol v1 (docs/PROTOCOL.md) for the browser.
 *
 * A port of the Python reference, clients/python/parley_client/crypto.py, on the
 * same library (libsodium, through libsodium-wrappers-sumo): every construction
 * gives the same bytes, checked against clients/python/parley_client/vectors.json
 * by tests/browser/test_crypto_vectors.py.
 *
 * Conventions (the Python module's, in camelCase):
 * - Bytes are `Uint8Array`. Binary values travel as unpadded base64url ("b64u");
 *   where a value usually arrives from the wire (public keys, signatures, wraps)
 *   a function takes its b64u string as well.
 * - Ids are UUID strings, written lower-case into every signing input and
 *   associated data; anything else is refused.
 * - Functions that build something throw an `Error` on bad arguments. Functions
 *   that check something received (`verify*`, `decryptMessage`) never throw: they
 *   answer false / an unverified result. Functions that open something the user
 *   asked for (backup, attachment, signaling box) throw a `DecryptionError`.
 * - Randomness is libsodium's. Random values can be injected through options,
 *   which only the test vectors should do.
 *
 * Call `await ready()` once before anything else.
 */

import sodium from "../vendor/libsodium-wrappers.mjs";

// ------------------------------------------------------------------ constants

// Labels (first line of each signing input / associated data).
export const DEVICE_LABEL = "parley/device/v1";
export const HISTORY_KEY_LABEL = "parley/history-key/v1";
export const BACKUP_LABEL = "parley/backup/v1";
export const MESSAGE_LABEL = "parley/msg/v1";
export const FRANKING_LABEL = "parley/frank/v1";
export const LINK_LABEL = "parley/link/v1";
export const LINK_CODE_LABEL = "parley/link-code/v1";
/** The safety number's mac key is the 16 ASCII bytes of this text. */
export const SAFETY_MAC_KEY = "parley/safety/v1";

// Sizes.
export const KEY_BYTES = 32;
export const PUBLIC_KEY_BYTES = 32;
export const SIGNATURE_BYTES = 64;
export const NONCE_BYTES = 24; // box and XChaCha20-Poly1305 alike
export const MAC_BYTES = 16;
export const WRAP_BYTES = NONCE_BYTES + KEY_BYTES + MAC_BYTES; // n_d || box(K): 72
export const SEAL_OVERHEAD_BYTES = 48; // ephemeral public key + MAC
export const SEALED_KEY_BYTES = SEAL_OVERHEAD_BYTES + KEY_BYTES; // seal(K): 80
export const TAG_BYTES = 32; // franking tag, mac output
export const SALT_BYTES = 16;
export const MAX_MESSAGE_CIPHERTEXT_BYTES = 64 * 1024;

// Safety numbers.
export const SAFETY_NUMBER_DIGITS = 30;

// Backup.
export const KDF_RAW = "raw";
export const KDF_ARGON2ID = "argon2id";
export const MIN_PASSPHRASE_CHARS = 16;
export const DEFAULT_OPSLIMIT = 2; // libsodium's OPSLIMIT_INTERACTIVE
export const DEFAULT_MEMLIMIT = 64 * 1024 * 1024; // MEMLIMIT_INTERACTIVE
// What the server accepts for a new backup (accounts/serializers.py).
export const SERVER_MIN_OPSLIMIT = 2;
export const SERVER_MAX_OPSLIMIT = 64;
export const SERVER_MIN_MEMLIMIT = 64 * 1024 * 1024;
export const SERVER_MAX_MEMLIMIT = 1024 * 1024 * 1024;
// Restoring accepts anything libsodium accepts, up to the server's maximum, so a
// hostile server cannot make a restoring device burn unbounded memory or time.
export const RESTORE_MIN_OPSLIMIT = 1; // OPSLIMIT_MIN
export const RESTORE_MIN_MEMLIMIT = 8192; // MEMLIMIT_MIN

// Recovery code: Crockford base32 of key || check, in groups of 4.
export const CROCKFORD_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
export const RECOVERY_CHECK_BYTES = 3;
export const RECOVERY_CODE_CHARS = ((KEY_BYTES + RECOVERY_CHECK_BYTES) * 8) / 5; // 56
export const RECOVERY_GROUP = 4;

// Attachments.
export const ATTACHMENT_AEAD_MAX_BYTES = 1024 * 1024; // up to 1 MiB: one aead
export const ATTACHMENT_CHUNK_BYTES = 64 * 1024; // past it: secretstream, 64 KiB chunks
export const SECRETSTREAM_ABYTES = 17;
export const SECRETSTREAM_HEADER_BYTES = 24;
export const TAG_MESSAGE = 0;
export const TAG_FINAL = 3;

// Device linking.
export const LINK_NONCE_BYTES = 32;
export const LINK_CODE_DIGITS = 6;
export const MAX_LINK_BUNDLE_BYTES = 1024; // what the server accepts

const ATTACHMENT_AD = new Uint8Array(0); // no associated data: every attachment key is fresh

// -------------------------------------------------------------------- errors

/** Base class of every error this module throws on purpose about crypto. */
export class ParleyCryptoError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** Something could not be opened: wrong key, or altered or truncated data. */
export class DecryptionError extends ParleyCryptoError {}

/** The backup did not open: wrong recovery key or passphrase, or altered data. */
export class BackupRestoreError extends DecryptionError {}

/** The attachment ciphertext does not match its metadata or does not open. */
export class AttachmentError extends DecryptionError {}

/** A link bundle did not open with this device's box key, or its content is malformed. */
export class LinkBundleError extends DecryptionError {}

/** A recovery code is not well formed, or its check characters do not match. */
export class RecoveryCodeError extends ParleyCryptoError {}

/** A new backup passphrase is too short. */
export class WeakPassphraseError extends ParleyCryptoError {}

/** A message ciphertext would exceed the server's 64 KiB limit. */
export class MessageTooLargeError extends ParleyCryptoError {}

// ----------------------------------------------------------------- bootstrap

/**
 * Load libsodium. Await once before calling anything else of this module.
 * @returns {Promise<void>}
 */
export async function ready() {
  await sodium.ready;
  // The sizes above are written out so the module can load before libsodium;
  // make sure they are libsodium's.
  const expected = [
    [SALT_BYTES, sodium.crypto_pwhash_SALTBYTES],
    [DEFAULT_OPSLIMIT, sodium.crypto_pwhash_OPSLIMIT_INTERACTIVE],
    [DEFAULT_MEMLIMIT, sodium.crypto_pwhash_MEMLIMIT_INTERACTIVE],
    [RESTORE_MIN_OPSLIMIT, sodium.crypto_pwhash_OPSLIMIT_MIN],
    [RESTORE_MIN_MEMLIMIT, sodium.crypto_pwhash_MEMLIMIT_MIN],
    [SECRETSTREAM_ABYTES, sodium.crypto_secretstream_xchacha20poly1305_ABYTES],
    [SECRETSTREAM_HEADER_BYTES, sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES],
    [TAG_MESSAGE, sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE],
    [TAG_FINAL, sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL],
    [SEAL_OVERHEAD_BYTES, sodium.crypto_box_SEALBYTES],
  ];
  if (expected.some(([ours, theirs]) => ours !== theirs)) {
    throw new Error("libsodium's constants differ from the protocol's");
  }
}

// ----------------------------------------------------------------- encodings

const B64U_TEXT = /^[A-Za-z0-9_-]*$/;
// A lone UTF-16 surrogate (in "u" mode a valid pair is one code point, never matched).
const LONE_SURROGATE = /\p{Surrogate}/u;
const ASCII = /^[\x00-\x7f]*$/;
// Python's str.isspace(), which parse_recovery_code uses (JavaScript's \s differs).
const PYTHON_SPACE = /^[\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$/;
const UUID_HEX = /^[0-9a-fA-F]{32}$/;

// Strict UTF-8, and a BOM kept as U+FEFF, like Python's bytes.decode("utf-8").
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

/**
 * Encode bytes as base64url without padding.
 * @param {Uint8Array} bytes
 * @returns {string}
 */
export function b64uEncode(bytes) {
  const data = bytesArg(bytes, "data");
  let binary = "";
  for (let i = 0; i < data.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, data.subarray(i, i + 0x8000));
  }
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * Decode unpadded base64url strictly, like Python's b64u_decode: padding, "+",
 * "/", any character outside the alphabet, an impossible length and a
 * non-canonical spelling (non-zero unused low bits) are refused.
 * @param {string} text
 * @returns {Uint8Array}
 */
export function b64uDecode(text) {
  if (typeof text !== "string" || !B64U_TEXT.test(text) || text.length % 4 === 1) {
    throw new Error("not unpadded base64url");
  }
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  const data = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) data[i] = binary.charCodeAt(i);
  // atob ignores non-zero unused bits: one value must have exactly one spelling.
  if (b64uEncode(data) !== text) throw new Error("not canonical base64url");
  return data;
}

/**
 * Text as UTF-8 bytes; throws on a lone surrogate (which Python cannot encode
 * either) instead of writing U+FFFD.
 * @param {string} text
 * @returns {Uint8Array}
 */
export function utf8(text) {
  if (typeof text !== "string") throw new Error("expected text");
  if (LONE_SURROGATE.test(text)) throw new Error("text with a lone surrogate is not UTF-8");
  return utf8Encoder.encode(text);
}

/**
 * Strict UTF-8 bytes to text; throws on invalid UTF-8.
 * @param {Uint8Array} bytes
 * @returns {string}
 */
export function utf8Decode(bytes) {
  return utf8Decoder.decode(bytesArg(bytes, "data"));
}

/**
 * `n` random bytes from the platform's CSPRNG, libsodium-js's own source (its
 * randombytes_buf asks it for 4 bytes at a time: seconds per megabyte).
 * @param {number} n
 * @returns {Uint8Array}
 */
export function randomBytes(n) {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error("a byte count is a non-negative integer");
  const out = new Uint8Array(n);
  // getRandomValues fills at most 64 KiB per call.
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/**
 * A fresh random (version 4) UUID, lower-case.
 * @returns {string}
 */
export function uuid4() {
  const b = randomBytes(16);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return formatUuid(sodium.to_hex(b));
}

function formatUuid(hex) {
  return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)]
    .join("-");
}

/**
 * A signing input: ASCII lines joined with "\n", no trailing newline, the label
 * first, integers in decimal. Throws if a line contains "\n" or is not ASCII.
 * @param {string} label
 * @param {...(string|number|bigint)} fields strings or non-negative integers
 * @returns {Uint8Array}
 */
export function signingInput(label, ...fields) {
  const lines = [label];
  for (const item of fields) {
    if (typeof item === "string") lines.push(item);
    else if (isNonNegativeInteger(item)) lines.push(String(item));
    else throw new Error("a signing input field is a string or a non-negative integer");
  }
  for (const line of lines) {
    if (typeof line !== "string") throw new Error("a signing input label is a string");
    if (line.includes("\n")) throw new Error("a signing input field may not contain a newline");
    if (!ASCII.test(line)) throw new Error("a signing input is ASCII");
  }
  return utf8(lines.join("\n"));
}

/**
 * The canonical lower-case UUID string of an id; throws if it is none. Accepts
 * the spellings Python's uuid.UUID() reads in practice: upper case, no hyphens,
 * braces, a "urn:uuid:" prefix.
 * @param {string} id
 * @returns {string}
 */
export function canonicalId(id) {
  if (typeof id !== "string") throw new Error("an id is a UUID string");
  const hex = id
    .replaceAll("urn:", "")
    .replaceAll("uuid:", "")
    .replace(/^[{}]+|[{}]+$/g, "")
    .replaceAll("-", "");
  if (!UUID_HEX.test(hex)) throw new Error(`not a UUID: ${JSON.stringify(id)}`);
  return formatUuid(hex.toLowerCase());
}

/**
 * Keyed BLAKE2b-256: libsodium's crypto_generichash(32, data, key).
 * @param {Uint8Array} key
 * @param {Uint8Array} data
 * @returns {Uint8Array} 32 bytes
 */
export function mac(key, data) {
  return sodium.crypto_generichash(TAG_BYTES, bytesArg(data, "data"), bytesArg(key, "mac key"));
}

/**
 * SHA-256.
 * @param {Uint8Array} data
 * @returns {Uint8Array} 32 bytes
 */
export function sha256(data) {
  return sodium.crypto_hash_sha256(bytesArg(data, "data"));
}

/**
 * Constant-time comparison (sodium.memcmp); false for different lengths.
 * @param {Uint8Array} a
 * @param {Uint8Array} b
 * @returns {boolean}
 */
export function equalBytes(a, b) {
  bytesArg(a, "a");
  bytesArg(b, "b");
  return a.length === b.length && sodium.memcmp(a, b);
}

// ------------------------------------------------------------ small helpers

/** Not undefined or null (Python's `is not None`). */
function given(value) {
  return value !== undefined && value !== null;
}

function isNonNegativeInteger(value) {
  return (
    (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) ||
    (typeof value === "bigint" && value >= 0n)
  );
}

function isPlainObject(value) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Entries of a plain object or a Map (the JS stand-ins for Python's Mapping). */
function entriesOf(mapping, what) {
  if (mapping instanceof Map) return [...mapping.entries()];
  if (isPlainObject(mapping)) return Object.entries(mapping);
  throw new Error(`${what} must be an object mapping ids to values`);
}

function bytesArg(value, what) {
  if (!(value instanceof Uint8Array)) throw new Error(`${what} must be a Uint8Array`);
  return value;
}

/** Bytes from a Uint8Array or a b64u string, checking the length (Python's _as_bytes). */
function asBytes(value, length, what) {
  let data;
  if (typeof value === "string") data = b64uDecode(value);
  else if (value instanceof Uint8Array) data = value;
  else throw new Error(`${what} must be bytes or a base64url string`);
  if (length !== null && data.length !== length) {
    throw new Error(`${what} must be ${length} bytes, not ${data.length}`);
  }
  return data;
}

function randomOr(value, length, what) {
  return given(value) ? asBytes(value, length, what) : randomBytes(length);
}

function timestamp(value, what) {
  if (!isNonNegativeInteger(value)) throw new Error(`${what} must be a non-negative integer`);
  return value;
}

function concatBytes(...parts) {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function aeadEncrypt(plaintext, ad, nonce, key) {
  return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, null, nonce, key);
}

/** Open an aead ciphertext; DecryptionError if it does not authenticate. */
function aeadDecrypt(ciphertext, ad, nonce, key) {
  try {
    return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(null, ciphertext, ad, nonce, key);
  } catch {
    throw new DecryptionError("ciphertext did not authenticate");
  }
}

/** n || crypto_box_easy(plaintext, n, pub, secret), like PyNaCl's Box.encrypt. */
function boxWithNonce(plaintext, recipientPub, senderSecret, nonce) {
  return concatBytes(nonce, sodium.crypto_box_easy(plaintext, nonce, recipientPub, senderSecret));
}

/** Open n || box; throws (any error) on failure. */
function openBoxWithNonce(data, senderPub, mySecret) {
  return sodium.crypto_box_open_easy(
    data.subarray(NONCE_BYTES),
    data.subarray(0, NONCE_BYTES),
    senderPub,
    mySecret,
  );
}

// ---------------------------------------------------------------------- keys

/**
 * The Ed25519 public key of a 32-byte seed.
 * @param {Uint8Array|string} seed
 * @returns {Uint8Array}
 */
export function ed25519PublicKey(seed) {
  return sodium.crypto_sign_seed_keypair(asBytes(seed, KEY_BYTES, "seed")).publicKey;
}

/**
 * The X25519 public key of a 32-byte secret key.
 * @param {Uint8Array|string} secret
 * @returns {Uint8Array}
 */
export function x25519PublicKey(secret) {
  return sodium.crypto_scalarmult_base(asBytes(secret, KEY_BYTES, "secret key"));
}

/**
 * The account identity key (AIK) of a seed.
 * @param {Uint8Array|string} seed 32 bytes
 * @returns {{seed: Uint8Array, publicKey: Uint8Array, sign: (message: Uint8Array) => Uint8Array}}
 */
export function identityKeyFromSeed(seed) {
  const copy = Uint8Array.from(asBytes(seed, KEY_BYTES, "AIK seed"));
  // libsodium's Ed25519 secret key is 64 bytes: seed || public key.
  const { publicKey, privateKey } = sodium.crypto_sign_seed_keypair(copy);
  return Object.freeze({
    seed: copy,
    publicKey,
    sign: (message) => sodium.crypto_sign_detached(bytesArg(message, "message"), privateKey),
  });
}

/**
 * A fresh random AIK.
 * @returns {ReturnType<typeof identityKeyFromSeed>}
 */
export function generateIdentityKey() {
  return identityKeyFromSeed(randomBytes(KEY_BYTES));
}

/**
 * One device's keys (plain data, storable in IndexedDB).
 * @param {{deviceId: string, signSeed: Uint8Array|string, boxSecret: Uint8Array|string,
 *   createdAt: number}} fields
 * @returns {{deviceId: string, signSeed: Uint8Array, boxSecret: Uint8Array, createdAt: number,
 *   signPublic: Uint8Array, boxPublic: Uint8Array}}
 */
export function deviceKeysFrom({ deviceId, signSeed, boxSecret, createdAt }) {
  const sign = Uint8Array.from(asBytes(signSeed, KEY_BYTES, "device signing seed"));
  const box = Uint8Array.from(asBytes(boxSecret, KEY_BYTES, "device box secret"));
  return {
    deviceId: canonicalId(deviceId),
    signSeed: sign,
    boxSecret: box,
    createdAt: timestamp(createdAt, "createdAt"),
    signPublic: ed25519PublicKey(sign),
    boxPublic: x25519PublicKey(box),
  };
}

/**
 * Fresh device keys; deviceId defaults to a uuid4, createdAt to now (unix seconds).
 * @param {{deviceId?: string, createdAt?: number}} [options]
 */
export function generateDeviceKeys({ deviceId, createdAt } = {}) {
  return deviceKeysFrom({
    deviceId: deviceId ?? uuid4(),
    signSeed: randomBytes(KEY_BYTES),
    boxSecret: randomBytes(KEY_BYTES),
    createdAt: createdAt ?? Math.floor(Date.now() / 1000),
  });
}

/**
 * The history key (HK) of a secret.
 * @param {Uint8Array|string} secret 32 bytes
 * @returns {{secret: Uint8Array, publicKey: Uint8Array}}
 */
export function historyKeyFrom(secret) {
  const copy = Uint8Array.from(asBytes(secret, KEY_BYTES, "history key secret"));
  return { secret: copy, publicKey: x25519PublicKey(copy) };
}

/** A fresh random history key. */
export function generateHistoryKey() {
  return historyKeyFrom(randomBytes(KEY_BYTES));
}

// -------------------------------------------------------------- certificates

/**
 * `parley/device/v1\n{user_id}\n{device_id}\n{sign_pub}\n{box_pub}\n{created_at}`.
 * @returns {Uint8Array}
 */
export function deviceCertificateInput(userId, deviceId, signPub, boxPub, createdAt) {
  return signingInput(
    DEVICE_LABEL,
    canonicalId(userId),
    canonicalId(deviceId),
    b64uEncode(asBytes(signPub, PUBLIC_KEY_BYTES, "device signing key")),
    b64uEncode(asBytes(boxPub, PUBLIC_KEY_BYTES, "device box key")),
    timestamp(createdAt, "createdAt"),
  );
}

/**
 * The AIK's 64-byte signature certifying a device.
 * @param {Uint8Array|string} aikSeed
 * @returns {Uint8Array}
 */
export function deviceCertificate(aikSeed, userId, deviceId, signPub, boxPub, createdAt) {
  const message = deviceCertificateInput(userId, deviceId, signPub, boxPub, createdAt);
  return identityKeyFromSeed(aikSeed).sign(message);
}

/**
 * Whether `signature` is a valid Ed25519 signature of `message`; never throws.
 * The public key must be a curve point not of small order (as the server checks).
 * @param {Uint8Array|string} publicKey
 * @param {Uint8Array} message
 * @param {Uint8Array|string} signature
 * @returns {boolean}
 */
export function verifySignature(publicKey, message, signature) {
  try {
    const key = asBytes(publicKey, PUBLIC_KEY_BYTES, "public key");
    const sig = asBytes(signature, SIGNATURE_BYTES, "signature");
    if (!sodium.crypto_core_ed25519_is_valid_point(key)) return false;
    return sodium.crypto_sign_verify_detached(sig, bytesArg(message, "message"), key) === true;
  } catch {
    return false;
  }
}

/**
 * Whether a device certificate verifies under `aikPub`; never throws.
 * @returns {boolean}
 */
export function verifyDeviceCertificate(
  aikPub, userId, deviceId, signPub, boxPub, createdAt, certificate,
) {
  let message;
  try {
    message = deviceCertificateInput(userId, deviceId, signPub, boxPub, createdAt);
  } catch {
    return false;
  }
  return verifySignature(aikPub, message, certificate);
}

/**
 * `parley/history-key/v1\n{user_id}\n{hk_pub}`.
 * @returns {Uint8Array}
 */
export function historyKeyCertificateInput(userId, hkPub) {
  return signingInput(
    HISTORY_KEY_LABEL,
    canonicalId(userId),
    b64uEncode(asBytes(hkPub, PUBLIC_KEY_BYTES, "history key")),
  );
}

/**
 * The AIK's 64-byte signature certifying the history key.
 * @returns {Uint8Array}
 */
export function historyKeyCertificate(aikSeed, userId, hkPub) {
  return identityKeyFromSeed(aikSeed).sign(historyKeyCertificateInput(userId, hkPub));
}

/**
 * Whether a history key certificate verifies under `aikPub`; never throws.
 * @returns {boolean}
 */
export function verifyHistoryKeyCertificate(aikPub, userId, hkPub, certificate) {
  let message;
  try {
    message = historyKeyCertificateInput(userId, hkPub);
  } catch {
    return false;
  }
  return verifySignature(aikPub, message, certificate);
}

// ------------------------------------------------------------ safety numbers

/**
 * A user's 30-digit safety number: mac(key = "parley/safety/v1", aik_pub || user_id);
 * the first 30 bytes as six 5-byte big-endian integers, each mod 100000, 5 digits.
 * @param {Uint8Array|string} aikPub
 * @param {string} userId
 * @returns {string}
 */
export function safetyNumber(aikPub, userId) {
  const data = concatBytes(
    asBytes(aikPub, PUBLIC_KEY_BYTES, "AIK"),
    utf8(canonicalId(userId)),
  );
  const digest = mac(utf8(SAFETY_MAC_KEY), data);
  let digits = "";
  for (let i = 0; i < SAFETY_NUMBER_DIGITS; i += 5) {
    let value = 0; // 40 bits: exact in a double
    for (let j = i; j < i + 5; j++) value = value * 256 + digest[j];
    digits += String(value % 100000).padStart(5, "0");
  }
  return digits;
}

/**
 * The 60-digit safety number of a pair: both 30-digit numbers, the lower first.
 * @param {string} a
 * @param {string} b
 * @returns {string}
 */
export function pairSafetyNumber(a, b) {
  for (const number of [a, b]) {
    if (typeof number !== "string" || !/^[0-9]{30}$/.test(number)) {
      throw new Error("a safety number is 30 digits");
    }
  }
  return a < b ? a + b : b + a;
}

/**
 * Digits in groups of 5 separated by spaces (a pair's number: 12 groups).
 * @param {string} digits
 * @returns {string}
 */
export function formatSafetyNumber(digits) {
  if (typeof digits !== "string" || !/^(?:[0-9]{5})+$/.test(digits)) {
    throw new Error("a safety number is a multiple of 5 digits");
  }
  return digits.match(/.{5}/g).join(" ");
}

// -------------------------------------------------------------------- backup

/**
 * A fresh recovery key: 32 random bytes, used directly as the backup secret.
 * @returns {Uint8Array}
 */
export function newRecoveryKey() {
  return randomBytes(KEY_BYTES);
}

/**
 * The 3 check bytes of a recovery code: the first bytes of BLAKE2b-256(key).
 * @param {Uint8Array} key
 * @returns {Uint8Array}
 */
export function recoveryCheck(key) {
  return sodium.crypto_generichash(32, bytesArg(key, "key"), null).slice(0, RECOVERY_CHECK_BYTES);
}

/**
 * The recovery key as a code to write down: key || check (35 bytes) in Crockford
 * base32, most significant bits first, 56 characters in 14 groups of 4 joined by "-".
 * @param {Uint8Array|string} key
 * @returns {string}
 */
export function formatRecoveryCode(key) {
  const data = asBytes(key, KEY_BYTES, "recovery key");
  let number = BigInt(`0x${sodium.to_hex(concatBytes(data, recoveryCheck(data)))}`);
  const chars = new Array(RECOVERY_CODE_CHARS);
  for (let i = RECOVERY_CODE_CHARS - 1; i >= 0; i--) {
    chars[i] = CROCKFORD_ALPHABET[Number(number & 31n)];
    number >>= 5n;
  }
  const groups = [];
  for (let i = 0; i < chars.length; i += RECOVERY_GROUP) {
    groups.push(chars.slice(i, i + RECOVERY_GROUP).join(""));
  }
  return groups.join("-");
}

/**
 * The 32-byte recovery key of a code as typed by a person. Tolerates lower case,
 * whitespace and dashes anywhere, reads O as 0 and I, L as 1; throws a
 * RecoveryCodeError on a wrong length, a foreign character or a typo (check).
 * @param {string} code
 * @returns {Uint8Array}
 */
export function parseRecoveryCode(code) {
  if (typeof code !== "string") throw new RecoveryCodeError("a recovery code is text");
  let kept = "";
  for (const ch of code) if (!PYTHON_SPACE.test(ch) && ch !== "-") kept += ch;
  const cleaned = [...kept.toUpperCase().replace(/O/g, "0").replace(/[IL]/g, "1")];
  if (cleaned.length !== RECOVERY_CODE_CHARS) {
    throw new RecoveryCodeError(
      `a recovery code has ${RECOVERY_CODE_CHARS} characters, this one has ${cleaned.length}`,
    );
  }
  let number = 0n;
  for (const ch of cleaned) {
    const index = CROCKFORD_ALPHABET.indexOf(ch);
    if (index < 0) {
      throw new RecoveryCodeError(`${JSON.stringify(ch)} is not a recovery code character`);
    }
    number = (number << 5n) | BigInt(index);
  }
  const hex = number.toString(16).padStart((KEY_BYTES + RECOVERY_CHECK_BYTES) * 2, "0");
  const data = sodium.from_hex(hex);
  const key = data.slice(0, KEY_BYTES);
  if (!equalBytes(data.slice(KEY_BYTES), recoveryCheck(key))) {
    throw new RecoveryCodeError("this recovery code has a typo");
  }
  return key;
}

/**
 * The bytes fed to Argon2id: the passphrase in Unicode NFC, UTF-8 encoded.
 * @param {string} passphrase
 * @returns {Uint8Array}
 */
export function normalizePassphrase(passphrase) {
  if (typeof passphrase !== "string") throw new Error("a passphrase is text");
  return utf8(passphrase.normalize("NFC"));
}

/**
 * Refuse a new passphrase shorter than 16 characters (code points, after NFC): the
 * server keeps the backup and could try guesses offline. Throws WeakPassphraseError.
 * @param {string} passphrase
 */
export function checkPassphrase(passphrase) {
  if (typeof passphrase !== "string") throw new WeakPassphraseError("a passphrase is text");
  if ([...passphrase.normalize("NFC")].length < MIN_PASSPHRASE_CHARS) {
    throw new WeakPassphraseError(
      `a backup passphrase needs at least ${MIN_PASSPHRASE_CHARS} characters`,
    );
  }
}

/** The raw KDF: the backup secret is a recovery key. */
export const RAW_KDF = Object.freeze({ kdf: KDF_RAW, salt: null, opslimit: null, memlimit: null });

/**
 * Checked backup KDF parameters, like Python's BackupKdf: `raw` has no parameter;
 * `argon2id` has a 16-byte salt and limits within the restore bounds.
 * @param {{kdf: string, salt?: Uint8Array|string|null, opslimit?: number|null,
 *   memlimit?: number|null}} fields
 * @returns {{kdf: string, salt: Uint8Array|null, opslimit: number|null, memlimit: number|null}}
 */
export function backupKdf({ kdf, salt = null, opslimit = null, memlimit = null }) {
  if (kdf === KDF_RAW) {
    if (salt !== null || opslimit !== null || memlimit !== null) {
      throw new Error("a raw backup has no salt, opslimit or memlimit");
    }
    return RAW_KDF;
  }
  if (kdf !== KDF_ARGON2ID) throw new Error(`unknown backup kdf ${JSON.stringify(kdf)}`);
  if (salt === null || opslimit === null || memlimit === null) {
    throw new Error("an argon2id backup needs salt, opslimit and memlimit");
  }
  checkLimits(opslimit, memlimit);
  return Object.freeze({ kdf, salt: asBytes(salt, SALT_BYTES, "salt"), opslimit, memlimit });
}

function checkLimits(opslimit, memlimit) {
  for (const [name, value, low, high] of [
    ["opslimit", opslimit, RESTORE_MIN_OPSLIMIT, SERVER_MAX_OPSLIMIT],
    ["memlimit", memlimit, RESTORE_MIN_MEMLIMIT, SERVER_MAX_MEMLIMIT],
  ]) {
    if (!Number.isSafeInteger(value)) throw new Error(`${name} is an integer`);
    if (value < low || value > high) throw new Error(`${name} must be between ${low} and ${high}`);
  }
}

/**
 * The KDF parameters stored with a backup blob; throws if malformed.
 * @param {object} blob
 */
export function backupKdfFromBlob(blob) {
  if (!isPlainObject(blob)) throw new Error("a backup blob is an object");
  return backupKdf({
    kdf: blob.kdf ?? "",
    salt: blob.salt ?? null,
    opslimit: blob.opslimit ?? null,
    memlimit: blob.memlimit ?? null,
  });
}

/**
 * Argon2id, synchronously: crypto_pwhash(32, password, salt, opslimit, memlimit,
 * ALG_ARGON2ID13). Blocks for as long as it takes: a page calls the async
 * functions below, which run this in pwhash-worker.js.
 * @param {string|Uint8Array} passphrase text (normalized here) or NFC UTF-8 bytes
 * @param {Uint8Array|string} salt 16 bytes
 * @param {number} opslimit within RESTORE_MIN_OPSLIMIT..SERVER_MAX_OPSLIMIT
 * @param {number} memlimit within RESTORE_MIN_MEMLIMIT..SERVER_MAX_MEMLIMIT
 * @returns {Uint8Array} 32 bytes
 */
export function deriveKeyFromPassphrase(passphrase, salt, opslimit, memlimit) {
  const password = typeof passphrase === "string"
    ? normalizePassphrase(passphrase)
    : bytesArg(passphrase, "passphrase");
  checkLimits(opslimit, memlimit);
  return sodium.crypto_pwhash(
    KEY_BYTES,
    password,
    asBytes(salt, SALT_BYTES, "salt"),
    opslimit,
    memlimit,
    sodium.crypto_pwhash_ALG_ARGON2ID13,
  );
}

/** Run Argon2id in a module Web Worker (pwhash-worker.js), so the page never freezes. */
function pwhashInWorker(password, salt, opslimit, memlimit) {
  return new Promise((resolve, reject) => {
    // One worker per derivation: terminating it frees the WASM memory Argon2id grew.
    const worker = new Worker(new URL("./pwhash-worker.js", import.meta.url), { type: "module" });
    const finish = (error, key) => {
      worker.terminate();
      if (error) reject(error);
      else resolve(key);
    };
    worker.onmessage = ({ data }) => {
      if (data && data.key instanceof Uint8Array) finish(null, data.key);
      else finish(new Error(`key derivation failed: ${data?.error ?? "no answer"}`));
    };
    worker.onerror = (event) => {
      event.preventDefault();
      finish(new Error(`the key derivation worker failed: ${event.message ?? "cannot load"}`));
    };
    worker.onmessageerror = () => finish(new Error("unreadable answer from the worker"));
    // The password bytes are ours (from normalizePassphrase): hand them over
    // rather than leave a copy on the page.
    worker.postMessage({ password, salt, opslimit, memlimit }, [password.buffer]);
  });
}

/**
 * Argon2id(passphrase) under the parameters of an argon2id `kdf`, in a Web Worker:
 * the 32-byte backup secret. No length check (restoring must work with the
 * passphrase the user has); new passphrases go through passphraseBackupKdf.
 * @param {string} passphrase
 * @param {object} kdf see backupKdf
 * @returns {Promise<Uint8Array>}
 */
export async function deriveBackupSecret(passphrase, kdf) {
  const checked = backupKdf(kdf);
  if (checked.kdf !== KDF_ARGON2ID) {
    throw new Error("only an argon2id backup is derived from a passphrase");
  }
  const password = normalizePassphrase(passphrase);
  return pwhashInWorker(password, checked.salt, checked.opslimit, checked.memlimit);
}

/**
 * For a new passphrase backup: the backup secret and its KDF parameters (Argon2id
 * in a Web Worker). Refuses a short passphrase (WeakPassphraseError) and limits
 * the server would refuse. Defaults to libsodium's interactive limits.
 * @param {string} passphrase
 * @param {{opslimit?: number, memlimit?: number, salt?: Uint8Array}} [options]
 * @returns {Promise<{secret: Uint8Array, kdf: object}>}
 */
export async function passphraseBackupKdf(
  passphrase, { opslimit = DEFAULT_OPSLIMIT, memlimit = DEFAULT_MEMLIMIT, salt } = {},
) {
  checkPassphrase(passphrase);
  if (!(opslimit >= SERVER_MIN_OPSLIMIT && opslimit <= SERVER_MAX_OPSLIMIT)) {
    throw new Error(`opslimit must be ${SERVER_MIN_OPSLIMIT}..${SERVER_MAX_OPSLIMIT}`);
  }
  if (!(memlimit >= SERVER_MIN_MEMLIMIT && memlimit <= SERVER_MAX_MEMLIMIT)) {
    throw new Error(`memlimit must be ${SERVER_MIN_MEMLIMIT}..${SERVER_MAX_MEMLIMIT}`);
  }
  const kdf = backupKdf({
    kdf: KDF_ARGON2ID,
    salt: randomOr(salt, SALT_BYTES, "salt"),
    opslimit,
    memlimit,
  });
  return { secret: await deriveBackupSecret(passphrase, kdf), kdf };
}

/**
 * `parley/backup/v1\n{user_id}`: the backup's associated data.
 * @returns {Uint8Array}
 */
export function backupAd(userId) {
  return signingInput(BACKUP_LABEL, canonicalId(userId));
}

/**
 * `{"aik_seed":"<b64u>","hk_secret":"<b64u>"}`, compact, UTF-8.
 * @returns {Uint8Array}
 */
export function backupPlaintext(aikSeed, hkSecret) {
  return utf8(
    JSON.stringify({
      aik_seed: b64uEncode(asBytes(aikSeed, KEY_BYTES, "AIK seed")),
      hk_secret: b64uEncode(asBytes(hkSecret, KEY_BYTES, "history key secret")),
    }),
  );
}

/**
 * The backup blob to store on the server (PUT as is): `{nonce, ciphertext, kdf,
 * salt, opslimit, memlimit}`, b64u strings and integers, null where the raw KDF
 * has no parameter.
 * @param {Uint8Array|string} aikSeed
 * @param {Uint8Array|string} hkSecret
 * @param {string} userId
 * @param {Uint8Array|string} secret the recovery key (raw) or the Argon2id output for kdf
 * @param {object} [kdf] see backupKdf; RAW_KDF by default
 * @param {{nonce?: Uint8Array}} [options]
 * @returns {{nonce: string, ciphertext: string, kdf: string, salt: string|null,
 *   opslimit: number|null, memlimit: number|null}}
 */
export function makeBackup(aikSeed, hkSecret, userId, secret, kdf = RAW_KDF, { nonce } = {}) {
  const checked = backupKdf(kdf);
  const key = asBytes(secret, KEY_BYTES, "backup secret");
  const nonceBytes = randomOr(nonce, NONCE_BYTES, "nonce");
  const plaintext = backupPlaintext(aikSeed, hkSecret);
  const ciphertext = aeadEncrypt(plaintext, backupAd(userId), nonceBytes, key);
  return {
    nonce: b64uEncode(nonceBytes),
    ciphertext: b64uEncode(ciphertext),
    kdf: checked.kdf,
    salt: checked.salt === null ? null : b64uEncode(checked.salt),
    opslimit: checked.opslimit,
    memlimit: checked.memlimit,
  };
}

/**
 * Open a backup blob with the backup secret. Throws BackupRestoreError if the blob
 * is malformed, the secret wrong, the blob altered, or it is another user's.
 * @returns {{aikSeed: Uint8Array, hkSecret: Uint8Array}}
 */
export function restoreBackup(blob, userId, secret) {
  let key, nonce, ciphertext, ad;
  try {
    if (!isPlainObject(blob)) throw new Error("a backup blob is an object");
    key = asBytes(secret, KEY_BYTES, "backup secret");
    nonce = asBytes(blob.nonce, NONCE_BYTES, "nonce");
    ciphertext = asBytes(blob.ciphertext, null, "ciphertext");
    ad = backupAd(userId);
  } catch (error) {
    throw new BackupRestoreError(`malformed backup: ${error.message}`);
  }
  let plaintext;
  try {
    plaintext = aeadDecrypt(ciphertext, ad, nonce, key);
  } catch {
    throw new BackupRestoreError(
      "the backup did not open: wrong recovery key or passphrase, or altered backup",
    );
  }
  try {
    return parseKeysPlaintext(plaintext);
  } catch (error) {
    throw new BackupRestoreError(
      `the backup opened but its content is malformed: ${error.message}`,
    );
  }
}

/** {aikSeed, hkSecret} from backupPlaintext's JSON; throws if malformed. */
function parseKeysPlaintext(plaintext) {
  const content = JSON.parse(utf8Decode(plaintext));
  if (!isPlainObject(content)) throw new Error("not a JSON object");
  return {
    aikSeed: asBytes(content.aik_seed, KEY_BYTES, "aik_seed"),
    hkSecret: asBytes(content.hk_secret, KEY_BYTES, "hk_secret"),
  };
}

/**
 * Open a raw backup with the recovery code the user typed. Throws
 * RecoveryCodeError for a mistyped code, BackupRestoreError otherwise.
 * @returns {{aikSeed: Uint8Array, hkSecret: Uint8Array}}
 */
export function restoreBackupWithRecoveryCode(blob, userId, code) {
  return restoreBackup(blob, userId, parseRecoveryCode(code));
}

/**
 * Open an argon2id backup with its passphrase, using the blob's KDF parameters
 * (Argon2id in a Web Worker). Throws BackupRestoreError on any failure, including
 * parameters outside the restore bounds.
 * @returns {Promise<{aikSeed: Uint8Array, hkSecret: Uint8Array}>}
 */
export async function restoreBackupWithPassphrase(blob, userId, passphrase) {
  let secret;
  try {
    secret = await deriveBackupSecret(passphrase, backupKdfFromBlob(blob));
  } catch (error) {
    throw new BackupRestoreError(`cannot derive the backup secret: ${error.message}`);
  }
  return restoreBackup(blob, userId, secret);
}

// ------------------------------------------------------------------ messages

/**
 * A payload as Python's `json.dumps(payload, separators=(",", ":"),
 * ensure_ascii=False, allow_nan=False)` writes it, in UTF-8: compact, keys in
 * the object's order (a Map keeps any order; a plain object lists integer-like
 * keys first), non-ASCII kept, no NaN or Infinity. Integers are written in
 * decimal (a BigInt for one past 2**53), other numbers the way Python's
 * repr(float) does.
 * @param {object|Map} payload
 * @returns {Uint8Array}
 */
export function serializePayload(payload) {
  if (!isPlainObject(payload) && !(payload instanceof Map)) {
    throw new Error("a payload is a JSON object");
  }
  return utf8(pythonJson(payload, new Set()));
}

function pythonJson(value, seen) {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "string":
      return jsonString(value);
    case "bigint":
      return value.toString();
    case "number":
      return jsonNumber(value);
    case "object":
      break;
    default:
      throw new Error(`a payload cannot hold a ${typeof value}`);
  }
  if (seen.has(value)) throw new Error("circular reference in the payload");
  seen.add(value);
  let text;
  if (Array.isArray(value)) {
    // Array.from visits holes as undefined, which is refused.
    text = `[${Array.from(value, (item) => pythonJson(item, seen)).join(",")}]`;
  } else if (value instanceof Map || isPlainObject(value)) {
    const members = entriesOf(value, "an object").map(([key, item]) => {
      if (typeof key !== "string") throw new Error("a payload object's keys are strings");
      return `${jsonString(key)}:${pythonJson(item, seen)}`;
    });
    text = `{${members.join(",")}}`;
  } else {
    throw new Error("a payload holds only JSON values");
  }
  seen.delete(value);
  return text;
}

function jsonString(text) {
  // JSON.stringify escapes exactly what Python's encoder escapes with
  // ensure_ascii=False ('"', '\\', and U+0000..U+001F, as \b \t \n \f \r or
  // \u00xx), except lone surrogates, which Python cannot encode to UTF-8.
  if (LONE_SURROGATE.test(text)) throw new Error("a payload string has a lone surrogate");
  return JSON.stringify(text);
}

function jsonNumber(x) {
  if (!Number.isFinite(x)) throw new Error("a payload number is finite (no NaN or Infinity)");
  if (Number.isInteger(x)) {
    // Past 2**53 a double no longer tells which integer was meant.
    if (!Number.isSafeInteger(x)) throw new Error("an integer past 2**53 must be a BigInt");
    return String(x); // -0 is written "0", like Python's int 0
  }
  return pythonFloatRepr(x);
}

/** Python's repr(float): the shortest round-trip digits (as JS's), laid out Python's way. */
function pythonFloatRepr(x) {
  const sign = x < 0 ? "-" : "";
  const [mantissa, exponent = "0"] = String(Math.abs(x)).split("e");
  const [whole, fraction = ""] = mantissa.split(".");
  let digits = whole + fraction;
  // value = 0.<digits> * 10**point
  let point = whole.length + Number(exponent);
  const leadingZeros = digits.length - digits.replace(/^0+/, "").length;
  digits = digits.slice(leadingZeros).replace(/0+$/, "");
  point -= leadingZeros;
  if (point <= -4 || point > 16) {
    const e = point - 1;
    const head = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${head}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  }
  if (point <= 0) return `${sign}0.${"0".repeat(-point)}${digits}`;
  if (point >= digits.length) return `${sign}${digits}${"0".repeat(point - digits.length)}.0`;
  return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
}

/**
 * `parley/msg/v1\n{conversation_id}\n{sender_device_id}\n{client_id}`.
 * @returns {Uint8Array}
 */
export function messageAd(conversationId, senderDeviceId, clientId) {
  return signingInput(
    MESSAGE_LABEL,
    canonicalId(conversationId),
    canonicalId(senderDeviceId),
    canonicalId(clientId),
  );
}

/**
 * `mac(key = FK, data = payload)`: 32 bytes.
 * @param {Uint8Array|string} frankingKey
 * @param {Uint8Array} payloadBytes
 * @returns {Uint8Array}
 */
export function frankingTag(frankingKey, payloadBytes) {
  return mac(asBytes(frankingKey, KEY_BYTES, "franking key"), bytesArg(payloadBytes, "payload"));
}

/**
 * Whether `tag` is the franking tag of `payloadBytes` under `frankingKey`; never throws.
 * @returns {boolean}
 */
export function verifyFrankingTag(frankingKey, payloadBytes, tag) {
  try {
    const expected = frankingTag(frankingKey, payloadBytes);
    return equalBytes(asBytes(tag, TAG_BYTES, "franking tag"), expected);
  } catch {
    return false;
  }
}

/**
 * `parley/frank/v1\n{franking_tag}\n{conversation_id}\n{sender_user_id}\n{id}\n{server_ts}`:
 * what the server's franking stamp covers; `serverTs` is written as it travels.
 * @param {Uint8Array|string} tag
 * @param {number|string} serverTs
 * @returns {Uint8Array}
 */
export function frankingStampInput(tag, conversationId, senderUserId, messageId, serverTs) {
  return signingInput(
    FRANKING_LABEL,
    b64uEncode(asBytes(tag, TAG_BYTES, "franking tag")),
    canonicalId(conversationId),
    canonicalId(senderUserId),
    canonicalId(messageId),
    serverTs,
  );
}

/**
 * `n_d || box(K, n_d, recipient box key, sender box secret)`: 72 bytes.
 * @param {Uint8Array|string} key the message key K
 * @param {Uint8Array|string} recipientBoxPub
 * @param {Uint8Array|string} senderBoxSecret
 * @param {Uint8Array} [nonce] random unless given
 * @returns {Uint8Array}
 */
export function wrapKeyForDevice(key, recipientBoxPub, senderBoxSecret, nonce) {
  return boxWithNonce(
    asBytes(key, KEY_BYTES, "message key"),
    asBytes(recipientBoxPub, PUBLIC_KEY_BYTES, "recipient box key"),
    asBytes(senderBoxSecret, KEY_BYTES, "box secret"),
    randomOr(nonce, NONCE_BYTES, "nonce"),
  );
}

/**
 * The message key K from this device's wrap; DecryptionError on failure.
 * @returns {Uint8Array}
 */
export function unwrapDeviceKey(wrap, senderBoxPub, myBoxSecret) {
  try {
    return openBoxWithNonce(
      asBytes(wrap, WRAP_BYTES, "wrap"),
      asBytes(senderBoxPub, PUBLIC_KEY_BYTES, "sender box key"),
      asBytes(myBoxSecret, KEY_BYTES, "box secret"),
    );
  } catch {
    throw new DecryptionError("the message key wrap did not open");
  }
}

/**
 * `seal(K, hk_pub)`: 80 bytes, anonymous (randomized: a fresh ephemeral key).
 * @returns {Uint8Array}
 */
export function sealKey(key, hkPub) {
  return sodium.crypto_box_seal(
    asBytes(key, KEY_BYTES, "message key"),
    asBytes(hkPub, PUBLIC_KEY_BYTES, "history key"),
  );
}

/**
 * The message key K from a history wrap; DecryptionError on failure.
 * @returns {Uint8Array}
 */
export function openSealedKey(sealed, hkSecret) {
  try {
    const secret = asBytes(hkSecret, KEY_BYTES, "history key");
    return sodium.crypto_box_seal_open(
      asBytes(sealed, SEALED_KEY_BYTES, "history wrap"),
      x25519PublicKey(secret),
      secret,
    );
  } catch {
    throw new DecryptionError("the history wrap did not open");
  }
}

/**
 * Encrypt a message (PROTOCOL.md section 3) into the envelope sent to the server:
 * `{v, client_id, sender_device, nonce, ciphertext, franking_tag, keys,
 * history_keys, expires_in}`.
 * @param {object|Map} payload
 * @param {string} conversationId
 * @param {string} senderDeviceId
 * @param {string|null} clientId null draws a uuid4
 * @param {Uint8Array|string} senderBoxSecret
 * @param {object|Map} recipients every active device of every member, the sender's
 *   own included: {deviceId: boxPub}
 * @param {object|Map} [historyRecipients] {userId: hkPub}
 * @param {{expiresIn?: number|null, key?: Uint8Array, nonce?: Uint8Array,
 *   frankingKey?: Uint8Array, wrapNonces?: object}} [options] random unless given
 * @returns {object} the envelope; throws MessageTooLargeError past 64 KiB of ciphertext
 */
export function encryptMessage(
  payload,
  conversationId,
  senderDeviceId,
  clientId,
  senderBoxSecret,
  recipients,
  historyRecipients = {},
  { expiresIn = null, key, nonce, frankingKey, wrapNonces } = {},
) {
  const client = given(clientId) ? canonicalId(clientId) : uuid4();
  const senderDevice = canonicalId(senderDeviceId);
  const k = randomOr(key, KEY_BYTES, "message key");
  const n = randomOr(nonce, NONCE_BYTES, "nonce");
  const fk = randomOr(frankingKey, KEY_BYTES, "franking key");
  if (given(expiresIn) && !(Number.isSafeInteger(expiresIn) && expiresIn > 0)) {
    throw new Error("expiresIn is a positive number of seconds or null");
  }
  const devices = entriesOf(recipients, "recipients");
  if (devices.length === 0) throw new Error("a message needs at least one recipient device");
  const nonces = new Map(
    given(wrapNonces)
      ? entriesOf(wrapNonces, "wrapNonces").map(([d, v]) => [canonicalId(d), v])
      : [],
  );

  const payloadBytes = serializePayload(payload);
  const ad = messageAd(conversationId, senderDevice, client);
  const ciphertext = aeadEncrypt(concatBytes(fk, payloadBytes), ad, n, k);
  if (ciphertext.length > MAX_MESSAGE_CIPHERTEXT_BYTES) {
    throw new MessageTooLargeError(
      `message ciphertext is ${ciphertext.length} bytes, `
        + `the limit is ${MAX_MESSAGE_CIPHERTEXT_BYTES}`,
    );
  }

  const keys = {};
  for (const [deviceId, boxPub] of devices) {
    const device = canonicalId(deviceId);
    if (given(wrapNonces) && !nonces.has(device)) {
      throw new Error(`no wrap nonce given for device ${device}`);
    }
    keys[device] = b64uEncode(wrapKeyForDevice(k, boxPub, senderBoxSecret, nonces.get(device)));
  }
  const historyKeys = {};
  for (const [userId, hkPub] of entriesOf(historyRecipients ?? {}, "historyRecipients")) {
    historyKeys[canonicalId(userId)] = b64uEncode(sealKey(k, hkPub));
  }
  return {
    v: 1,
    client_id: client,
    sender_device: senderDevice,
    nonce: b64uEncode(n),
    ciphertext: b64uEncode(ciphertext),
    franking_tag: b64uEncode(frankingTag(fk, payloadBytes)),
    keys,
    history_keys: historyKeys,
    expires_in: expiresIn ?? null,
  };
}

/** The wrap for `owner`: message[mapField][owner], else message[oneField]. */
function selectWrap(message, mapField, oneField, owner) {
  const entries = message[mapField];
  if (isPlainObject(entries)) {
    for (const [entryId, wrap] of Object.entries(entries)) {
      let id;
      try {
        id = canonicalId(entryId);
      } catch {
        continue;
      }
      if (id === owner) return wrap ?? null;
    }
  }
  return message[oneField] ?? null;
}

/**
 * Open a received message; never throws. See Python's decrypt_message: with a wrap
 * for myDeviceId (in `keys` or a `key` field), K is opened with myBoxSecret from
 * senderBoxPub (the box key of the sender device's verified certificate), and if
 * that wrap fails the message fails; without one, K is opened from the history
 * wrap (`history_keys` or `history_key`) with hkSecret.
 *
 * If `verified` is false the message must be shown as "could not be verified",
 * never as content; `error` says why (for the device's log, never the server).
 * `viaHistory`: K came from the history key; a sealed box is anonymous, so the
 * message is not authenticated as coming from sender_device.
 * @param {object} message the envelope fields and this device's / user's wrap
 * @param {string} conversationId the conversation it was fetched from
 * @param {{myDeviceId?: string, myBoxSecret?: Uint8Array, senderBoxPub?: Uint8Array|string,
 *   myUserId?: string, hkSecret?: Uint8Array}} [keys]
 * @returns {{verified: boolean, payload: object|null, payloadBytes: Uint8Array|null,
 *   frankingKey: Uint8Array|null, viaHistory: boolean, error: string|null}}
 */
export function decryptMessage(message, conversationId, keys = {}) {
  try {
    return decryptMessageOrThrow(message, conversationId, keys ?? {});
  } catch (error) {
    // A received message must never crash the reader.
    return failedMessage(`unexpected: ${error?.name ?? typeof error}`);
  }
}

function failedMessage(reason) {
  return {
    verified: false,
    payload: null,
    payloadBytes: null,
    frankingKey: null,
    viaHistory: false,
    error: reason,
  };
}

function decryptMessageOrThrow(message, conversationId, keys) {
  const { myDeviceId, myBoxSecret, senderBoxPub, myUserId, hkSecret } = keys;
  if (!isPlainObject(message)) return failedMessage("not a message");
  if (message.v !== 1) return failedMessage("unknown envelope version");
  let ad, nonce, ciphertext, tag;
  try {
    ad = messageAd(conversationId, message.sender_device, message.client_id);
    nonce = asBytes(message.nonce, NONCE_BYTES, "nonce");
    ciphertext = asBytes(message.ciphertext, null, "ciphertext");
    tag = asBytes(message.franking_tag, TAG_BYTES, "franking tag");
  } catch (error) {
    return failedMessage(`malformed envelope: ${error.message}`);
  }

  let deviceWrap = null;
  if (given(myDeviceId) && given(myBoxSecret) && given(senderBoxPub)) {
    deviceWrap = selectWrap(message, "keys", "key", canonicalId(myDeviceId));
  }
  const viaHistory = deviceWrap === null;
  let k;
  try {
    if (deviceWrap !== null) {
      k = unwrapDeviceKey(deviceWrap, senderBoxPub, myBoxSecret);
    } else if (given(myUserId) && given(hkSecret)) {
      const historyWrap = selectWrap(message, "history_keys", "history_key", canonicalId(myUserId));
      if (historyWrap === null) return failedMessage("no key for this device or user");
      k = openSealedKey(historyWrap, hkSecret);
    } else {
      return failedMessage("no key for this device");
    }
  } catch (error) {
    if (error instanceof DecryptionError) return failedMessage(error.message);
    throw error;
  }

  let plaintext;
  try {
    plaintext = aeadDecrypt(ciphertext, ad, nonce, k);
  } catch (error) {
    return failedMessage(error.message);
  }
  if (plaintext.length < KEY_BYTES) return failedMessage("plaintext shorter than the franking key");
  const fk = plaintext.slice(0, KEY_BYTES);
  const payloadBytes = plaintext.slice(KEY_BYTES);
  if (!verifyFrankingTag(fk, payloadBytes, tag)) return failedMessage("franking tag mismatch");
  let payload;
  try {
    // JSON.parse, like Python's json.loads here, refuses NaN and Infinity.
    payload = JSON.parse(utf8Decode(payloadBytes));
  } catch {
    return failedMessage("payload is not UTF-8 JSON");
  }
  if (!isPlainObject(payload)) return failedMessage("payload is not a JSON object");
  return { verified: true, payload, payloadBytes, frankingKey: fk, viaHistory, error: null };
}

// --------------------------------------------------------------- attachments

/**
 * Encrypt a file for upload (PROTOCOL.md section 5). Up to 1 MiB: one aead under a
 * fresh key and nonce, empty associated data; meta has `nonce`. Past 1 MiB:
 * secretstream in 64 KiB plaintext chunks, every chunk TAG_MESSAGE but the last,
 * TAG_FINAL; meta has `header`. meta = {key, nonce | header, sha256 (of the
 * ciphertext), size (of the plaintext), mime, name}; the caller adds blob_id.
 * @param {Uint8Array} data
 * @param {{mime: string, name: string, key?: Uint8Array, nonce?: Uint8Array}} options
 *   nonce only for the aead form
 * @returns {{ciphertext: Uint8Array, meta: object}}
 */
export function encryptAttachment(data, { mime, name, key, nonce } = {}) {
  bytesArg(data, "data");
  if (typeof mime !== "string" || typeof name !== "string") {
    throw new Error("an attachment has a mime type and a name");
  }
  const k = randomOr(key, KEY_BYTES, "attachment key");
  const meta = { key: b64uEncode(k) };
  let ciphertext;
  if (data.length <= ATTACHMENT_AEAD_MAX_BYTES) {
    const n = randomOr(nonce, NONCE_BYTES, "nonce");
    ciphertext = aeadEncrypt(data, ATTACHMENT_AD, n, k);
    meta.nonce = b64uEncode(n);
  } else {
    if (given(nonce)) throw new Error("a chunked attachment has a random header, not a nonce");
    const { state, header } = sodium.crypto_secretstream_xchacha20poly1305_init_push(k);
    const chunks = Math.ceil(data.length / ATTACHMENT_CHUNK_BYTES);
    ciphertext = new Uint8Array(data.length + chunks * SECRETSTREAM_ABYTES);
    for (let i = 0; i < chunks; i++) {
      const start = i * ATTACHMENT_CHUNK_BYTES;
      const tag = i === chunks - 1 ? TAG_FINAL : TAG_MESSAGE;
      const chunk = data.subarray(start, start + ATTACHMENT_CHUNK_BYTES);
      ciphertext.set(
        sodium.crypto_secretstream_xchacha20poly1305_push(state, chunk, null, tag),
        start + i * SECRETSTREAM_ABYTES,
      );
    }
    meta.header = b64uEncode(header);
  }
  Object.assign(meta, { sha256: b64uEncode(sha256(ciphertext)), size: data.length, mime, name });
  return { ciphertext, meta };
}

/**
 * Check and open a downloaded attachment; AttachmentError on any mismatch. The
 * SHA-256 of the ciphertext first, then the aead (`nonce`) or the secretstream
 * (`header`): every chunk must authenticate, in order, the last and only the last
 * tagged TAG_FINAL; the plaintext length must equal `size`.
 * @param {Uint8Array} ciphertext
 * @param {object} meta
 * @returns {Uint8Array}
 */
export function decryptAttachment(ciphertext, meta) {
  let k, digest, size, hasNonce;
  try {
    if (!isPlainObject(meta)) throw new Error("meta is an object");
    k = asBytes(meta.key, KEY_BYTES, "key");
    digest = asBytes(meta.sha256, 32, "sha256");
    size = meta.size;
    if (!Number.isSafeInteger(size) || size < 0) throw new Error("size is a non-negative integer");
    hasNonce = Object.hasOwn(meta, "nonce");
    if (hasNonce === Object.hasOwn(meta, "header")) {
      throw new Error("exactly one of nonce and header");
    }
    bytesArg(ciphertext, "ciphertext");
  } catch (error) {
    throw new AttachmentError(`malformed attachment metadata: ${error.message}`);
  }
  if (!equalBytes(sha256(ciphertext), digest)) {
    throw new AttachmentError("the attachment's SHA-256 does not match");
  }
  let plaintext;
  if (hasNonce) {
    try {
      const nonce = asBytes(meta.nonce, NONCE_BYTES, "nonce");
      plaintext = aeadDecrypt(ciphertext, ATTACHMENT_AD, nonce, k);
    } catch {
      throw new AttachmentError("the attachment did not open");
    }
  } else {
    plaintext = openSecretstream(ciphertext, meta.header, k);
  }
  if (plaintext.length !== size) throw new AttachmentError("the attachment's size does not match");
  return plaintext;
}

function openSecretstream(ciphertext, headerValue, key) {
  let state;
  try {
    const header = asBytes(headerValue, SECRETSTREAM_HEADER_BYTES, "header");
    state = sodium.crypto_secretstream_xchacha20poly1305_init_pull(header, key);
  } catch {
    throw new AttachmentError("the attachment stream did not open");
  }
  const step = ATTACHMENT_CHUNK_BYTES + SECRETSTREAM_ABYTES;
  const parts = [];
  let offset = 0;
  let final = false;
  while (offset < ciphertext.length) {
    const chunk = ciphertext.subarray(offset, offset + step);
    offset += chunk.length;
    let result;
    try {
      result = sodium.crypto_secretstream_xchacha20poly1305_pull(state, chunk, null);
    } catch {
      result = false; // a chunk shorter than its 17-byte overhead
    }
    if (!result) throw new AttachmentError("an attachment chunk did not authenticate");
    if (result.tag === TAG_FINAL) {
      if (offset !== ciphertext.length) {
        throw new AttachmentError("the attachment stream ends early");
      }
      final = true;
    } else if (result.tag !== TAG_MESSAGE) {
      throw new AttachmentError("unexpected tag in the attachment stream");
    }
    parts.push(result.message);
  }
  if (!final) throw new AttachmentError("the attachment stream is truncated");
  return concatBytes(...parts);
}

// ------------------------------------------------------------ call signaling

/**
 * `b64u(n || box(plaintext, n, recipient box key, my box secret))` (section 7).
 * @param {Uint8Array} plaintext
 * @param {Uint8Array|string} recipientBoxPub
 * @param {Uint8Array|string} myBoxSecret
 * @param {{nonce?: Uint8Array}} [options]
 * @returns {string}
 */
export function boxToDevice(plaintext, recipientBoxPub, myBoxSecret, { nonce } = {}) {
  return b64uEncode(
    boxWithNonce(
      bytesArg(plaintext, "plaintext"),
      asBytes(recipientBoxPub, PUBLIC_KEY_BYTES, "recipient box key"),
      asBytes(myBoxSecret, KEY_BYTES, "box secret"),
      randomOr(nonce, NONCE_BYTES, "nonce"),
    ),
  );
}

/**
 * The same plaintext boxed separately to each device: {deviceId: b64u}.
 * @param {Uint8Array} plaintext
 * @param {object|Map} recipients {deviceId: boxPub}
 * @param {Uint8Array|string} myBoxSecret
 * @returns {Object<string, string>}
 */
export function boxToDevices(plaintext, recipients, myBoxSecret) {
  const boxed = {};
  for (const [deviceId, boxPub] of entriesOf(recipients, "recipients")) {
    boxed[canonicalId(deviceId)] = boxToDevice(plaintext, boxPub, myBoxSecret);
  }
  return boxed;
}

/**
 * Open `n || box` from senderBoxPub; DecryptionError on any failure.
 * @returns {Uint8Array}
 */
export function openFromDevice(boxed, senderBoxPub, myBoxSecret) {
  try {
    const data = asBytes(boxed, null, "boxed data");
    if (data.length < NONCE_BYTES + MAC_BYTES) throw new Error("too short");
    return openBoxWithNonce(
      data,
      asBytes(senderBoxPub, PUBLIC_KEY_BYTES, "sender box key"),
      asBytes(myBoxSecret, KEY_BYTES, "box secret"),
    );
  } catch {
    throw new DecryptionError("the box did not open");
  }
}

// ------------------------------------------------------------ device linking

/**
 * 32 random bytes: the new device's nonce, or the existing device's.
 * @returns {Uint8Array}
 */
export function newLinkNonce() {
  return randomBytes(LINK_NONCE_BYTES);
}

function linkFields(userId, deviceId, signPub, boxPub, createdAt) {
  return [
    canonicalId(userId),
    canonicalId(deviceId),
    b64uEncode(asBytes(signPub, PUBLIC_KEY_BYTES, "device signing key")),
    b64uEncode(asBytes(boxPub, PUBLIC_KEY_BYTES, "device box key")),
    timestamp(createdAt, "createdAt"),
  ];
}

/**
 * `parley/link/v1\n{user_id}\n{device_id}\n{sign_pub}\n{box_pub}\n{created_at}`:
 * what a new device commits to (the fields of its future certificate).
 * @returns {Uint8Array}
 */
export function linkInput(userId, deviceId, signPub, boxPub, createdAt) {
  return signingInput(LINK_LABEL, ...linkFields(userId, deviceId, signPub, boxPub, createdAt));
}

/**
 * `mac(key = newNonce, data = linkInput(...))`: 32 bytes. The new device sends it
 * before it sees the existing device's nonce and reveals newNonce and its keys only
 * after, so whoever relays the link cannot choose keys that make the codes match.
 * @param {Uint8Array|string} newNonce 32 bytes
 * @returns {Uint8Array}
 */
export function linkCommitment(newNonce, userId, deviceId, signPub, boxPub, createdAt) {
  return mac(
    asBytes(newNonce, LINK_NONCE_BYTES, "new nonce"),
    linkInput(userId, deviceId, signPub, boxPub, createdAt),
  );
}

/**
 * Whether revealed keys and nonce are those `commitment` fixed; never throws.
 * @returns {boolean}
 */
export function verifyLinkCommitment(
  commitment, newNonce, userId, deviceId, signPub, boxPub, createdAt,
) {
  try {
    return equalBytes(
      asBytes(commitment, KEY_BYTES, "commitment"),
      linkCommitment(newNonce, userId, deviceId, signPub, boxPub, createdAt),
    );
  } catch {
    return false;
  }
}

/**
 * `parley/link-code/v1\n{user_id}\n{device_id}\n{sign_pub}\n{box_pub}\n{created_at}\n{new_nonce}`.
 * @returns {Uint8Array}
 */
export function linkCodeInput(userId, deviceId, signPub, boxPub, createdAt, newNonce) {
  return signingInput(
    LINK_CODE_LABEL,
    ...linkFields(userId, deviceId, signPub, boxPub, createdAt),
    b64uEncode(asBytes(newNonce, LINK_NONCE_BYTES, "new nonce")),
  );
}

/**
 * The 6 digits both devices show: h = mac(key = existingNonce, data =
 * linkCodeInput(...)); the first 4 bytes of h as a big-endian unsigned integer,
 * mod 1000000, zero-padded to 6 digits.
 * @returns {string}
 */
export function linkShortCode(
  existingNonce, newNonce, userId, deviceId, signPub, boxPub, createdAt,
) {
  const h = mac(
    asBytes(existingNonce, LINK_NONCE_BYTES, "existing nonce"),
    linkCodeInput(userId, deviceId, signPub, boxPub, createdAt, newNonce),
  );
  const value = new DataView(h.buffer, h.byteOffset, 4).getUint32(0, false);
  return String(value % 10 ** LINK_CODE_DIGITS).padStart(LINK_CODE_DIGITS, "0");
}

/**
 * `crypto_box_seal(plaintext, boxPub)`: anonymous, randomized, 48 bytes longer.
 * @param {Uint8Array} plaintext
 * @param {Uint8Array|string} boxPub
 * @returns {Uint8Array}
 */
export function sealTo(plaintext, boxPub) {
  return sodium.crypto_box_seal(
    bytesArg(plaintext, "plaintext"),
    asBytes(boxPub, PUBLIC_KEY_BYTES, "box public key"),
  );
}

/**
 * Open `crypto_box_seal` with the recipient's box secret; DecryptionError on any
 * failure. A sealed box is anonymous: it says nothing about who sealed it.
 * @param {Uint8Array|string} sealed
 * @param {Uint8Array|string} boxSecret
 * @returns {Uint8Array}
 */
export function openSealed(sealed, boxSecret) {
  try {
    const data = asBytes(sealed, null, "sealed box");
    if (data.length < SEAL_OVERHEAD_BYTES) throw new Error("too short");
    const secret = asBytes(boxSecret, KEY_BYTES, "box secret");
    return sodium.crypto_box_seal_open(data, x25519PublicKey(secret), secret);
  } catch {
    throw new DecryptionError("the sealed box did not open");
  }
}

/**
 * What an existing device hands a new one it approves: sealTo(backupPlaintext(...),
 * the new device's box key). At most 1 KiB.
 * @returns {Uint8Array}
 */
export function makeLinkBundle(aikSeed, hkSecret, boxPub) {
  const bundle = sealTo(backupPlaintext(aikSeed, hkSecret), boxPub);
  if (bundle.length > MAX_LINK_BUNDLE_BYTES) throw new Error("a link bundle is at most 1 KiB");
  return bundle;
}

/**
 * Open a link bundle with the new device's box secret; throws LinkBundleError. The
 * bundle is anonymous: the caller must check that the AIK is the account's (key
 * directory) and that its own certificate verifies under it.
 * @returns {{aikSeed: Uint8Array, hkSecret: Uint8Array}}
 */
export function openLinkBundle(bundle, boxSecret) {
  let plaintext;
  try {
    const data = asBytes(bundle, null, "link bundle");
    if (data.length > MAX_LINK_BUNDLE_BYTES) throw new Error("a link bundle is at most 1 KiB");
    plaintext = openSealed(data, boxSecret);
  } catch {
    throw new LinkBundleError("the link bundle did not open with this device's key");
  }
  try {
    return parseKeysPlaintext(plaintext);
  } catch (error) {
    throw new LinkBundleError(`the link bundle opened but is malformed: ${error.message}`);
  }
}
