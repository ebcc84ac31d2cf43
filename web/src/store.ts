// The device at rest: one IndexedDB database holding a non-extractable AES-GCM key (stored as a
// CryptoKey object: the browser keeps its bytes and never hands them to script) and the
// device record encrypted under it. ts-mls needs its keys and group secrets as bytes, so
// those live only inside the encrypted record; the bearer token is never stored.
const DB_NAME = "roost";
const STORE = "device";
const KEY = "key";
const RECORD = "record";

interface Sealed {
  iv: Uint8Array;
  data: ArrayBuffer;
}

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error ?? new Error("IndexedDB request failed"));
  });
}

function openDb(): Promise<IDBDatabase> {
  const r = indexedDB.open(DB_NAME, 1);
  r.onupgradeneeded = () => r.result.createObjectStore(STORE);
  return request(r);
}

export class Vault {
  private constructor(
    private readonly db: IDBDatabase,
    private readonly key: CryptoKey,
  ) {}

  /** The database and its key, made on first use. */
  static async open(): Promise<Vault> {
    const db = await openDb();
    let key = (await request(db.transaction(STORE).objectStore(STORE).get(KEY))) as CryptoKey | undefined;
    if (key === undefined) {
      key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
      await request(db.transaction(STORE, "readwrite").objectStore(STORE).put(key, KEY));
    }
    return new Vault(db, key);
  }

  /** The saved device record, or undefined when there is none. */
  async load(): Promise<Uint8Array | undefined> {
    const sealed = (await request(this.db.transaction(STORE).objectStore(STORE).get(RECORD))) as Sealed | undefined;
    if (sealed === undefined) return undefined;
    const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: sealed.iv as Uint8Array<ArrayBuffer> }, this.key, sealed.data);
    return new Uint8Array(plain);
  }

  /** Replace the record (a fresh IV for every write). */
  async save(plain: Uint8Array): Promise<void> {
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const data = await crypto.subtle.encrypt({ name: "AES-GCM", iv }, this.key, plain as Uint8Array<ArrayBuffer>);
    const tx = this.db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).put({ iv, data } satisfies Sealed, RECORD);
    await new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = tx.onabort = () => reject(tx.error ?? new Error("IndexedDB write failed"));
    });
  }

  async clear(): Promise<void> {
    await request(this.db.transaction(STORE, "readwrite").objectStore(STORE).delete(RECORD));
  }
}
