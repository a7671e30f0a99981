#!/usr/bin/env bash
# Starts a real S3 server (s3s-fs, which checks request signatures) on a free
# loopback port with a fresh data directory and one bucket, and prints the
# environment a client needs as `export` lines. Installs s3s-fs first if it
# is missing. The server runs until its process (pid printed on stderr) is
# killed.
set -euo pipefail
if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/s3s-fs" ]; then
    echo "installing s3s-fs (a few minutes, once)" >&2
    cargo install s3s-fs@0.14.1 --features binary --locked >&2
fi
S3S=$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DIR=$(mktemp -d /tmp/reach-s3.XXXXXX)
BUCKET=reach-test
mkdir -p "$DIR/data/$BUCKET"      # s3s-fs keeps each bucket as a directory
KEY=reachtest
SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
"$S3S" --host 127.0.0.1 --port "$PORT" --access-key "$KEY" --secret-key "$SECRET" "$DIR/data" \
    >"$DIR/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    sleep 0.1
done
kill -0 "$PID" 2>/dev/null || { cat "$DIR/server.log" >&2; exit 1; }
echo "s3s-fs: pid $PID on port $PORT, data in $DIR/data" >&2
cat <<VARS
export AWS_ENDPOINT=http://127.0.0.1:$PORT
export AWS_ALLOW_HTTP=true
export AWS_ACCESS_KEY_ID=$KEY
export AWS_SECRET_ACCESS_KEY=$SECRET
export AWS_REGION=us-east-1
export REACH_TEST_S3_URL=s3://$BUCKET
export REACH_TEST_S3_PID=$PID
VARS
