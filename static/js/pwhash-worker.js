/**
 * Argon2id off the page's main thread: a module Web Worker started by crypto.js
 * (one per derivation, terminated after it) so that the page never freezes while
 * libsodium fills its memory.
 *
 * In:  {password: Uint8Array (NFC UTF-8), salt: Uint8Array, opslimit: number, memlimit: number}
 * Out: {key: Uint8Array} (32 bytes), or {error: string}
 */

import { deriveKeyFromPassphrase, ready } from "./crypto.js";

self.onmessage = async ({ data }) => {
  try {
    await ready();
    const key = deriveKeyFromPassphrase(data.password, data.salt, data.opslimit, data.memlimit);
    self.postMessage({ key });
  } catch (error) {
    // The message only: never the passphrase or anything derived from it.
    self.postMessage({ error: String(error?.message ?? error) });
  }
};
