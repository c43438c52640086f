#!/bin/sh
# Create the TLS material of the stack's optional TLS (compose/tls.yaml), once: a private CA
# and a certificate for Redis signed by it, in DIR/tls (default: ./secrets/tls, git-ignored).
# Existing files are kept; delete the folder to make new ones. Modes as in make-secrets.sh:
# the folder 0700, the CA key 0600 (never mounted anywhere), the rest 0644.
set -eu

dir=${1:-secrets}/tls
days=${TLS_DAYS:-3650}
if [ -s "$dir/redis.crt" ] && [ -s "$dir/ca.crt" ]; then
    exit 0
fi
umask 077
mkdir -p "$dir"
chmod 0700 "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$work/ca.key" -out "$work/ca.crt" -days "$days" \
    -subj "/CN=celery-config-sync Redis CA" 2>/dev/null
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$work/redis.key" -out "$work/redis.csr" -subj "/CN=redis" 2>/dev/null
# The names the services use for Redis: its compose service names, and loopback.
printf 'subjectAltName=DNS:redis,DNS:redis-dev,DNS:localhost,IP:127.0.0.1\n' > "$work/ext"
openssl x509 -req -in "$work/redis.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
    -CAcreateserial -out "$work/redis.crt" -days "$days" -extfile "$work/ext" 2>/dev/null
chmod 0644 "$work/ca.crt" "$work/redis.crt" "$work/redis.key"
mv "$work/ca.key" "$work/ca.crt" "$work/redis.key" "$work/redis.crt" "$dir/"
echo "make-tls: created a CA and a Redis certificate in $dir"
