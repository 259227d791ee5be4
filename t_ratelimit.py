# MARKETPLACE_TRUSTED_PROXIES=127.0.0.1 MARKETPLACE_AUTH_RATE_LIMIT=3 on port 18604.
# Each case: 5 wrong-password sign-ins whose X-Forwarded-For lines vary per request as given;
# expected: the 4th and 5th are 429 whenever the varying part is the client's own (not the proxy's).
import http.client, json, sys, itertools
PORT = 18604
def post(lines, path="/v1/auth/token"):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    c.putrequest("POST", path)
    body = json.dumps({"email": "nobody@example.com", "password": "wrong password 1"}).encode()
    c.putheader("Content-Type", "application/json"); c.putheader("Content-Length", str(len(body)))
    for l in lines: c.putheader("X-Forwarded-For", l)
    c.endheaders(); c.send(body); r = c.getresponse(); r.read(); return r.status
cases = {
 "same v4": lambda i: ["198.51.100.7"],
 "v4 with port varying": lambda i: [f"198.51.100.8:{1000+i}"],
 "v6 same /64, host varies": lambda i: [f"2001:db8:1:2::{i+1}"],
 "v6 bracket+port": lambda i: [f"[2001:db8:1:3::{i+1}]:{443+i}"],
 "v6 bracket only, mixed case": lambda i: [f"[2001:DB8:1:4::{i+1:x}]" if i % 2 else f"[2001:db8:1:4::{i+1:x}]"],
 "v4-mapped vs v4 alternate": lambda i: ["::ffff:198.51.100.9" if i % 2 else "198.51.100.9"],
 "client line varies, proxy line fixed": lambda i: [f"203.0.113.{i}", "198.51.100.10"],
 "client part varies, proxy appended same line": lambda i: [f"203.0.113.{i}, 198.51.100.11"],
 "proxy appends unparseable hop 'unknown'": lambda i: [f"203.0.113.{50+i}, unknown"],
 "client part has obs-text byte (line dropped)": lambda i: [f"203.0.113.{60+i}\u00e9, 198.51.100.12"],
 "v6 different /64 each": lambda i: [f"2001:db8:9:{i}::1"],
}
for name, f in cases.items():
    print(f"{name:48}", [post(f(i)) for i in range(5)])
