#!/usr/bin/env bash
# A private certificate authority and one server certificate it signs, for the secured scale-out stack
# (README: Scaling out). Where your organisation runs a CA, have it sign the servers' certificates instead.
#
#   deploy/make-certs.sh DIR NAME [NAME ...]      e.g. deploy/make-certs.sh /etc/blipexp mlflow.internal db.internal
#
# NAMEs are the host names (or IP addresses) clients use to reach the servers: a client checks the name it
# connected to against them (sslmode=verify-full, and MLflow's client always). Writes into DIR:
#   ca.pem       the CA certificate: copy it to every worker and viewer (MLFLOW_TRACKING_SERVER_CERT_PATH,
#                sslrootcert=); it holds no secret
#   ca.key       the CA's private key: keep it offline; it signs further certificates (run again with the same DIR)
#   server.pem   the server certificate, for the MLflow server and PostgreSQL (one certificate, all NAMEs)
#   server.key   its private key (mode 600)
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 DIR NAME [NAME ...]   (NAME: a host name or IP address clients use to reach the servers)" >&2
  exit 2
fi
command -v openssl >/dev/null || { echo "error: openssl is not installed (Debian: apt-get install openssl)" >&2; exit 2; }
dir=$1; shift
mkdir -p "$dir"
umask 077
days=${CERT_DAYS:-825}

san=""
for name in "$@"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san+="IP:$name,"; else san+="DNS:$name,"; fi
done
san=${san%,}

if [ ! -f "$dir/ca.key" ]; then
  openssl req -x509 -new -newkey rsa:3072 -nodes -sha256 -days "$days" -subj "/CN=blipexp private CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null
fi
extensions=$(mktemp)
trap 'rm -f "$extensions" "$dir/server.csr"' EXIT
cat > "$extensions" <<END
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
END
openssl req -new -newkey rsa:3072 -nodes -sha256 -subj "/CN=$1" -keyout "$dir/server.key" -out "$dir/server.csr" \
  2>/dev/null
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -sha256 \
  -days "$days" -extfile "$extensions" -out "$dir/server.pem" 2>/dev/null
chmod 644 "$dir/ca.pem" "$dir/server.pem"
echo "CA certificate $dir/ca.pem (give it to every client); server certificate $dir/server.pem for: ${san//,/ }"
