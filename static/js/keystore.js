// This browser's keys, in IndexedDB, per account. Nothing here is ever sent to the
// server but public keys and the encrypted backup (docs/web.md, "Keys in the browser").
//
// Record of one account: {userId, device: {deviceId, signSeed, boxSecret, createdAt},
// aikSeed, hkSecret, pins: {userId: {aikPub, verified, changed}}, syncCursor}; secrets
// as b64u strings (structured clone keeps them as they are).

const DB_NAME = "parley";
const STORE = "accounts";

function openDb() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE, { keyPath: "userId" });
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function withStore(mode, action) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const result = action(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(result.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

/** The stored record of `userId`, or null. */
export async function loadAccount(userId) {
  return (await withStore("readonly", (store) => store.get(userId))) || null;
}

/** Store a new record of an account (replacing any). Changes go through updateAccount. */
export async function saveAccount(record) {
  await withStore("readwrite", (store) => store.put(record));
}

/**
 * Change the stored record of `userId` in one readwrite transaction: read it, let
 * `change(record)` alter it in place, write it back. Two tabs of one account then
 * never overwrite each other's changes (a pin, the sync cursor), and a record erased
 * meanwhile (sign-out in another tab) is never re-created: answers null then.
 * `change` must be synchronous (an IndexedDB transaction ends at the first await);
 * when it answers `false` nothing is written. Answers the record as stored.
 */
export async function updateAccount(userId, change) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, "readwrite");
      const store = tx.objectStore(STORE);
      let stored = null;
      let failure = null;
      const read = store.get(userId);
      read.onsuccess = () => {
        const record = read.result;
        if (!record) return;
        try {
          if (change(record) !== false) store.put(record);
          stored = record;
        } catch (error) {
          failure = error;
          tx.abort();
        }
      };
      tx.oncomplete = () => resolve(stored);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(failure || tx.error);
    });
  } finally {
    db.close();
  }
}

/** Forget an account's keys in this browser (sign-out, revoked device). */
export async function forgetAccount(userId) {
  await withStore("readwrite", (store) => store.delete(userId));
}
