#!/usr/bin/env python3
"""token-server.py — the docker distribution token service, for tests only.

GET /token?service=S&scope=repository:NAME:ACTIONS[&scope=...] with HTTP basic
auth USER:PASSWORD answers {"token", "access_token", "expires_in",
"issued_at"}: a JWT (RS256, signed with `openssl dgst`, its certificate in the
x5c header) granting the scopes asked for. Wrong or missing credentials: 401.
Every request is one line in --log ("ok SCOPE" / "denied"), so tests can count
token fetches. A real token service (an identity provider) is the one part of
a registry deployment that cannot run here; this is its smallest stand-in.

usage: token-server.py --port-file F --key KEY.pem --cert CERT.pem --issuer I
                       --service S --user U --password P --log LOG [--expires N]
"""
import argparse
import base64
import http.server
import json
import os
import secrets
import socketserver
import subprocess
import time
import urllib.parse


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def main():
    ap = argparse.ArgumentParser()
    for a in ("port-file", "key", "cert", "issuer", "service", "user", "password", "log"):
        ap.add_argument("--" + a, required=True)
    ap.add_argument("--expires", type=int, default=300)
    o = ap.parse_args()
    der = subprocess.run(["openssl", "x509", "-in", o.cert, "-outform", "DER"],
                         check=True, capture_output=True).stdout
    want_auth = "Basic " + base64.b64encode(f"{o.user}:{o.password}".encode()).decode()

    def sign(claims):
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        signing_input = (b64url(json.dumps(header).encode()) + "." +
                         b64url(json.dumps(claims).encode())).encode()
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", o.key], input=signing_input,
                             check=True, capture_output=True).stdout
        return signing_input.decode() + "." + b64url(sig)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            q = urllib.parse.parse_qs(url.query)
            with open(o.log, "a") as log:
                if url.path != "/token" or self.headers.get("Authorization") != want_auth:
                    log.write("denied\n")
                    self.reply(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                    return
                access = []
                for scope in q.get("scope", []):
                    for one in scope.split(" "):
                        parts = one.split(":")
                        if len(parts) >= 3 and parts[0] == "repository":
                            access.append({"type": "repository", "name": ":".join(parts[1:-1]),
                                           "actions": parts[-1].split(",")})
                log.write("ok " + " ".join(q.get("scope", [])) + "\n")
            now = int(time.time())
            token = sign({"iss": o.issuer, "sub": o.user, "aud": q.get("service", [o.service])[0],
                          "exp": now + o.expires, "nbf": now - 10, "iat": now,
                          "jti": secrets.token_hex(8), "access": access})
            self.reply(200, {"token": token, "access_token": token, "expires_in": o.expires,
                             "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))})

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    srv = Server(("127.0.0.1", 0), Handler)
    tmp = o.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, o.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
