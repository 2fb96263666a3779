#!/usr/bin/env python3
"""benches/world.py: a large DNS namespace of its own, for the workload and memory benches.

The lab (deploy/lab) serves ~150 names: right for correctness, far too small for an ISP's
traffic. This builds a separate world with its own signed root, served by NSD on
127.54.x.y, that resolvers iterate from its root hints and validate with its trust anchor:

  .                 127.54.0.1   signed; delegates zipf., mem. and smem.
  zipf.             127.54.0.2   signed; delegates ZONES leaf zones zNNNNN.zipf.
  zNNNNN.zipf.      127.54.1.1   NAMES names each (A; every third also AAAA), an MX at
                                 the apex; SIGNED_PCT % of them signed (NSEC, ECDSA P-256)
                    127.54.1.2   DOT_PCT % of the leaf zones are delegated to ns2.zipf.
                                 instead, which also serves DoT on port 853 and signals it:
                                 a secure `_dns.ns2.zipf.` SVCB (alpn=dot) and a TLSA record
                                 (DANE-EE) for its certificate, in the signed zipf.
  mem.              127.54.2.1   MEM_NAMES names nK.mem., one A each (unsigned)
  smem.             127.54.2.1   the same names under a signed zone

Every TTL is TTL_S (default 86400): within a run nothing expires, so the hit ratio of a
stream is set by how many of its queries are first occurrences (printed by `stream`).

  benches/world.py build DIR [--zones 2000] [--names 100] [--signed-pct 40] [--dot-pct 10]
                             [--mem-names 0]
  benches/world.py up DIR        # adds the addresses to lo, starts NSD (root only)
  benches/world.py down DIR
  benches/world.py stream DIR OUT --count N [--warm W] [--parts K] [--exponent 0.9] [--seed 1]
  benches/world.py mem-names DIR OUT [--zone mem.]

DIR also looks like a lab directory to deploy/lab/peer (root.hints, trust-anchor.ds,
run/, logs/), so `deploy/lab/peer unbound up DIR PORT` iterates over this world.
"""

import argparse
import hashlib
import bisect
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ALG = "ECDSAP256SHA256"
ROOT_ADDR, TLD_ADDR, LEAF_ADDR, MEM_ADDR = "127.54.0.1", "127.54.0.2", "127.54.1.1", "127.54.2.1"
DOT_ADDR = "127.54.1.2"  # ns2.zipf.: the leaf zones that signal DoT
SERVERS = {  # NSD process name: its address
    "root": ROOT_ADDR,
    "tld": TLD_ADDR,
    "leaf": LEAF_ADDR,
    "leafdot": DOT_ADDR,
    "mem": MEM_ADDR,
}


def die(msg):
    print(f"world.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def run(*cmd, cwd=None):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        die(f"{' '.join(map(str, cmd))} failed: {r.stderr.strip()}")
    return r.stdout


def keygen(zone, keydir, ksk):
    keydir.mkdir(parents=True, exist_ok=True)
    flags = ["-k"] if ksk else []
    return keydir / run("ldns-keygen", "-a", ALG, *flags, "-r", "/dev/urandom", zone, cwd=keydir).strip()


def sign(zone, path, keydir, window):
    """Signs `path` into path.signed with a fresh KSK and ZSK; returns the DS lines."""
    ksk, zsk = keygen(zone, keydir / "ksk", True), keygen(zone, keydir / "zsk", False)
    inception, expiration = window
    run("ldns-signzone", "-i", inception, "-e", expiration, "-o", zone, "-f", f"{path}.signed",
        str(path), str(ksk), str(zsk))
    return run("ldns-key2ds", "-n", "-2", f"{ksk}.key")


def soa(zone, ns, ttl):
    rname = "hostmaster." + (zone if zone != "." else "root.")
    return (f"$TTL {ttl}\n{zone} {ttl} IN SOA {ns} {rname} 1 3600 600 604800 {ttl}\n"
            f"{zone} {ttl} IN NS {ns}\n")


def leaf_zone(zone, names, ttl, index):
    """One leaf zone's text: names w0..w{names-1}, AAAA on every third, MX at the apex."""
    lines = [soa(zone, "ns1.zipf.", ttl), f"{zone} {ttl} IN MX 10 mail.{zone}\n",
             f"mail.{zone} {ttl} IN A 10.{index >> 8 & 255}.{index & 255}.250\n"]
    for k in range(names):
        lines.append(f"w{k}.{zone} {ttl} IN A 10.{index >> 8 & 255}.{index & 255}.{k & 255}\n")
        if k % 3 == 0:
            lines.append(f"w{k}.{zone} {ttl} IN AAAA 2001:db8:{index:x}::{k:x}\n")
    return "".join(lines)


def leaf_names(zones):
    return [f"z{i:05d}.zipf." for i in range(zones)]


def is_signed(i, pct):
    return (i * 37 % 100) < pct  # spread across the index, not the first pct zones


def is_dot(i, pct):
    return (i * 53 % 100) < pct  # another spread: DoT zones are signed and unsigned alike


def dot_cert(d):
    """A key and self-signed certificate for ns2.zipf. (P-256) in DIR/tls; returns the
    TLSA 3 1 1 data (SHA-256 of the public key), which is how resolvers authenticate it."""
    tls = d / "tls"
    tls.mkdir()
    key, pem = tls / "ns2.key", tls / "ns2.pem"
    run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    run("openssl", "req", "-new", "-x509", "-key", str(key), "-out", str(pem), "-days", "365",
        "-subj", "/CN=ns2.zipf", "-addext", f"subjectAltName=DNS:ns2.zipf,IP:{DOT_ADDR}")
    spki = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
                          capture_output=True, check=True).stdout
    return hashlib.sha256(spki).hexdigest()


def build(a):
    d = Path(a.dir).resolve()
    if d.exists():
        shutil.rmtree(d)
    zones_dir, keys = d / "zones", d / "keys"
    for sub in ("zones", "keys", "run", "logs", "conf"):
        (d / sub).mkdir(parents=True)
    now = int(time.time())
    window = (time.strftime("%Y%m%d%H%M%S", time.gmtime(now - 3600)),
              time.strftime("%Y%m%d%H%M%S", time.gmtime(now + 90 * 86400)))
    ttl = a.ttl
    t0 = time.monotonic()

    # Leaf zones, signed ones in parallel (ldns-signzone is one process per zone).
    leaves = leaf_names(a.zones)
    ds = {}

    def make_leaf(i):
        z = leaves[i]
        p = zones_dir / f"{z}zone"
        p.write_text(leaf_zone(z, a.names, ttl, i))
        if is_signed(i, a.signed_pct):
            ds[z] = sign(z, p, keys / z, window)
            return f"{p}.signed"
        return str(p)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        leaf_files = list(ex.map(make_leaf, range(a.zones)))

    # mem. and smem.: MEM_NAMES names each, one A record each.
    mem_files = {}
    if a.mem_names:
        for z, signed in (("mem.", False), ("smem.", True)):
            p = zones_dir / f"{z}zone"
            with p.open("w") as f:
                f.write(soa(z, f"ns1.{z}", ttl))
                f.write(f"ns1.{z} {ttl} IN A {MEM_ADDR}\n")
                for k in range(a.mem_names):
                    f.write(f"n{k}.{z} {ttl} IN A 10.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}\n")
            if signed:
                ds[z] = sign(z, p, keys / z, window)
                mem_files[z] = f"{p}.signed"
            else:
                mem_files[z] = str(p)

    # zipf.: delegations to the leaves (ns1, or ns2 for the DoT share; glue in zipf.), DS
    # for the signed, and ns2's DoT signal with the TLSA record of its certificate.
    tlsa = dot_cert(d)
    tld = zones_dir / "zipf.zone"
    with tld.open("w") as f:
        f.write(soa("zipf.", "ns.zipf.", ttl))
        f.write(f"ns.zipf. {ttl} IN A {TLD_ADDR}\nns1.zipf. {ttl} IN A {LEAF_ADDR}\n")
        f.write(f"ns2.zipf. {ttl} IN A {DOT_ADDR}\n")
        f.write(f"_dns.ns2.zipf. {ttl} IN SVCB 1 ns2.zipf. alpn=dot\n")
        f.write(f"_853._tcp.ns2.zipf. {ttl} IN TLSA 3 1 1 {tlsa}\n")
        for i, z in enumerate(leaves):
            f.write(f"{z} {ttl} IN NS {'ns2' if is_dot(i, a.dot_pct) else 'ns1'}.zipf.\n")
            if z in ds:
                f.write(ds[z])
    ds["zipf."] = sign("zipf.", tld, keys / "zipf.", window)

    # The root.
    root = zones_dir / "root.zone"
    with root.open("w") as f:
        f.write(soa(".", "a.root.", ttl))
        f.write(f"a.root. {ttl} IN A {ROOT_ADDR}\n")
        f.write(f"zipf. {ttl} IN NS ns.zipf.\nns.zipf. {ttl} IN A {TLD_ADDR}\n")
        for z in mem_files:
            f.write(f"{z} {ttl} IN NS ns1.{z}\nns1.{z} {ttl} IN A {MEM_ADDR}\n")
            if z in ds:
                f.write(ds[z])
    root_ds = sign(".", root, keys / "root", window)
    (d / "trust-anchor.ds").write_text(root_ds)
    (d / "root.hints").write_text(f". 3600000 NS a.root.\na.root. 3600000 A {ROOT_ADDR}\n")

    served = {
        "root": [(".", f"{root}.signed")],
        "tld": [("zipf.", f"{tld}.signed")],
        "leaf": [(z, f) for i, (z, f) in enumerate(zip(leaves, leaf_files)) if not is_dot(i, a.dot_pct)],
        "leafdot": [(z, f) for i, (z, f) in enumerate(zip(leaves, leaf_files)) if is_dot(i, a.dot_pct)],
        "mem": list(mem_files.items()),
    }
    for name, zl in served.items():
        if zl:
            write_nsd_conf(d, name, SERVERS[name], zl)
    (d / ".adox-lab").write_text("a benches/world.py world (deploy/lab/peer accepts it)\n")
    (d / "world.env").write_text(f"zones={a.zones}\nnames={a.names}\nsigned_pct={a.signed_pct}\n"
                                 f"dot_pct={a.dot_pct}\n"
                                 f"mem_names={a.mem_names}\nttl={ttl}\n")
    signed = sum(1 for z in leaves if z in ds)
    dot = sum(1 for i in range(a.zones) if is_dot(i, a.dot_pct))
    print(f"world.py: built {d}: {a.zones} leaf zones ({signed} signed, {dot} on ns2 with DoT), "
          f"{a.zones * a.names} leaf names, mem_names={a.mem_names} in {time.monotonic() - t0:.0f} s",
          file=sys.stderr)


def write_nsd_conf(d, name, addr, zones):
    work = d / "run" / name
    work.mkdir(parents=True, exist_ok=True)
    # ns2 also serves DoT (NSD serves TLS only on an address listed with @853).
    tls = (f"""    ip-address: {addr}@853
    tls-port: 853
    tls-service-key: "{d}/tls/ns2.key"
    tls-service-pem: "{d}/tls/ns2.pem"
""" if name == "leafdot" else "")
    text = f"""server:
    ip-address: {addr}
{tls}    port: 53
    do-ip4: yes
    do-ip6: no
    server-count: 1
    username: ""
    chroot: ""
    database: ""
    zonefiles-write: 0
    zonelistfile: "{work}/zone.list"
    xfrdfile: "{work}/xfrd.state"
    xfrdir: "{work}"
    pidfile: "{d}/run/{name}.pid"
    logfile: "{d}/logs/{name}.log"
    verbosity: 1
    hide-version: yes
    refuse-any: no
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
"""
    text += "".join(f'zone:\n    name: "{z}"\n    zonefile: "{f}"\n' for z, f in zones)
    conf = d / "conf" / f"{name}.conf"
    conf.write_text(text)
    run("nsd-checkconf", str(conf))


def lo_addrs():
    return run("ip", "-4", "-o", "addr", "show", "dev", "lo")


def up(a):
    d = Path(a.dir).resolve()
    if not (d / "world.env").exists():
        die(f"no world in {d} (run: benches/world.py build {d})")
    down(a, quiet=True)
    have = lo_addrs()
    added = []
    for name, addr in SERVERS.items():
        if not (d / "conf" / f"{name}.conf").exists():
            continue
        if f" {addr}/" not in have:
            run("ip", "addr", "add", f"{addr}/32", "dev", "lo")
            added.append(addr)
        subprocess.Popen(["nsd", "-d", "-c", str(d / "conf" / f"{name}.conf")], stdin=subprocess.DEVNULL,
                         stdout=open(d / "logs" / f"{name}.out", "a"), stderr=subprocess.STDOUT,
                         start_new_session=True)
    (d / "run" / "addrs").write_text("".join(f"{x}\n" for x in added))
    # Up when every server answers its first zone's SOA (the big zones take seconds to load).
    deadline = time.monotonic() + 600
    for name, addr in SERVERS.items():
        conf = d / "conf" / f"{name}.conf"
        if not conf.exists():
            continue
        zone = next(line.split('"')[1] for line in conf.read_text().splitlines() if line.strip().startswith("name:"))
        while True:
            r = subprocess.run(["dig", f"@{addr}", "+time=1", "+tries=1", "+norec", "+short", zone, "SOA"],
                               capture_output=True, text=True)
            if r.returncode == 0 and r.stdout.strip():
                break
            if time.monotonic() > deadline:
                down(a, quiet=True)
                die(f"{name} on {addr} does not answer {zone} SOA (logs in {d}/logs)")
            time.sleep(0.5)
    print(f"world.py: up in {d}", file=sys.stderr)


def down(a, quiet=False):
    d = Path(a.dir).resolve()
    for name in SERVERS:
        pidf = d / "run" / f"{name}.pid"
        if pidf.exists():
            try:
                pid = int(pidf.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.1)
            except (ValueError, ProcessLookupError):
                pass
            pidf.unlink(missing_ok=True)
    addrs = d / "run" / "addrs"
    if addrs.exists():
        for x in addrs.read_text().split():
            subprocess.run(["ip", "addr", "del", f"{x}/32", "dev", "lo"], capture_output=True)
        addrs.unlink()
    if not quiet:
        print(f"world.py: down in {d}", file=sys.stderr)


def world_env(d):
    return {k: int(v) for k, v in (line.split("=") for line in (d / "world.env").read_text().split())}


def stream(a):
    """Query files for dnsperf and adox-load, OUT.warm (WARM queries, if given) then
    OUT.1 .. OUT.PARTS (COUNT each): one stream drawn with Zipf popularity
    (rank r has weight 1/r^s) over every query of the world's zipf. namespace, the ranks
    shuffled (seeded) so popularity does not follow zone order. The namespace: each name's
    A, AAAA on every name (NODATA on two thirds: real clients ask it anyway), each zone's
    MX, and a tenth as many names that do not exist (NXDOMAIN)."""
    d = Path(a.dir).resolve()
    env = world_env(d)
    universe = []
    for z in leaf_names(env["zones"]):
        universe.append(f"{z} MX")
        for k in range(env["names"]):
            universe.append(f"w{k}.{z} A")
            universe.append(f"w{k}.{z} AAAA")
        for k in range(max(1, env["names"] // 10)):
            universe.append(f"nx{k}.{z} A")
    rng = random.Random(a.seed)
    rng.shuffle(universe)
    cum = list(itertools.accumulate(1.0 / (r**a.exponent) for r in range(1, len(universe) + 1)))
    total = cum[-1]
    seen = set()
    files = ([("warm", a.warm)] if a.warm else []) + [(str(k), a.count) for k in range(1, a.parts + 1)]
    for suffix, count in files:
        first = 0
        with open(f"{a.out}.{suffix}", "w") as f:
            for _ in range(count):
                i = bisect.bisect_left(cum, rng.random() * total)
                if i not in seen:
                    seen.add(i)
                    first += 1
                f.write(universe[i] + "\n")
        print(f"world.py: {a.out}.{suffix}: {count} queries (exponent {a.exponent}, over {len(universe)}), "
              f"{first} first seen: a cache that keeps everything answers {100 * (1 - first / count):.1f} % of them",
              file=sys.stderr)


def mem_names(a):
    d = Path(a.dir).resolve()
    n = world_env(d)["mem_names"]
    if not n:
        die("this world has no mem. zone (build with --mem-names N)")
    with open(a.out, "w") as f:
        for k in range(n):
            f.write(f"n{k}.{a.zone} A\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("dir")
    b.add_argument("--zones", type=int, default=2000)
    b.add_argument("--names", type=int, default=100)
    b.add_argument("--signed-pct", type=int, default=40)
    b.add_argument("--dot-pct", type=int, default=10)
    b.add_argument("--mem-names", type=int, default=0)
    b.add_argument("--ttl", type=int, default=86400)
    for c in ("up", "down"):
        sub.add_parser(c).add_argument("dir")
    s = sub.add_parser("stream")
    s.add_argument("dir")
    s.add_argument("out")
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--exponent", type=float, default=0.9)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--warm", type=int, default=0)
    s.add_argument("--parts", type=int, default=1)
    m = sub.add_parser("mem-names")
    m.add_argument("dir")
    m.add_argument("out")
    m.add_argument("--zone", default="mem.", choices=["mem.", "smem."])
    a = p.parse_args()
    if a.cmd == "build":
        if not (0 < a.zones <= 99999 and 0 < a.names <= 100000 and 0 <= a.signed_pct <= 100
                and 0 <= a.dot_pct <= 100 and a.mem_names >= 0):
            die("--zones 1..99999, --names 1..100000, --signed-pct 0..100, --dot-pct 0..100, --mem-names >= 0")
        build(a)
    elif a.cmd == "up":
        up(a)
    elif a.cmd == "down":
        down(a)
    elif a.cmd == "stream":
        stream(a)
    else:
        mem_names(a)


if __name__ == "__main__":
    main()
