#!/usr/bin/env bash
# The static site: a release build of the page, its worker and the sample set in one folder that
# any static server can host, working offline after the first visit (a service worker caches
# every file; a new build replaces the old cache).
#   scripts/build-site.sh [OUT]              release build into OUT (default site/)
#   scripts/build-site.sh --from DIST [OUT]  package an existing `trunk build` output instead
#                                            (the browser tests package their dev build)
# Files in OUT that an earlier build did not write (a teacher's lessons/) are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

from=
if [ "${1:-}" = --from ]; then from=$2; shift 2; fi
out=${1:-site}
mkdir -p "$out"
out=$(cd "$out" && pwd)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
if [ -z "$from" ]; then
  scripts/install-tools.sh web
  echo "==> trunk build --release (several minutes on 2 cores)"
  trunk build --release --locked --dist "$stage" >/dev/null
else
  cp -R "$from"/. "$stage"/
fi
[ -f "$stage/index.html" ] && [ -f "$stage/worker_bg.wasm" ] || {
  echo "no trunk build in ${from:-the release build}: index.html or worker_bg.wasm missing" >&2
  exit 1
}

# The service worker: this build's files and a version that changes with any of their bytes.
cp www/sw.js "$stage/sw.js"
files=$(cd "$stage" && find . -type f ! -name sw.js | sed 's|^\./||' | LC_ALL=C sort)
version=$(cd "$stage" && printf '%s\n' "$files" | xargs sha256sum | sha256sum | cut -c1-16)
list=$( (echo './'; printf '%s\n' "$files") | sed 's/.*/"&"/' | paste -sd, -)
sed -i -e "s|__VERSION__|$version|" -e "s|__FILES__|[$list]|" "$stage/sw.js"
# Registered only by the site's page (`trunk serve` has no service worker to go stale).
# register() alone does not look for a new build while the old one is installed: update() does
# (offline it fails quietly and the cached build runs).
register="<script>if ('serviceWorker' in navigator) navigator.serviceWorker.register('./sw.js')"
register+=".then((r) => { r.update().catch(() => {}); return navigator.serviceWorker.ready; }).then(() => { document.documentElement.dataset.offline = '$version'; })"
register+=".catch((e) => console.warn('offline cache unavailable:', e));</script>"
sed -i "s|</head>|$register</head>|" "$stage/index.html"

# Replace the last build's files (listed in .site-files), keep everything else in OUT.
if [ -f "$out/.site-files" ]; then
  (cd "$out" && xargs -d '\n' rm -f < .site-files)
fi
cp -R "$stage"/. "$out"/
(cd "$stage" && find . -type f | sed 's|^\./||' | LC_ALL=C sort) > "$out/.site-files"

# What a first visit downloads, raw and gzipped (what a static server with compression sends).
mb() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1e6 }'; }
kb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e3 }'; }
size() { printf '%10s kB %10s kB  %s\n' "$(kb "$(stat -c %s "$1")")" "$(kb "$(gzip -9 -c "$1" | wc -c)")" "$2"; }
echo "==> $out (version $version)"
echo "          raw          gzip  file"
code=0
for f in index.html app.js app_bg.wasm worker.js worker_loader.js worker_bg.wasm style.css sw.js; do
  [ -f "$out/$f" ] || continue
  size "$out/$f" "$f"
  code=$((code + $(gzip -9 -c "$out/$f" | wc -c)))
done
sample=$(find "$out/sample" -type f -exec cat {} + | gzip -9 -c | wc -c)
echo "  page + worker: $(mb $code) MB gzipped; with the sample set: $(mb $((code + sample))) MB"
cat <<EOF
Serve it with any static server, e.g.:
  cd $out && python3 -m http.server 8000
then open http://127.0.0.1:8000/ (localhost or https: a service worker needs a secure origin).
EOF
