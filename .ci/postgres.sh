#!/usr/bin/env bash
# Starts a throwaway PostgreSQL 15 cluster on a free loopback port and prints
# `export` lines: its URL (REACH_TEST_DATABASE_URL) and its data directory
# (REACH_TEST_PG_DATA, for `pg_ctl -D ... stop`). initdb refuses to run as
# root, so the cluster belongs to the `postgres` user and lives in a fresh
# temp directory. fsync is off: the cluster is thrown away after the run.
set -euo pipefail
BIN=/usr/lib/postgresql/15/bin
[ -x "$BIN/initdb" ] || { echo "PostgreSQL 15 is not installed at $BIN" >&2; exit 1; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DIR=$(mktemp -d /tmp/reach-pg.XXXXXX)
RUN=(bash -c)
if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$DIR"
    RUN=(su postgres -s /bin/bash -c)
fi
"${RUN[@]}" "$BIN/initdb -D $DIR/data --auth=trust --username=postgres --encoding=UTF8 --no-sync >$DIR/initdb.log 2>&1" \
    || { cat "$DIR/initdb.log" >&2; exit 1; }
"${RUN[@]}" "$BIN/pg_ctl -D $DIR/data -l $DIR/server.log -w -o '-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=400 -c fsync=off' start >/dev/null" \
    || { cat "$DIR/server.log" >&2; exit 1; }
echo "postgres: $DIR/data on port $PORT (stop: $BIN/pg_ctl -D $DIR/data stop)" >&2
echo "export REACH_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$PORT/postgres"
echo "export REACH_TEST_PG_DATA=$DIR/data"
