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

/** Store (replace) the record of an account. */
export async function saveAccount(record) {
  await withStore("readwrite", (store) => store.put(record));
}

/** Forget an account's keys in this browser (sign-out, revoked device). */
export async function forgetAccount(userId) {
  await withStore("readwrite", (store) => store.delete(userId));
}
