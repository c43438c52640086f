#!/bin/sh
# Create the secrets of the stack, once: one password file per Redis user (images/redis/
# roles.acl), and the API's bearer token (api-token: CELERY_CONFIG_API_TOKEN_FILE, README "The
# API on a network"), in DIR (default: ./secrets, git-ignored). An existing file is kept, so running it
# again changes nothing; to rotate a password, replace its file (README, "Rotate a password").
#
# Modes: the directory is 0700, so that no other user of the host can reach the files. The
# files themselves are 0644 because compose (outside Swarm) bind-mounts a file secret with its
# host owner and mode, ignoring the uid/gid/mode it is given (docker/compose#9648), and each
# service reads its password as its own unprivileged user (redis 999, app 10001).
set -eu

dir=${1:-secrets}
umask 077
mkdir -p "$dir"
chmod 0700 "$dir"
for name in redis-health redis-seeder redis-worker redis-api redis-admin api-token; do
    file=$dir/$name
    [ -s "$file" ] && continue
    # 32 random bytes, URL-safe base64 (no padding): usable in a URL and in a file alike.
    head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' > "$file.new"
    chmod 0644 "$file.new"
    mv "$file.new" "$file"
    echo "make-secrets: created $file"
done
