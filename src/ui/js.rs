//! Small browser chores with callback-heavy APIs (folder walking on drop, IndexedDB, file
//! downloads), written as short JavaScript functions built once at start-up: far shorter and
//! clearer than the same through web-sys callbacks. Each returns a Promise.

use js_sys::{Function, Promise};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// `walk(dataTransfer)` -> `[[path, File], ...]`, recursing into dropped folders. A single
/// dropped folder's own name is left out of the paths (its subfolders are the labels), like a
/// folder picked with the folder input.
const WALK: &str = r#"
const entries = [...dt.items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
const files = [...dt.files];
return (async () => {
  const out = [];
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      out.push([prefix + entry.name, await new Promise((ok, no) => entry.file(ok, no))]);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, no) => reader.readEntries(ok, no));
        if (!batch.length) break;
        for (const e of batch) await walk(e, prefix === null ? '' : prefix + entry.name + '/');
      }
    }
  };
  if (!entries.length) { for (const f of files) out.push([f.name, f]); return out; }
  const single = entries.length === 1 && entries[0].isDirectory;
  for (const e of entries) await (single ? walk(e, null) : walk(e, ''));
  return out;
})();
"#;

const IDB: &str = r#"
const open = () => new Promise((ok, no) => {
  const r = indexedDB.open('pcl-studio', 1);
  r.onupgradeneeded = () => r.result.createObjectStore('kv');
  r.onsuccess = () => ok(r.result);
  r.onerror = () => no(String(r.error));
  r.onblocked = () => no('the browser storage is blocked by another tab');
});
return (async () => {
  const db = await open();
  try {
    return await new Promise((ok, no) => {
      const tx = db.transaction('kv', op === 'get' ? 'readonly' : 'readwrite');
      const store = tx.objectStore('kv');
      let result;
      if (op === 'get') { const r = store.get(key); r.onsuccess = () => { result = r.result; }; }
      else if (op === 'put') store.put(value, key);
      // Several records in one transaction: all are written or none.
      else if (op === 'putAll') for (const [k, v] of value) store.put(v, k);
      else store.delete(key);
      tx.oncomplete = () => ok(result);
      // A full disk or quota aborts the transaction (`abort`, not `error`).
      tx.onerror = () => no(String(tx.error));
      tx.onabort = () => no(String(tx.error || 'the browser aborted the storage transaction'));
    });
  } finally { db.close(); }
})();
"#;

const DOWNLOAD: &str = r#"
const url = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
const a = document.createElement('a');
a.href = url; a.download = name; document.body.appendChild(a); a.click(); a.remove();
setTimeout(() => URL.revokeObjectURL(url), 10000);
"#;

/// Tells `owned(true)` when this tab holds the autosave lock (kept for as long as it lives),
/// `owned(false)` when another tab does, and then `owned(true)` once that tab has closed and the
/// lock passed here; `owned(true)` where the browser has no Web Locks.
const CLAIM: &str = r#"
const NAME = 'pcl-studio-autosave';
const hold = () => { owned(true); return new Promise(() => {}); };
if (!navigator.locks) return owned(true);
navigator.locks.request(NAME, { ifAvailable: true }, (lock) => {
  if (lock) return hold();
  owned(false);
  navigator.locks.request(NAME, hold).catch(() => {});
}).catch(() => owned(true));
"#;

/// `fetch(path, max)` -> ArrayBuffer of a file on the page's own origin: the resolved address
/// is checked before any request, and a redirect elsewhere fails (`same-origin` mode). The body
/// is read as a stream with a running count, so a chunked or compressed response (whose length
/// the headers do not tell) is cut off at `max` bytes, not read whole first.
const FETCH_OWN: &str = r#"
return (async () => {
  const url = new URL(path, location.href);
  if (url.origin !== location.origin) throw `${path} is not on this site's origin`;
  let response;
  try {
    response = await fetch(url, { mode: 'same-origin', credentials: 'same-origin', redirect: 'follow' });
  } catch (e) { throw `cannot fetch ${path}: ${e}`; }
  if (!response.ok) throw `cannot fetch ${path}: HTTP ${response.status}`;
  const length = Number(response.headers.get('content-length') || 0);
  const over = () => `${path} is more than the ${max} bytes a session may have`;
  if (length > max) throw over();
  const reader = response.body.getReader();
  const parts = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) { reader.cancel().catch(() => {}); throw over(); }
    parts.push(value);
  }
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const p of parts) { bytes.set(p, at); at += p.byteLength; }
  return bytes.buffer;
})();
"#;

thread_local! {
    static FUNCTIONS: (Function, Function, Function, Function, Function) = (
        Function::new_with_args("dt", WALK),
        Function::new_with_args("op, key, value", IDB),
        Function::new_with_args("bytes, name", DOWNLOAD),
        Function::new_with_args("owned", CLAIM),
        Function::new_with_args("path, max", FETCH_OWN),
    );
}

/// A file on the page's own origin (a lesson's session), at most `max` bytes.
pub async fn fetch_own(path: &str, max: u64) -> Result<JsValue, String> {
    let r = FUNCTIONS.with(|f| {
        f.4.call2(&JsValue::NULL, &path.into(), &(max as f64).into())
    });
    await_promise(r).await
}

/// Whether the page's address has `name` as a bare flag (`?cpu`, `?cpu&sample=64`).
pub fn query_flag(name: &str) -> bool {
    query_param(name).is_some_and(|v| v.is_empty())
}

/// The decoded value of a parameter of the page's address.
pub fn query_param(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search)
        .ok()?
        .get(name)
}

/// Claims the autosave for this tab: one tab of the page at a time owns it, so two tabs never
/// overwrite each other's. `owned` hears whether this tab has it now, and again when it passes
/// here from a tab that closed.
pub fn claim_autosave(owned: impl FnMut(bool) + 'static) {
    let owned = Closure::<dyn FnMut(bool)>::new(owned);
    FUNCTIONS.with(|f| {
        let _ = f.3.call1(&JsValue::NULL, owned.as_ref());
    });
    // The lock's callbacks live as long as the page.
    owned.forget();
}

async fn await_promise(v: Result<JsValue, JsValue>) -> Result<JsValue, String> {
    let promise: Promise = v
        .map_err(|e| format!("{e:?}"))?
        .dyn_into()
        .map_err(|_| "not a promise".to_string())?;
    JsFuture::from(promise)
        .await
        .map_err(|e| e.as_string().unwrap_or_else(|| format!("{e:?}")))
}

/// Files of a drop, with their paths.
pub async fn dropped_files(dt: &web_sys::DataTransfer) -> Result<Vec<(String, JsValue)>, String> {
    let result = FUNCTIONS.with(|f| f.0.call1(&JsValue::NULL, dt));
    let list = await_promise(result).await?;
    Ok(js_sys::Array::from(&list)
        .iter()
        .map(|pair| {
            let pair = js_sys::Array::from(&pair);
            (pair.get(0).as_string().unwrap_or_default(), pair.get(1))
        })
        .collect())
}

pub async fn idb_get(key: &str) -> Result<JsValue, String> {
    let r = FUNCTIONS.with(|f| {
        f.1.call3(&JsValue::NULL, &"get".into(), &key.into(), &JsValue::NULL)
    });
    await_promise(r).await
}

/// Several records in one transaction: all are written, or none.
pub async fn idb_put_all(records: &[(&str, &JsValue)]) -> Result<(), String> {
    let pairs: js_sys::Array = records
        .iter()
        .map(|(k, v)| JsValue::from(js_sys::Array::of2(&(*k).into(), v)))
        .collect();
    let r = FUNCTIONS.with(|f| {
        f.1.call3(&JsValue::NULL, &"putAll".into(), &JsValue::NULL, &pairs)
    });
    await_promise(r).await.map(|_| ())
}

pub async fn idb_delete(key: &str) -> Result<(), String> {
    let r = FUNCTIONS.with(|f| {
        f.1.call3(
            &JsValue::NULL,
            &"delete".into(),
            &key.into(),
            &JsValue::NULL,
        )
    });
    await_promise(r).await.map(|_| ())
}

/// Offers `bytes` as a download named `name`.
pub fn download(bytes: &js_sys::Uint8Array, name: &str) {
    FUNCTIONS.with(|f| {
        let _ = f.2.call2(&JsValue::NULL, bytes, &name.into());
    });
}

/// The browser's `localStorage` item `key` (small settings this browser remembers).
pub fn stored(key: &str) -> Option<String> {
    let window: JsValue = web_sys::window()?.into();
    let storage = js_sys::Reflect::get(&window, &"localStorage".into()).ok()?;
    let get: js_sys::Function = js_sys::Reflect::get(&storage, &"getItem".into())
        .ok()?
        .dyn_into()
        .ok()?;
    get.call1(&storage, &key.into()).ok()?.as_string()
}

/// Sets (`Some`) or removes (`None`) the `localStorage` item `key`; a browser that refuses
/// (private mode, storage off) just does not remember.
pub fn store(key: &str, value: Option<&str>) {
    let Some(storage) =
        web_sys::window().and_then(|w| js_sys::Reflect::get(&w, &"localStorage".into()).ok())
    else {
        return;
    };
    let method = if value.is_some() {
        "setItem"
    } else {
        "removeItem"
    };
    if let Some(f) = js_sys::Reflect::get(&storage, &method.into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
    {
        let _ = match value {
            Some(v) => f.call2(&storage, &key.into(), &v.into()),
            None => f.call1(&storage, &key.into()),
        };
    }
}
