#!/usr/bin/env bash
# Test prerequisites outside the venv: Debian's chromium (browser tests) and the local Redis and
# PostgreSQL servers (started if they are installed but down). Idempotent; safe to run often.
set -u
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Debian's chromium for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; browser tests will fail in CI"
  else
    echo "warning: chromium is missing (sudo apt-get install chromium); browser tests will be skipped"
  fi
fi
if command -v redis-cli >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || echo "warning: could not start Redis"
fi
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  echo "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start \
      || echo "warning: could not start PostgreSQL"
  fi
fi
for _ in $(seq 1 30); do
  ok=1
  command -v redis-cli >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && ok=0
  command -v pg_isready >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -q && ok=0
  [ $ok = 1 ] && break
  sleep 1
done
exit 0
