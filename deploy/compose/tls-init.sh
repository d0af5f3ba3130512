#!/bin/sh
# One-shot set-up of the compose stack's TLS material on the shared `tls` volume (idempotent):
# a private CA and a server certificate for the hosts kafka and redis (scripts/make-certs), the
# broker's PKCS12 keystore with its password file, and the broker's JAAS file for SASL/SCRAM.
# The volume is the demo's; in production mount each service's own key from your secret store.
set -eu
dir=${1:-/tls}
KEY_MODE=644 /usr/local/bin/make-certs "$dir" kafka redis localhost 127.0.0.1
umask 022
[ -s "$dir/keystore-password" ] || openssl rand -hex 24 > "$dir/keystore-password"
openssl pkcs12 -export -name kafka -in "$dir/server.pem" -inkey "$dir/server.key" \
  -passout "file:$dir/keystore-password" -out "$dir/server.p12"
printf 'KafkaServer {\n  org.apache.kafka.common.security.scram.ScramLoginModule required;\n};\n' \
  > "$dir/kafka_server_jaas.conf"
chmod 644 "$dir/server.p12" "$dir/keystore-password" "$dir/kafka_server_jaas.conf"
