// A minimal static file server for dist/ or a built site on 127.0.0.1 (tests only; `trunk serve`
// or any static server for people). `port` 0 picks a free one; the site test reopens the same
// port (the same origin) after going offline. `hits` counts the requests answered. `headers` go
// on every answer (the TensorFlow.js benchmark's threads need cross-origin isolation).
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.wasm': 'application/wasm', '.css': 'text/css', '.json': 'application/json',
  '.png': 'image/png', '.svg': 'image/svg+xml', '.gz': 'application/gzip',
  '.webmanifest': 'application/manifest+json',
};

// A chunked body with no length that goes on and on (bounded: 512 MiB or 60 s, then it ends):
// what a reader that reads everything before it counts never gets to the end of.
function endless(res) {
  res.writeHead(200, { 'content-type': 'application/octet-stream' });
  const chunk = Buffer.alloc(1 << 16);
  const start = Date.now();
  let sent = 0;
  const more = () => {
    if (res.destroyed || sent >= 512 * 2 ** 20 || Date.now() - start > 60_000) return res.end();
    sent += chunk.length;
    if (res.write(chunk)) setImmediate(more); else res.once('drain', more);
  };
  res.on('close', () => { sent = Infinity; });
  more();
}

export function serve(root, port = 0, headers = {}) {
  const stats = { hits: 0, urls: [] };
  const server = http.createServer((req, res) => {
    stats.hits += 1;
    stats.urls.push(req.url);
    const url = new URL(req.url, 'http://127.0.0.1');
    if (url.pathname === '/__endless') return endless(res);
    let file = path.join(root, decodeURIComponent(url.pathname));
    if (!file.startsWith(root)) { res.writeHead(403).end(); return; }
    if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, 'index.html');
    fs.readFile(file, (err, body) => {
      if (err) { res.writeHead(404).end('not found'); return; }
      res.writeHead(200, { ...headers, 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' });
      res.end(body);
    });
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => {
    resolve({
      url: `http://127.0.0.1:${server.address().port}/`,
      port: server.address().port,
      stats,
      close: () => { server.close(); server.closeAllConnections(); },
    });
  }));
}
