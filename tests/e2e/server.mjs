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

export function serve(root, port = 0, headers = {}) {
  const stats = { hits: 0, urls: [] };
  const server = http.createServer((req, res) => {
    stats.hits += 1;
    stats.urls.push(req.url);
    const url = new URL(req.url, 'http://127.0.0.1');
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
