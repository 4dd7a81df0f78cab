// The site's service worker (scripts/build-site.sh writes VERSION and FILES): the page, both
// wasm modules and the sample set are cached on the first visit, so later visits load and train
// with no network. A new build has a new VERSION: it installs beside the old one, takes over,
// and deletes the old cache. A page left open on the old build that then starts a worker of
// the new one is told to reload: the page and its workers compare their build ids first.
// Anything else on the site (a teacher's lessons) comes from the network first; the last few
// are kept in a small cache of their own for offline visits.
const VERSION = '__VERSION__';
const FILES = __FILES__;
const CACHE = `pcl-studio-${VERSION}`;
const PREFIX = 'pcl-studio-';
const LESSONS = 'pcl-lessons';
const MAX_LESSONS = 8;

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    // Never fill the new cache from the browser's HTTP cache of the old build: each file is
    // asked for with this build's version in the query (static servers ignore it; measured:
    // Chromium's Cache.addAll gave back the old index.html despite `cache: 'no-store'`), and
    // kept under its plain name. All or nothing: one failure fails the install.
    const fetched = await Promise.all(FILES.map(async (f) => {
      const response = await fetch(`${f}?build=${VERSION}`, { cache: 'no-store' });
      if (!response.ok) throw new Error(`${f}: HTTP ${response.status}`);
      return [f, response];
    }));
    await Promise.all(fetched.map(([f, response]) => cache.put(f, response)));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith(PREFIX) && name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

// Same-origin GETs only; anything else is the browser's business (the page makes no such request).
self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin) return;
  event.respondWith(answer(request, url));
});

async function answer(request, url) {
  const cache = await caches.open(CACHE);
  // The page itself whatever its query (`?session=...`, `?cpu`), and every file of the build,
  // come from the cache first.
  const cached = await cache.match(request, { ignoreSearch: request.mode === 'navigate' });
  if (cached) return cached;
  // Anything else (a teacher's lesson files next to the site): the network first, so an updated
  // lesson is seen; a copy kept (one per address, whatever its query) for an offline visit.
  const key = url.origin + url.pathname;
  const kept = await caches.open(LESSONS);
  try {
    const response = await fetch(request);
    // A server's page for an unknown address (HTML, often with 200) is no lesson to keep.
    const html = (response.headers.get('content-type') || '').includes('text/html');
    if (response.ok && !html) await keep(kept, key, response.clone());
    return response;
  } catch (error) {
    const copy = await kept.match(key);
    if (copy) return copy;
    throw error;
  }
}

// At most MAX_LESSONS copies (they share the browser's quota with the autosave): the oldest go.
async function keep(cache, key, response) {
  await cache.delete(key);
  await cache.put(key, response);
  const keys = await cache.keys();
  for (const old of keys.slice(0, Math.max(0, keys.length - MAX_LESSONS))) await cache.delete(old);
}
